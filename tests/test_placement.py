"""Work crossing peers: tasks placed by bids, actors placed once and called from anywhere,
dependency chains across peers, nested tasks, and refs owned by other peers.

Every test starts real ``peer up`` daemons on loopback (see ``peers.py``) and runs its driver as
a separate process attached to one of them, the way a user on that machine would.
"""

from __future__ import annotations

import json
from collections import Counter

from peers import Launcher, cluster, join_more, run_driver, start_driver, wait_for


TASKS_3000 = """
@ray.remote
def work(i):
    time.sleep(0.01)
    return ray.get_runtime_context().get_node_id()

ray.get([work.remote(i) for i in range(50)])  # workers warm
start = time.monotonic()
nodes = ray.get([work.remote(i) for i in range(3000)])
print(json.dumps({"wall": time.monotonic() - start, "nodes": nodes}))
"""


def test_3000_tasks_spread_over_three_peers_in_under_half_the_time(launcher: Launcher) -> None:
    (a,) = cluster(launcher, [("a", ["--num-cpus", "4"])])
    alone = run_driver(a, TASKS_3000)
    assert set(alone["nodes"]) == {a.peer_id}
    b, c = join_more(launcher, a, [("b", ["--num-cpus", "4"]), ("c", ["--num-cpus", "4"])])
    spread = run_driver(a, TASKS_3000)
    counts = Counter(spread["nodes"])
    print(f"alone: {alone['wall']:.2f} s; three peers: {spread['wall']:.2f} s; tasks per peer {dict(counts)}")
    for d in (a, b, c):
        assert counts[d.peer_id] >= 600, f"{d.name} ran {counts[d.peer_id]} of 3000: {dict(counts)}"
    assert spread["wall"] < 0.5 * alone["wall"], (alone["wall"], spread["wall"])
    status = a.status()
    assert status["tasks"]["stats"]["tasks_sent"] >= 1200, status["tasks"]["stats"]
    assert status["placement"]["remote"] == 0 and status["placement"]["placing"] == 0


def test_actor_lands_where_there_is_room_and_serves_ordered_calls_from_a_task_elsewhere(
    launcher: Launcher,
) -> None:
    a, b, c = cluster(launcher, [("a", ["--num-cpus", "1"]), ("b", ["--num-cpus", "2"]), ("c", ["--num-cpus", "1"])])
    blocker = """
    @ray.remote
    def hold(seconds):
        time.sleep(seconds)
        return ray.get_runtime_context().get_node_id()

    ref = hold.remote(60)
    print("holding", flush=True)
    print(json.dumps({"node": ray.get(ref)}), flush=True)
    """
    hold_c = start_driver(c, blocker)
    drivers = [hold_c]
    try:
        assert hold_c.stdout is not None
        assert hold_c.stdout.readline().strip() == "holding"
        wait_for(lambda: c.status()["resources"]["available"].get("CPU", 0) == 0, 20, "c is full")
        make = start_driver(
            a,
            """
            import sys

            @ray.remote
            def hold(seconds):
                time.sleep(seconds)

            blocker = hold.remote(60)
            print("holding", flush=True)
            sys.stdin.readline()  # the test saw a's only CPU taken

            @ray.remote
            class Accumulator:
                def __init__(self):
                    self.seen = []

                def add(self, i):
                    self.seen.append(i)
                    return (i, len(self.seen))

                def where(self):
                    return ray.get_runtime_context().get_node_id()

            acc = Accumulator.options(name="acc").remote()
            print(json.dumps({"host": ray.get(acc.where.remote())}), flush=True)
            sys.stdin.readline()  # keep the blocker until the test is done
            """,
        )
        drivers.append(make)
        assert make.stdout is not None and make.stdin is not None
        assert make.stdout.readline().strip() == "holding", make.communicate()
        wait_for(lambda: a.status()["resources"]["available"].get("CPU", 0) == 0, 20, "a is full")
        make.stdin.write("go\n")
        make.stdin.flush()
        made = json.loads(make.stdout.readline())
        assert made["host"] == b.peer_id, f"a and c were full, b was not: the actor is on {made['host']}"
        called = run_driver(
            c,
            """
            @ray.remote(num_cpus=0)
            def caller(n):
                handle = ray.get_actor("acc")
                refs = [handle.add.remote(i) for i in range(n)]
                return ray.get_runtime_context().get_node_id(), ray.get(refs)

            node, results = ray.get(caller.remote(1000))
            acc = ray.get_actor("acc")
            print(json.dumps({"node": node, "results": results, "host": ray.get(acc.where.remote())}))
            """,
        )
        assert called["node"] == c.peer_id, "the calling task ran on c"
        assert called["host"] == b.peer_id
        assert called["results"] == [[i, i + 1] for i in range(1000)], "calls ran in submission order"
    finally:
        for d in drivers:
            d.kill()
            d.communicate()  # reaps it and closes its pipes


def test_a_chain_of_200_dependent_tasks_across_three_peers_gives_the_serial_result(launcher: Launcher) -> None:
    peers = cluster(
        launcher,
        [(f"p{i}", ["--num-cpus", "1", "--resource", f"slot{i}=1"]) for i in range(3)],
    )
    out = run_driver(
        peers[0],
        """
        import asyncio

        @ray.remote(num_cpus=0)
        def step(acc, i):
            total, nodes = acc
            return total * 3 % 1000003 + i, nodes + [ray.get_runtime_context().get_node_id()]

        ref = ray.put((1, []))
        for i in range(200):
            ref = step.options(resources={f"slot{i % 3}": 1}).remote(ref, i)
        ready, _ = ray.wait([ref], num_returns=1, timeout=60)
        total, nodes = ray.get(ref)

        async def awaited():
            return await ref

        assert asyncio.run(awaited())[0] == total
        print(json.dumps({"total": total, "nodes": nodes, "ready": len(ready)}))
        """,
    )
    expected = 1
    for i in range(200):
        expected = expected * 3 % 1000003 + i
    assert out["total"] == expected
    assert out["ready"] == 1
    assert out["nodes"] == [peers[i % 3].peer_id for i in range(200)], "each step ran where its slot is"


def test_nested_tasks_and_refs_owned_by_another_peer(launcher: Launcher) -> None:
    a, b = cluster(launcher, [("a", ["--num-cpus", "1"]), ("b", ["--num-cpus", "2", "--resource", "far=1"])])
    out = run_driver(
        a,
        """
        @ray.remote
        def square(x):
            return x * x, ray.get_runtime_context().get_node_id()

        @ray.remote(resources={"far": 1})
        def fan_out(n):
            refs = [square.remote(i) for i in range(n)]
            values = ray.get(refs[: n // 2])  # nested get on b
            return ray.get_runtime_context().get_node_id(), values, refs[n // 2 :]

        node, first, later = ray.get(fan_out.remote(20))
        # `later` are refs owned by b: a asks b for their values.
        rest = ray.get(later)
        ready, not_ready = ray.wait(later, num_returns=len(later), timeout=30)
        print(json.dumps({"node": node, "values": [v for v, _ in first + rest], "ready": len(ready)}))
        """,
    )
    assert out["node"] == b.peer_id
    assert out["values"] == [i * i for i in range(20)]
    assert out["ready"] == 10
