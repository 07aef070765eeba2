"""Chaos: a pipeline keeps its result while peers are killed under it.

Four peers on loopback, the driver on the first (which also hosts the accumulating actor). A
three-stage pipeline of 2,000 tasks runs with numpy intermediates large enough (1.5 MB) to live
in the stores of the peers that made them; two of the three other peers are SIGKILLed at seeded
random moments during the run, and one of them is restarted with its old identity. The final
result must equal the serial computation, and the test prints what recovery cost: tasks
re-executed, objects rebuilt, actor restarts (none expected: the actor's peer survives).

Each seed takes 6-9 s on two cores. A run that gives no result within ``RESULT_TIMEOUT`` fails
with what every live peer is still waiting for.
"""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest

from peers import Daemon, Launcher, cluster, read_line, start_driver, views_complete, wait_for

N = 667  # per stage: 667 + 667 + 666 tasks
RESULT_TIMEOUT = 60  # seconds; a run takes 5-8 s on 2 cores

PIPELINE = f"""
import numpy as np
import sys

@ray.remote(max_retries=5)
def stage1(i):
    time.sleep(0.004)
    return np.arange(i, i + 187_500, dtype=np.int64)  # 1.5 MB: stays where it is made

@ray.remote(max_retries=5)
def stage2(a):
    time.sleep(0.004)
    return a * 3 + 1

@ray.remote(max_retries=5)
def stage3(b):
    time.sleep(0.004)
    return int(b.sum() % 1_000_003)

@ray.remote(resources={{"home": 1}})
class Accumulator:
    def __init__(self):
        self.total = 0
        self.count = 0

    def add(self, *values):
        self.total = (self.total + sum(values)) % 1_000_003
        self.count += len(values)
        return self.count

    def result(self):
        return self.total, self.count

acc = Accumulator.remote()
ray.get(acc.result.remote())
print("ready", flush=True)
sys.stdin.readline()
start = time.monotonic()
s1 = [stage1.remote(i) for i in range({N})]
s2 = [stage2.remote(r) for r in s1]
s3 = [stage3.remote(r) for r in s2[: {N - 1}]]
ray.get(acc.add.remote(*s3))
total, count = ray.get(acc.result.remote())
print(json.dumps({{"total": total, "count": count, "took": time.monotonic() - start}}), flush=True)
"""


def serial() -> int:
    total = 0
    for i in range(N - 1):
        b = np.arange(i, i + 187_500, dtype=np.int64) * 3 + 1
        total = (total + int(b.sum() % 1_000_003)) % 1_000_003
    return total


def stuck(peers: list[Daemon]) -> str:
    """What each live peer still has to do, for the message of a test that timed out."""
    out = []
    for d in peers:
        if d.killed:
            continue
        st = d.status()
        out.append(f"{d.name}: tasks {json.dumps(st['tasks'])}\n  placement {json.dumps(st['placement'])}")
    return "\n".join(out)


def stats_sum(peers: list[Daemon], key: str) -> int:
    return sum(d.status()["tasks"]["stats"][key] for d in peers if not d.killed)


@pytest.mark.parametrize("seed", range(5))
def test_the_pipeline_gives_the_serial_result_while_peers_die(launcher: Launcher, seed: int) -> None:
    rng = random.Random(seed)
    specs = [("p0", ["--num-cpus", "1", "--resource", "home=1"])] + [(f"p{i}", ["--num-cpus", "2"]) for i in (1, 2, 3)]
    peers = cluster(launcher, specs, store=512 * 1024 * 1024)
    home = peers[0]
    victims = rng.sample(peers[1:], 2)
    kill_at = sorted(rng.uniform(0.3, 2.0) for _ in victims)
    driver = start_driver(home, PIPELINE)
    try:
        assert driver.stdout is not None and driver.stdin is not None
        assert driver.stdout.readline().strip() == "ready", driver.communicate()
        driver.stdin.write("go\n")
        driver.stdin.flush()
        start = time.monotonic()
        for victim, at in zip(victims, kill_at, strict=True):
            time.sleep(max(0.0, start + at - time.monotonic()))
            victim.kill9()
        # The first victim comes back with its old identity and rejoins.
        back = launcher.up(
            victims[0].name + "-again", "--no-mdns", "--num-cpus", "2", "--key",
            (home.state_dir / "cluster.key").read_text().strip(), "--bootstrap", home.join,
            store=512 * 1024 * 1024, state_dir=victims[0].state_dir,
        )
        assert back.peer_id == victims[0].peer_id, "a restarted peer keeps its identity"
        line = read_line(driver, RESULT_TIMEOUT)
        if line is None:
            pytest.fail(f"no result after {RESULT_TIMEOUT} s; what each live peer waits for:\n{stuck(peers + [back])}")
        if not line:
            _, err = driver.communicate()
            pytest.fail(f"driver failed:\n{err}\nlog of {home.name}:\n{home.log_text()[-4000:]}")
        out = json.loads(line)
        alive = [d for d in peers if not d.killed] + [back]
        wait_for(lambda: views_complete(alive), 30, "the restarted peer is back in every view")
        stats = {k: stats_sum(alive, k) for k in ("tasks_retried", "objects_rebuilt", "actors_restarted")}
        print(
            f"seed {seed}: killed {[v.name for v in victims]} at {[round(t, 2) for t in kill_at]} s, "
            f"restarted {victims[0].name}; {out['count']} results in {out['took']:.1f} s; "
            f"tasks re-executed {stats['tasks_retried']}, objects rebuilt {stats['objects_rebuilt']}, "
            f"actor restarts {stats['actors_restarted']}"
        )
        assert out["count"] == N - 1
        assert out["total"] == serial()
    finally:
        driver.kill()
        driver.communicate()
