"""A node that cannot start workers fails tasks and actors with a clear error instead of hanging."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

import peer
from peer import _native, _runtime
from peer.exceptions import ActorDiedError, WorkerCrashedError


def test_missing_worker_interpreter_fails_tasks_and_actors(tmp_path: Path) -> None:
    # Start the node by hand with an interpreter that does not exist.
    info = _native.init_embedded(
        num_cpus=1,
        resources={},
        object_store_memory=64 * 1024 * 1024,
        state_dir=str(tmp_path),
        python=str(tmp_path / "no-such-python"),
        python_path=list(sys.path),
        cwd=os.getcwd(),
    )
    _runtime._state.info = dict(info)
    try:

        @peer.remote
        def f() -> int:
            return 1

        with pytest.raises(WorkerCrashedError, match="no worker process could be started"):
            peer.get(f.remote(), timeout=10)

        @peer.remote
        class A:
            def m(self) -> int:
                return 1

        a: Any = A.remote()
        with pytest.raises((WorkerCrashedError, ActorDiedError)):
            peer.get(a.m.remote(), timeout=10)
        # The node itself still works: objects go in and out.
        assert peer.get(peer.put(41)) == 41
    finally:
        peer.shutdown()
    assert not os.path.exists(info["arena_path"])
