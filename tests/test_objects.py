"""Objects moving between peers' stores: pulled in checked chunks into the puller's shared
memory (read there without a copy), shared between peers pulling the same object at once, and
completed from another copy when the source dies mid-transfer.

Every test starts real ``peer up`` daemons on loopback (see ``peers.py``); drivers run as
separate processes attached to one of them.
"""

from __future__ import annotations

import json
import socket
import time

from conftest import peer_cli
from peers import Daemon, Launcher, cluster, read_line, run_driver, start_driver, wait_for

MB = 1_000_000
STORE = 320 * 1024 * 1024  # room for one 200 MB object and some more per peer

# A 200 MB int64 array the same on every peer that builds it, and its digest.
MAKE_200MB = """
import hashlib
import numpy as np

def big():
    return np.random.default_rng(7).integers(0, 2**62, size=25_000_000, dtype=np.int64)

def digest(arr):
    return hashlib.blake2b(memoryview(arr), digest_size=16).hexdigest()

def in_store(arr, arena):
    \"\"\"Whether arr's bytes are inside this process's mapping of the store file `arena`.\"\"\"
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith(arena):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                addr = arr.__array_interface__["data"][0]
                return lo <= addr and addr + arr.nbytes <= hi
    return False
"""


def test_a_200mb_array_made_on_b_is_used_on_c_without_a_copy_and_got_intact_on_a(launcher: Launcher) -> None:
    a, b, c = cluster(
        launcher,
        [("a", ["--num-cpus", "1"]), ("b", ["--num-cpus", "1", "--resource", "b=1"]),
         ("c", ["--num-cpus", "1", "--resource", "c=1"])],
        store=STORE,
    )
    out = run_driver(
        a,
        MAKE_200MB
        + f"""
@ray.remote(resources={{"b": 1}})
def make():
    return big()

@ray.remote(resources={{"c": 1}})
def consume(arr):
    return digest(arr), in_store(arr, {c.arena!r}), arr.flags.writeable, ray.get_runtime_context().get_node_id()

ref = make.remote()
start = time.monotonic()
on_c, zero_copy, writeable, node = ray.get(consume.remote(ref))
took_c = time.monotonic() - start
start = time.monotonic()
arr = ray.get(ref)
took_a = time.monotonic() - start
print(json.dumps({{"want": digest(big()), "c": on_c, "a": digest(arr), "zero_copy": zero_copy,
                  "writeable": writeable, "node": node, "took_c": took_c, "took_a": took_a}}))
""",
    )
    print(f"200 MB: B→C and use on C {out['took_c']:.2f} s; get on A {out['took_a']:.2f} s")
    assert out["node"] == c.peer_id
    assert out["c"] == out["want"] and out["a"] == out["want"], "the array arrived intact"
    assert out["zero_copy"], "C read the array straight out of its own store"
    assert not out["writeable"]
    for d, pulled in ((a, 1), (c, 1), (b, 0)):
        stats = d.status()["tasks"]["stats"]
        assert stats["objects_pulled"] == pulled, (d.name, stats)
    assert b.status()["tasks"]["stats"]["bytes_served"] >= 200 * MB
    # A 200 MB object is large: once a direct connection is up (the first chunks go over the
    # libp2p connection while it opens), its chunks go over it.
    def counts(key: str) -> dict[str, int]:
        return {d.name: d.status()["network"][key] for d in (a, b, c)}

    pulled = counts("direct_pull_bytes")
    assert pulled["a"] >= 100 * MB and pulled["c"] >= 100 * MB, pulled
    # A holder counts a chunk once it is sent, which may be a moment after it arrived.
    wait_for(lambda: sum(counts("direct_served_bytes").values()) == sum(pulled.values()), 10,
             "every byte pulled directly was counted as served directly")


def test_a_holder_that_serves_no_direct_connections_is_pulled_from_over_streams(launcher: Launcher) -> None:
    # b's direct port is taken (by this test's socket), so b serves no direct connections; a
    # large pull from it must still arrive, intact, over the libp2p connection.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        a, b = cluster(
            launcher,
            [("a", ["--num-cpus", "1"]),
             ("b", ["--num-cpus", "1", "--resource", "b=1", "--direct-port", str(taken.getsockname()[1])])],
            store=STORE,
        )
        out = run_driver(
            a,
            MAKE_200MB
            + """
@ray.remote(resources={"b": 1})
def make():
    return big()

start = time.monotonic()
arr = ray.get(make.remote())
print(json.dumps({"want": digest(big()), "a": digest(arr), "took": time.monotonic() - start}))
""",
        )
    finally:
        taken.close()
    assert out["a"] == out["want"], "the array arrived intact"
    assert "no direct connections served" in b.log_text()
    assert a.status()["tasks"]["stats"]["objects_pulled"] == 1
    assert a.status()["network"]["direct_pull_bytes"] == 0
    assert b.status()["network"]["direct_served_bytes"] == 0
    print(f"200 MB over streams (no direct connection): {out['took']:.2f} s")


def test_four_peers_pulling_one_object_at_once_share_the_load(launcher: Launcher) -> None:
    names = ["a"] + [f"q{i}" for i in range(1, 5)]
    peers = cluster(
        launcher,
        [("a", ["--num-cpus", "1"])] + [(n, ["--num-cpus", "1", "--resource", f"{n}=1"]) for n in names[1:]],
        store=STORE,
    )
    a = peers[0]
    out = run_driver(
        a,
        MAKE_200MB
        + """
ref = ray.put(big())

@ray.remote
def consume(arr):
    return digest(arr)

start = time.monotonic()
got = ray.get([consume.options(resources={f"q{i}": 1}).remote(ref) for i in range(1, 5)])
print(json.dumps({"took": time.monotonic() - start, "digests": got, "want": digest(big())}))
""",
    )
    served = {d.name: d.status()["tasks"]["stats"]["bytes_served"] for d in peers}
    by_producer = served["a"] / (200 * MB)
    print(f"4 peers × 200 MB in {out['took']:.2f} s; bytes served: {served}; producer served {by_producer:.2f}×")
    assert out["digests"] == [out["want"]] * 4
    # Without sharing the producer would serve 4×. A puller asks the whole copy
    # nothing while peers that pull the same object are among its sources (they
    # asked the owner first, so they are ahead): it serves one copy (1.00× in
    # three runs on 2 busy cores), more only when a puller's sources fail.
    assert by_producer <= 2.0, f"the producer served {by_producer:.2f}× the object: {served}"
    assert sum(served.values()) >= 4 * 200 * MB


def test_a_pull_whose_source_dies_midway_completes_from_the_other_copy(launcher: Launcher) -> None:
    a, b, c, d = cluster(
        launcher,
        [("a", ["--num-cpus", "1"])] + [(n, ["--num-cpus", "1", "--resource", f"{n}=1"]) for n in "bcd"],
        store=STORE,
    )
    driver = start_driver(
        a,
        MAKE_200MB
        + """
import sys

@ray.remote(resources={"b": 1})
def make():
    return big()

@ray.remote
def consume(arr):
    return digest(arr)

ref = make.remote()
on_c = ray.get(consume.options(resources={"c": 1}).remote(ref))  # a second copy, on c
print("copied", flush=True)
sys.stdin.readline()  # b is frozen now
on_d = ray.get(consume.options(resources={"d": 1}).remote(ref), timeout=120)
print(json.dumps({"c": on_c, "d": on_d, "want": digest(big())}), flush=True)
""",
    )
    try:
        assert driver.stdout is not None and driver.stdin is not None
        assert driver.stdout.readline().strip() == "copied", driver.communicate()
        wait_for(lambda: c.status()["tasks"]["stats"]["objects_pulled"] == 1, 10, "c holds a copy")
        b.stop()  # its chunks stall: d's requests to it are in flight when it dies
        driver.stdin.write("go\n")
        driver.stdin.flush()
        wait_for(lambda: pulling(d), 30, "d pulls")
        time.sleep(0.3)  # some chunks arrive from c; those asked of b hang
        shown = peer_cli(d.state_dir, "status").stdout
        assert "pulling    1 object(s) from other peers" in shown, shown
        assert "/190.7 MiB" in shown, shown  # progress against the object's 200 MB
        b.kill9()
        line = driver.stdout.readline()
        if not line:
            _, err = driver.communicate()
            raise AssertionError(f"driver failed:\n{err}\nlog of d:\n{d.log_text()[-3000:]}")
        out = json.loads(line)
        assert out["d"] == out["want"] and out["c"] == out["want"]
        assert d.status()["tasks"]["stats"]["objects_pulled"] == 1
    finally:
        driver.kill()
        driver.communicate()


def pulling(d: Daemon) -> bool:
    """Whether ``d`` is pulling an object now."""
    return bool(d.status()["store"]["pulling"])


def test_wait_fetch_local_pulls_the_value_here_and_fetch_local_false_does_not(launcher: Launcher) -> None:
    a, _ = cluster(launcher, [("a", ["--num-cpus", "1"]), ("b", ["--num-cpus", "1", "--resource", "b=1"])], store=STORE)
    driver = start_driver(
        a,
        """
import sys
import numpy as np

@ray.remote(resources={"b": 1})
def make():
    return np.ones(20_000_000, dtype=np.uint8)

ref = make.remote()
ready, rest = ray.wait([ref], fetch_local=False, timeout=60)
print(json.dumps({"anywhere": len(ready)}), flush=True)
sys.stdin.readline()
ready, rest = ray.wait([ref], timeout=60)  # fetch_local=True: the value comes here first
print(json.dumps({"here": len(ready)}), flush=True)
sys.stdin.readline()
print(json.dumps({"sum": int(ray.get(ref).sum())}), flush=True)
""",
    )
    try:
        assert driver.stdin is not None
        line = read_line(driver, 60)
        assert line and json.loads(line) == {"anywhere": 1}, line
        time.sleep(0.5)
        pulled = a.status()["tasks"]["stats"]["objects_pulled"]
        assert pulled == 0, "fetch_local=False pulled the value"
        driver.stdin.write("\n")
        driver.stdin.flush()
        line = read_line(driver, 60)
        assert line and json.loads(line) == {"here": 1}, line
        assert a.status()["tasks"]["stats"]["objects_pulled"] == 1, "wait returned before the value was here"
        driver.stdin.write("\n")
        driver.stdin.flush()
        line = read_line(driver, 60)
        assert line and json.loads(line) == {"sum": 20_000_000}, line
    finally:
        driver.kill()
        driver.communicate()
