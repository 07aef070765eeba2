"""``peer.init(bootstrap=..., key=...)``: a driver process joins a cluster as a full peer.

A ``peer up`` daemon listens on loopback; a separate driver process joins it from Python with the
daemon's key. Both see each other, the driver's resources count the whole cluster, and work still
runs in the driver's own embedded node. Without the key the driver's node cannot join.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import stop_daemon

LOOPBACK = "/ip4/127.0.0.1/tcp/0"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A networked `peer up` on loopback (no mDNS); yields (join address, key hex, state dir)."""
    state_dir = tmp_path / "d"
    log_path = tmp_path / "daemon.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "peer._cli", "--state-dir", str(state_dir), "up", "--num-cpus", "2",
         "--object-store-memory", str(64 * 1024 * 1024), "--listen", LOOPBACK, "--no-mdns"],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        join = None
        while join is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"peer up did not start:\n{log_path.read_text()}")
            for line in log_path.read_text().splitlines():
                if "peer up --bootstrap" in line:
                    words = line.split()
                    join = (
                        words[words.index("--bootstrap") + 1],
                        words[words.index("--key") + 1],
                        state_dir,
                    )
            time.sleep(0.02)
        yield join
    finally:
        stop_daemon(proc)
        log.close()


JOIN = textwrap.dedent(
    """
    import json, subprocess, sys, time
    import numpy as np
    import peer

    addr, key, daemon_dir = sys.argv[1], sys.argv[2], sys.argv[4]
    info = peer.init(num_cpus=1, bootstrap=[addr], key=key, listen=["/ip4/127.0.0.1/tcp/0"],
                     mdns=False, _state_dir=sys.argv[3])
    deadline = time.monotonic() + 10
    while len(peer.nodes()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)

    @peer.remote
    def where():
        return peer.get_runtime_context().get_node_id()

    # A large object here is announced to the cluster: the daemon's view counts it.
    big = peer.put(np.ones(4 * 1024 * 1024 // 8))
    announced = 0
    deadline = time.monotonic() + 5
    while not announced and time.monotonic() < deadline and len(peer.nodes()) > 1:
        st = json.loads(subprocess.run(
            [sys.executable, "-m", "peer._cli", "--state-dir", daemon_dir, "status", "--json"],
            capture_output=True, text=True, check=True).stdout)
        announced = sum(p["objects"] for p in st["peers"] if p["peer_id"] == info.get("peer_id"))
        time.sleep(0.1)

    out = {
        "announced": announced,
        "peer_id": info.get("peer_id"),
        "nodes": [n["NodeID"] for n in peer.nodes()],
        "cpus": peer.cluster_resources().get("CPU"),
        "ran_on": peer.get(where.remote()),
    }
    peer.shutdown()
    print(json.dumps(out))
    """
)


def run_join(addr: str, key: str, state_dir: Path, daemon_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", JOIN, addr, key, str(state_dir), str(daemon_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PEER_LOG="warn"),
    )


def test_driver_joins_cluster_from_python(daemon: tuple[str, str, Path], tmp_path: Path) -> None:
    addr, key, daemon_dir = daemon
    r = run_join(addr, key, tmp_path / "driver", daemon_dir)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    daemon_id = addr.rsplit("/p2p/", 1)[1]
    assert out["peer_id"] and out["peer_id"] in out["nodes"]
    assert daemon_id in out["nodes"], out
    assert out["cpus"] == 3.0  # 1 here + 2 on the daemon
    assert out["ran_on"] == out["peer_id"], "the task ran elsewhere than the driver's node"
    assert out["announced"] >= 1, "the daemon never heard of the driver's large object"


def test_driver_with_wrong_key_cannot_join(daemon: tuple[str, str, Path], tmp_path: Path) -> None:
    addr, _, daemon_dir = daemon
    wrong = "ab" * 32
    script = JOIN.replace("deadline = time.monotonic() + 10", "deadline = time.monotonic() + 3")
    r = subprocess.run(
        [sys.executable, "-c", script, addr, wrong, str(tmp_path / "driver"), str(daemon_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["nodes"] == [out["peer_id"]], "a peer with another key got into the cluster"
    assert out["cpus"] == 1.0
    assert "different cluster key" in r.stderr or "key" in r.stderr.lower()
