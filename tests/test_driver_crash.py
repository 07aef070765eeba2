"""A driver killed with SIGKILL: its workers and fork server go by themselves, and the next node
started with the same state directory removes the store file the dead one could not."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import peer
from conftest import leftover_processes

DRIVER = textwrap.dedent(
    """
    import json, sys, time
    import peer

    info = peer.init(num_cpus=2, object_store_memory=64 * 1024 * 1024, _state_dir=sys.argv[1])

    @peer.remote
    def hello():
        return "hi"

    peer.get([hello.remote() for _ in range(4)])  # both workers are up
    print(json.dumps(info), flush=True)
    time.sleep(600)
    """
)


def test_killed_driver_leaves_no_worker_and_its_arena_is_swept(tmp_path: Path) -> None:
    state_dir = str(tmp_path / "st")
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, state_dir], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        socket, arena = info["socket"], info["arena_path"]
        assert leftover_processes(socket, frozenset({proc.pid})), "no workers were started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    # Its workers and fork server see their socket close and exit on their own.
    deadline = time.monotonic() + 10
    while leftover_processes(socket, frozenset({proc.pid})) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftover_processes(socket, frozenset({proc.pid})) == []
    # A dead process cannot remove its store file; the next node on this state dir does.
    assert os.path.exists(arena)
    peer.init(num_cpus=1, object_store_memory=64 * 1024 * 1024, _state_dir=state_dir)
    try:
        assert not os.path.exists(arena), "the dead driver's store file was not swept"
        assert not os.path.exists(socket), "the dead driver's socket was not swept"
        assert peer.get(peer.put(1)) == 1
    finally:
        peer.shutdown()
