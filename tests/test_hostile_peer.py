"""A member with the cluster key that sends garbage does not disturb the cluster's work.

Two real peers run a workload that crosses between them (tasks placed on both, 1.5 MB results
pulled from one store into the other, an actor) while a third member, ``node/examples/
hostile_peer.rs``, keeps sending both of them garbage, broken handshakes, truncated and oversized
frames, well-formed messages about things that do not exist (each twice: replayed), tasks whose
function never comes or is garbage, and impossible pull requests. Every result must be right,
both peers must still be up and in each other's view, and each must have counted the bad frames.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from peers import Launcher, cluster, read_line, start_driver, views_complete

ROOT = Path(__file__).resolve().parent.parent
HOSTILE_SECONDS = 10

WORKLOAD = """
import numpy as np

@ray.remote
def make(i):
    return np.full(187_500, i, dtype=np.int64)  # 1.5 MB: lives in the maker's store

@ray.remote
def total(a):
    return int(a.sum())

@ray.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k):
        self.n += k
        return self.n

counter = Counter.remote()
rounds = 0
wrong = []
start = time.monotonic()
while time.monotonic() - start < 7:
    parts = [make.remote(i) for i in range(24)]
    sums = ray.get([total.remote(p) for p in parts])
    if sums != [i * 187_500 for i in range(24)]:
        wrong.append(sums)
    ray.get(counter.add.remote(1))
    rounds += 1
print(json.dumps({"rounds": rounds, "wrong": len(wrong), "counter": ray.get(counter.add.remote(0))}))
"""


def hostile_binary() -> Path:
    """Build the hostile example (already built by ``cargo test``: this only finds it)."""
    subprocess.run(
        ["cargo", "build", "--quiet", "--example", "hostile_peer", "-p", "peer-node"], cwd=ROOT, check=True, timeout=600
    )
    meta = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Path(json.loads(meta.stdout)["target_directory"]) / "debug" / "examples" / "hostile_peer"


def test_a_member_sending_garbage_leaves_the_work_unaffected(launcher: Launcher) -> None:
    binary = hostile_binary()
    a, b = cluster(launcher, [("a", ["--num-cpus", "2"]), ("b", ["--num-cpus", "2"])], store=256 * 1024 * 1024)
    key = (a.state_dir / "cluster.key").read_text().strip()
    hostile = subprocess.Popen(
        [str(binary), "--key", key, "--bootstrap", a.join, "--seconds", str(HOSTILE_SECONDS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        driver = start_driver(a, WORKLOAD)
        try:
            line = read_line(driver, 60)
            if line is None:
                pytest.fail("the workload gave no result within 60 s")
            if not line:
                pytest.fail(f"the workload failed:\n{driver.communicate()[1]}")
            work = json.loads(line)
        finally:
            driver.kill()
            driver.communicate()
        out, err = hostile.communicate(timeout=HOSTILE_SECONDS + 30)
    finally:
        if hostile.poll() is None:
            hostile.kill()
            hostile.communicate()
    assert hostile.returncode == 0, f"the hostile peer failed: {err}"
    sent = json.loads(out.strip().splitlines()[-1])
    print(f"workload: {work}; hostile peer sent: {sent}")
    assert work["wrong"] == 0 and work["rounds"] >= 3, work
    assert work["counter"] == work["rounds"]
    # It really attacked both peers with every kind of message while the work ran.
    kinds = {
        "garbage_without_handshake",
        "short_handshake",
        "garbage_frame",
        "truncated_frame",
        "oversized_frame",
        "replayed_bogus_messages",
        "pull_for_nothing",
        "pull_garbage",
    }
    assert kinds <= set(sent), sent
    for d in (a, b):
        assert d.proc.poll() is None, f"{d.name} died:\n{d.log_text()[-3000:]}"
        st = d.status()
        assert st["tasks"]["stats"]["bad_frames"] > 0, f"{d.name} counted no bad frame"
        assert "panicked" not in d.log_text()
    assert views_complete([a, b])

