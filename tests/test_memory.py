"""Memory that crosses peers comes back (Ray's ownership and borrowing), and actors end when
their last handle is gone (Ray's actor lifetimes).

Every test starts real ``peer up`` daemons on loopback (see ``peers.py``); drivers run as
separate processes attached to one of them. Store figures come from ``peer status``.

The drivers here drop their refs and then wait on their input: the node must hear of the drops
all the same (a driver sends them within 100 ms).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

from peers import Daemon, Launcher, cluster, read_line, run_driver, start_driver, wait_for

STORE = 512 * 1024 * 1024
SPECS = [
    ("p0", ["--num-cpus", "2"]),
    ("p1", ["--num-cpus", "2", "--resource", "p1=10"]),
    ("p2", ["--num-cpus", "2", "--resource", "p2=10"]),
]


def ended(driver: subprocess.Popen[str]) -> None:
    """Wait for a driver to exit; it must succeed."""
    _, err = driver.communicate(timeout=30)
    assert driver.returncode == 0, err


def stop(driver: subprocess.Popen[str]) -> None:
    """Kill a driver still running, and close its pipes."""
    if driver.poll() is None:
        driver.kill()
    for pipe in (driver.stdin, driver.stdout, driver.stderr):
        if pipe is not None:
            pipe.close()
    driver.wait(timeout=30)


def kept(d: Daemon) -> tuple[int, int]:
    """Objects in ``d``'s store, and objects its table keeps that are not cached copies."""
    st = d.status()
    o = st["objects"]
    return st["store"]["objects"], o["owned"] + o["borrowed"]


def settled(peers: list[Daemon], idle: dict[str, int], slack: int = 1) -> bool:
    return all(d.status()["store"]["objects"] <= idle[d.name] + slack for d in peers)


SOAK = """
import numpy as np

@ray.remote(resources={"p1": 1})
def on_p1(arr):
    return int(arr[-1])

@ray.remote(resources={"p2": 1})
def make_on_p2(n):
    return np.full(n, 7, dtype=np.uint8)

@ray.remote(resources={"p2": 1})
def relay_on_p2(refs):
    # Receives refs nested in a list, and returns them nested again: p0 gets back borrowed refs.
    return [refs[0], refs[1]]

@ray.remote(resources={"p1": 1})
def total_on_p1(refs):
    return sum(int(a[-1]) for a in ray.get(refs))

rng = np.random.default_rng(3)
for r in range(ROUNDS):
    n1 = int(rng.integers(2, 21)) * 1_000_000
    n2 = int(rng.integers(2, 21)) * 1_000_000
    a = ray.put(np.full(n1, r % 200, dtype=np.uint8))
    b = make_on_p2.remote(n2)
    assert ray.get(on_p1.remote(a)) == r % 200
    assert ray.get(on_p1.remote(b)) == 7
    back = ray.get(relay_on_p2.remote([a, b]))
    assert ray.get(total_on_p1.remote(back)) == r % 200 + 7
    del a, b, back
    if (r + 1) % 50 == 0 and r + 1 < ROUNDS:
        print(json.dumps({"round": r + 1}), flush=True)
        assert sys.stdin.readline().strip() == "go on"
print(json.dumps({"round": ROUNDS}), flush=True)
sys.stdin.readline()
"""


def test_a_soak_of_200_rounds_across_three_peers_leaves_every_store_idle(launcher: Launcher) -> None:
    peers = cluster(launcher, SPECS, store=STORE)
    p0 = peers[0]
    idle = {d.name: d.status()["store"]["objects"] for d in peers}
    driver = start_driver(p0, "import sys\nROUNDS = 200\n" + SOAK)
    peak = {d.name: 0 for d in peers}
    checks = []
    halt = threading.Event()

    def sample_peak() -> None:
        while not halt.wait(0.1):
            for d in peers:
                peak[d.name] = max(peak[d.name], d.status()["store"]["objects"])

    sampler = threading.Thread(target=sample_peak, daemon=True)
    sampler.start()
    try:
        while True:
            line = read_line(driver, 240)
            assert line, f"the soak driver stopped: {driver.poll()} {driver.stderr.read() if driver.stderr else ''}"
            done = json.loads(line)["round"]
            try:
                took = wait_for(lambda: settled(peers, idle), 5, f"stores back to idle after round {done}")
            except BaseException:
                print({d.name: (d.status()["store"], d.status()["objects"]) for d in peers})
                raise
            checks.append((done, round(took, 2), {d.name: kept(d) for d in peers}))
            assert driver.stdin is not None
            driver.stdin.write("go on\n")
            driver.stdin.flush()
            if done == 200:
                break
        ended(driver)
    finally:
        halt.set()
        sampler.join(timeout=5)
        stop(driver)
    final = {d.name: d.status() for d in peers}
    print(f"soak: idle {idle}, peak store objects {peak}, checks (round, s to settle, (store, table)) {checks}")
    for name, st in final.items():
        assert st["store"]["objects"] <= idle[name] + 1, (name, st["store"], st["objects"])
        assert st["store"]["spilled_objects"] == 0, f"{name} spilled: {st['store']}"


def test_an_object_held_only_by_an_actor_on_another_peer_outlives_the_driver_refs(launcher: Launcher) -> None:
    p0, p1, _ = cluster(launcher, SPECS, store=STORE)
    driver = start_driver(
        p0,
        """
import sys
import numpy as np

@ray.remote(resources={"p1": 1})
class Keeper:
    def keep(self, refs):
        self.refs = refs
    def total(self):
        return int(ray.get(self.refs[0]).sum())
    def drop(self):
        self.refs = None

k = Keeper.remote()
ref = ray.put(np.ones(10_000_000, dtype=np.uint8))
ray.get(k.keep.remote([ref]))
del ref
print(json.dumps({"held": True}), flush=True)
sys.stdin.readline()
print(json.dumps({"total": ray.get(k.total.remote())}), flush=True)
ray.get(k.drop.remote())
print(json.dumps({"dropped": True}), flush=True)
sys.stdin.readline()
""",
    )
    try:
        assert read_line(driver, 60)
        time.sleep(1.0)
        assert p0.status()["objects"]["owned_bytes"] >= 10_000_000, "the driver's refs are gone, the actor's is not"
        assert driver.stdin is not None
        driver.stdin.write("\n")
        driver.stdin.flush()
        line = read_line(driver, 60)
        assert line and '"total": 10000000' in line, line
        assert read_line(driver, 60)
        took = wait_for(lambda: p0.status()["objects"]["owned_bytes"] < 1_000_000, 5, "the object is freed")
        print(f"freed {took:.2f} s after the actor dropped it")
        driver.stdin.write("\n")
        driver.stdin.flush()
        ended(driver)
    finally:
        stop(driver)
    assert p1.status()["objects"]["borrowed"] == 0


def test_a_killed_borrower_leaves_nothing_behind(launcher: Launcher) -> None:
    p0, p1, _ = cluster(launcher, SPECS, store=STORE)
    driver = start_driver(
        p0,
        """
import sys
import numpy as np

@ray.remote(resources={"p1": 1})
class Keeper:
    def keep(self, refs):
        self.refs = refs
        return len(ray.get(refs[0]))

k = Keeper.remote()
ref = ray.put(np.ones(10_000_000, dtype=np.uint8))
kept = ray.get(k.keep.remote([ref]))
del ref
print(json.dumps({"kept": kept}), flush=True)
sys.stdin.readline()
""",
    )
    try:
        assert read_line(driver, 60)
        time.sleep(0.5)
        assert p0.status()["objects"]["owned_bytes"] >= 10_000_000
        p1.kill9()
        took = wait_for(
            lambda: p0.status()["objects"]["owned_bytes"] < 1_000_000, 10, "the owner frees what only p1 borrowed"
        )
        print(f"freed {took:.2f} s after the borrower was killed")
        assert driver.stdin is not None
        driver.stdin.write("\n")
        driver.stdin.flush()
        ended(driver)
    finally:
        stop(driver)


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


ACTOR = """
import os, sys

@ray.remote(resources=RES, num_cpus=1)
class A:
    def pid(self):
        return os.getpid()

@ray.remote(resources=RES)
def last_holder(h):
    return ray.get(h.pid.remote())
"""


def test_an_actor_whose_handles_are_gone_exits_and_returns_its_cpu(launcher: Launcher) -> None:
    p0, p1, _ = cluster(launcher, SPECS, store=STORE)
    for where, res in (("on its creator's peer", "{}"), ("on another peer", '{"p1": 1}')):
        host = p0 if res == "{}" else p1
        driver = start_driver(
            p0,
            f"RES = {res}\n"
            + ACTOR
            + """
a = A.remote()
print(json.dumps({"pid": ray.get(a.pid.remote())}), flush=True)
sys.stdin.readline()
del a
print(json.dumps({"dropped": True}), flush=True)
b = A.remote()
pid = ray.get(b.pid.remote())
ref = last_holder.remote(b)
del b
print(json.dumps({"pid": pid, "via_task": ray.get(ref)}), flush=True)
sys.stdin.readline()
""",
        )
        try:
            line = read_line(driver, 60)
            assert line
            pid = json.loads(line)["pid"]
            assert not pid_gone(pid)
            cpus = host.status()["resources"]["available"]["CPU"]
            assert driver.stdin is not None
            driver.stdin.write("\n")
            driver.stdin.flush()
            assert read_line(driver, 30)
            took = wait_for(lambda: pid_gone(pid), 2, f"the actor's worker exits ({where})")
            wait_for(lambda: host.status()["resources"]["available"]["CPU"] >= cpus + 1, 2, "its CPU comes back")
            line = read_line(driver, 60)
            assert line
            out = json.loads(line)
            assert out["via_task"] == out["pid"]
            took2 = wait_for(lambda: pid_gone(out["pid"]), 2, f"the actor whose last handle a task held exits ({where})")
            print(f"actor {where}: exited {took:.2f} s after del; {took2:.2f} s after its last handle (in a task) went")
            driver.stdin.write("\n")
            driver.stdin.flush()
            ended(driver)
        finally:
            stop(driver)


def test_a_detached_named_actor_outlives_its_creator_and_answers_a_driver_on_another_peer(
    launcher: Launcher,
) -> None:
    p0, p1, _ = cluster(launcher, SPECS, store=STORE)
    made = run_driver(
        p0,
        """
import os

@ray.remote
class Counter:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n, os.getpid()

c = Counter.options(name="keeper", lifetime="detached").remote()
n, pid = ray.get(c.incr.remote())
gone = Counter.options(name="transient").remote()
ray.get(gone.incr.remote())
print(json.dumps({"n": n, "pid": pid}))
""",
    )
    got = run_driver(
        p1,
        """
c = ray.get_actor("keeper")
n, pid = ray.get(c.incr.remote())
try:
    ray.get_actor("transient")
    transient = True
except ValueError:
    transient = False
print(json.dumps({"n": n, "pid": pid, "transient": transient}))
ray.kill(c)
""",
    )
    assert got["n"] == made["n"] + 1 and got["pid"] == made["pid"], (made, got)
    assert not got["transient"], "a non-detached actor ended with its creator"
