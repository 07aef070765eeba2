"""Worker process: :func:`main` hands control to the native loop, :func:`execute` runs each task.

The native loop (``_native.worker_main``) talks to the node and calls :func:`execute` once per
task with already-fetched values. ``execute`` keeps the functions and classes it has seen by id,
swaps dependency values in for placeholders, runs the function (or creates the actor / calls its
method), and returns the pickled results or the pickled error wrapper. It never raises.
"""

from __future__ import annotations

import os
import types
import pickle
import signal
import sys
from typing import Any

from . import _context, _errors, _native, _runtime, _serialization
from ._worker_output import PrefixedStream


class _WorkerState:
    """What one worker process remembers between tasks."""

    def __init__(self) -> None:
        self.code: dict[bytes, Any] = {}
        self.actor: Any = None
        self.actor_name: str | None = None
        self.loop: Any = None  # an asyncio event loop, made for the first coroutine
        self.streams: list[PrefixedStream] = []

    def prefix(self) -> str:
        name = self.actor_name or _context.current().name or "worker"
        return f"({name} pid={os.getpid()}) "

    def run_coroutine(self, coro: Any) -> Any:
        if self.loop is None:
            import asyncio  # only actors/tasks with async methods need it

            self.loop = asyncio.new_event_loop()
        return self.loop.run_until_complete(coro)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


_worker = _WorkerState()


def main(socket_path: str, worker_id: str) -> None:
    """Run this process as worker ``worker_id`` of the node at ``socket_path`` until told to stop."""
    _runtime.mark_worker()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = PrefixedStream(1, _worker.prefix)
    err = PrefixedStream(2, _worker.prefix)
    _worker.streams = [out, err]
    sys.stdout = out
    sys.stderr = err
    try:
        _native.worker_main(socket_path, worker_id, execute)
    except ConnectionError:
        # The node went away (or is shutting down) before or while this worker served it;
        # there is no one left to report to, and the node accounts for its workers itself.
        pass
    else:
        # Told to exit (an actor whose handles are all gone, or the node stopping): the actor's
        # __del__ and the atexit hooks run, as when a Ray actor goes out of scope.
        _run_exit_hooks()
    finally:
        _worker.flush()


def _run_exit_hooks() -> None:
    """Drop the actor (its ``__del__`` runs) and run ``atexit`` hooks; errors are printed."""
    import atexit
    import gc
    import traceback

    try:
        _worker.actor = None
        gc.collect()
    except BaseException:  # noqa: BLE001 - a failing __del__ must not stop the exit
        traceback.print_exc()
    atexit._run_exitfuncs()


def _serialize_returns(
    result: Any, num_returns: int, name: str
) -> list[tuple[bytes, list[memoryview], list[bytes]]]:
    if num_returns == 1:
        values = [result]
    elif num_returns == 0:
        values = []
    else:
        if not isinstance(result, (tuple, list)) or len(result) != num_returns:
            got = f"{len(result)} values" if isinstance(result, (tuple, list)) else f"a {type(result).__name__}"
            raise ValueError(
                f"{name}() was declared with num_returns={num_returns} but returned {got}; "
                f"return a tuple of exactly {num_returns} values"
            )
        values = list(result)
    return [_serialization.serialize(v, f"return value {i} of {name}()") for i, v in enumerate(values)]


def execute(
    kind: int,
    task_id: bytes,
    fn_id: bytes,
    fn_blob: bytes | None,
    method: str,
    name: str,
    args: tuple[int, Any],
    dep_values: list[tuple[int, Any]],
    num_returns: int,
) -> tuple[int, Any]:
    """Run one task; ``(0, [(pickle, buffers), ...])`` on success, ``(1, (message, blob))`` if it raised."""
    if kind == _native.TASK_ACTOR_CREATE:
        _worker.actor_name = name.removesuffix(".__init__")
    _context.set_current(_context.CurrentTask(task_id=task_id.hex(), name=name))
    try:
        if fn_blob is not None and fn_id not in _worker.code:
            _worker.code[fn_id] = pickle.loads(fn_blob)
        call_args, call_kwargs = _serialization.deserialize_args(args, dep_values)
        if kind == _native.TASK_ACTOR_CREATE:
            _worker.actor = _code(fn_id)(*call_args, **call_kwargs)
            return (0, [])
        if kind == _native.TASK_ACTOR_METHOD:
            if _worker.actor is None:
                raise RuntimeError(f"this worker holds no actor to call {method}() on")
            result = getattr(_worker.actor, method)(*call_args, **call_kwargs)
        else:
            result = _code(fn_id)(*call_args, **call_kwargs)
        if isinstance(result, types.CoroutineType):
            result = _worker.run_coroutine(result)
        return (0, _serialize_returns(result, num_returns, name))
    except BaseException as e:  # noqa: BLE001 - every failure of user code goes back to the caller
        return (1, _errors.capture(e, name))
    finally:
        _worker.flush()
        _context.set_current(_context.CurrentTask())


def _code(fn_id: bytes) -> Any:
    try:
        return _worker.code[fn_id]
    except KeyError:
        raise RuntimeError(
            f"the node sent no code for function {fn_id.hex()} to this worker (internal error)"
        ) from None
