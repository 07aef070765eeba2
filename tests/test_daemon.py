"""``peer up`` / ``peer status`` / ``peer down`` as real processes, and a driver attaching to the daemon.

The daemon runs in its own process with a private state directory; a separate driver process calls
``peer.init()``, finds the daemon's socket there and attaches to it instead of starting an embedded
node. After ``peer down`` no process of the daemon and no shared-memory file of it may be left.
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

from conftest import leftover_processes, peer_cli, stop_daemon

STORE_BYTES = 256 * 1024 * 1024


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    state_dir = tmp_path / "daemon-state"
    log = open(tmp_path / "daemon.log", "w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "peer._cli",
            "--state-dir",
            str(state_dir),
            "up",
            "--local",
            "--num-cpus",
            "2",
            "--resource",
            "widget=3",
            "--object-store-memory",
            str(STORE_BYTES),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    socket = state_dir / "daemon.sock"
    deadline = time.monotonic() + 30
    while not socket.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            log.close()
            pytest.fail(f"peer up did not start:\n{(tmp_path / 'daemon.log').read_text()}")
        time.sleep(0.02)
    try:
        yield state_dir, proc
    finally:
        stop_daemon(proc)
        log.close()


DRIVER = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import peer as ray

    info = ray.init()
    assert info is not None

    @ray.remote
    def square(x):
        return x * x

    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0
        def incr(self):
            self.n += 1
            return self.n

    @ray.remote
    def shout(i):
        print(f"hello from task {i}")
        return i

    assert ray.get(shout.remote(7)) == 7
    c = Counter.remote()
    counts = ray.get([c.incr.remote() for _ in range(5)])
    big = ray.put(np.arange(1_000_000, dtype=np.int64))
    arr = ray.get(big)
    out = {
        "squares": ray.get([square.remote(i) for i in range(50)]),
        "counts": counts,
        "big_sum": int(arr.sum()),
        "readonly": not arr.flags.writeable,
        "resources": ray.cluster_resources(),
        "socket": ray._runtime.node_info()["socket"],
    }
    ray.shutdown()
    print(json.dumps(out))
    """
)


def test_driver_attaches_to_daemon_and_down_cleans_up(daemon: tuple[Path, subprocess.Popen[str]]) -> None:
    state_dir, proc = daemon
    env = dict(os.environ, PEER_STATE_DIR=str(state_dir))
    run = subprocess.run(
        [sys.executable, "-c", DRIVER], capture_output=True, text=True, timeout=60, env=env
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["squares"] == [i * i for i in range(50)]
    assert out["counts"] == [1, 2, 3, 4, 5]
    assert out["big_sum"] == sum(range(1_000_000))
    assert out["readonly"]
    assert out["resources"]["CPU"] == 2.0 and out["resources"]["widget"] == 3.0
    assert out["socket"] == str(state_dir / "daemon.sock"), "the driver started its own node"
    # The task ran in a daemon worker, yet its print reached this driver, prefixed like Ray's.
    printed = [line for line in run.stdout.splitlines() if "hello from task 7" in line]
    assert printed and printed[0].startswith("(shout pid="), run.stdout

    status = peer_cli(state_dir, "status", "--json")
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["daemon"] is True
    assert st["tasks"]["stats"]["tasks_finished"] >= 50
    assert st["store"]["capacity"] >= STORE_BYTES
    arena = st["store"]["path"]
    assert os.path.exists(arena)

    human = peer_cli(state_dir, "status")
    assert human.returncode == 0 and "workers" in human.stdout and "store" in human.stdout
    assert "spilled" in human.stdout and "restored" in human.stdout
    assert st["store"]["spilled_bytes"] == 0 and st["store"]["restored_bytes"] == 0

    socket = str(state_dir / "daemon.sock")
    assert oct(os.stat(socket).st_mode & 0o777) == oct(0o600)
    down = peer_cli(state_dir, "down")
    assert down.returncode == 0, down.stderr
    assert proc.wait(timeout=15) == 0
    deadline = time.monotonic() + 10
    while leftover_processes(socket, ignore=frozenset({proc.pid})) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftover_processes(socket, ignore=frozenset({proc.pid})) == []
    assert not os.path.exists(arena), "peer down left the store file behind"
    assert not os.path.exists(socket)


def test_status_and_down_without_daemon_fail_clearly(tmp_path: Path) -> None:
    for cmd in ("status", "down"):
        r = peer_cli(tmp_path / "nothing-here", cmd)
        assert r.returncode == 1
        assert "no peer daemon is running" in r.stderr


def test_second_daemon_on_same_state_dir_is_refused(daemon: tuple[Path, subprocess.Popen[str]]) -> None:
    state_dir, _ = daemon
    r = peer_cli(state_dir, "up", "--local", "--num-cpus", "1", "--object-store-memory", str(STORE_BYTES))
    assert r.returncode == 1
    assert "already runs" in r.stderr
