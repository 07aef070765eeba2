"""Worker process: :func:`main` hands control to the native loop, :func:`execute` runs each task.

The native loop (``_native.worker_main``) talks to the node and calls :func:`execute` once per
task with already-fetched values. ``execute`` keeps the functions and classes it has seen by id,
swaps dependency values in for placeholders, runs the function (or creates the actor / calls its
method), and returns the pickled results or the pickled error wrapper. It never raises.
"""

from __future__ import annotations

import json
import os
import types
import pickle
import signal
import sys
from collections import OrderedDict
from typing import Any

from . import _concurrency, _context, _errors, _gpus, _native, _runtime, _runtime_env, _serialization
from .exceptions import RuntimeEnvSetupError
from ._worker_output import PrefixedStream


class _WorkerState:
    """What one worker process remembers between tasks."""

    def __init__(self) -> None:
        self.code: dict[bytes, Any] = {}
        # Pickled code not loaded yet (loaded when first called, once the task's runtime
        # environment is set up: the code may import from it).
        self.blobs: dict[bytes, bytes] = {}
        # The runtime environment this worker took up (its key), or why that failed.
        self.env_key: bytes | None = None
        self.env_error: str | None = None
        self.actor: Any = None
        self.actor_name: str | None = None
        # Runs the calls of a threaded or async actor; None: one call at a time, here.
        self.runner: _concurrency.Runner | None = None
        # Why the actor exits on purpose (exit_actor(), __ray_terminate__), once it does.
        self.exit_reason: str | None = None
        # The actor's class has async methods (Ray's async actor).
        self.is_async = False
        # Tasks the node cancelled (oldest first, at most MAX_CANCELLED kept).
        self.cancelled: OrderedDict[bytes, None] = OrderedDict()
        # The running task raised an exception its retry_exceptions list does not name.
        self.failed_for_good = False
        # The task (hex id) the interrupt signal interrupted last.
        self.interrupted: str | None = None
        self.in_interrupt_handler = False
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

# Cancels of tasks that never come here (they ended first) are forgotten past this many.
MAX_CANCELLED = 4096
# How long the interrupt handler waits for the node's word naming the task (it trails the signal).
CANCEL_WORD_WAIT_S = 1.0


class _CancelledBeforeStart(Exception):
    """A concurrent actor's call that was cancelled before it started."""


def cancel(task_id: bytes) -> None:
    """The node cancelled ``task_id`` (sent here, maybe not yet arrived): it does not start; a
    running async actor call is cancelled as an asyncio task."""
    _worker.cancelled[task_id] = None
    if len(_worker.cancelled) > MAX_CANCELLED:
        _worker.cancelled.popitem(last=False)
    if _worker.runner is not None:
        _worker.runner.cancel(task_id)


def cancel_requested(task_id: bytes) -> bool:
    """Whether the node cancelled ``task_id`` (a call that runs on: see ``cancel()``), reading
    what the node sent meanwhile without waiting."""
    if task_id in _worker.cancelled:
        return True
    if _native.take_cancel(task_id, 0.0):
        _worker.cancelled[task_id] = None
        return True
    return False


def _cancelled_message(name: str) -> str:
    return f"task {name} was cancelled with peer.cancel()"


def _on_interrupt(signum: int, frame: Any) -> None:
    """The node's interrupt signal: raise ``KeyboardInterrupt`` in the running task if the node
    cancelled it (Ray's ``cancel(force=False)``); a stale signal is ignored."""
    del signum, frame
    running = _context.current().task_id
    if running is None or running == _worker.interrupted or _worker.in_interrupt_handler:
        # Between tasks; a repeat of the signal that interrupted this task already; or the
        # signal the word raises again, come while this handler reads that word.
        return
    _worker.in_interrupt_handler = True
    try:
        cancelled = _native.take_cancel(bytes.fromhex(running), CANCEL_WORD_WAIT_S)
    finally:
        _worker.in_interrupt_handler = False
    if cancelled:
        _worker.interrupted = running
        raise KeyboardInterrupt(f"task {_context.current().name} was cancelled with peer.cancel()")


def main(socket_path: str, worker_id: str) -> None:
    """Run this process as worker ``worker_id`` of the node at ``socket_path`` until told to stop."""
    _runtime.mark_worker()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, _on_interrupt)
    out = PrefixedStream(1, _worker.prefix)
    err = PrefixedStream(2, _worker.prefix)
    _worker.streams = [out, err]
    sys.stdout = out
    sys.stderr = err
    try:
        _native.worker_main(socket_path, worker_id, execute, cancel)
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
    """Run the actor's ``__ray_shutdown__``, drop it (its ``__del__`` runs) and run ``atexit``
    hooks, as Ray does when an actor ends gracefully; errors are printed."""
    import atexit
    import gc
    import traceback

    if _worker.runner is not None:
        _worker.runner.stop()
    shutdown = getattr(_worker.actor, "__ray_shutdown__", None)
    if callable(shutdown):
        try:
            shutdown()
        except BaseException:  # noqa: BLE001 - a failing hook must not stop the exit
            traceback.print_exc()
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


def _execute(
    kind: int,
    task_id: bytes,
    fn_id: bytes,
    fn_blob: bytes | None,
    method: str,
    name: str,
    args: tuple[int, Any],
    dep_values: list[tuple[int, Any]],
    num_returns: int,
    gpu_ids: list[str],
    runtime_env: tuple[bytes, str] | None,
) -> tuple[int, Any]:
    current = _context.CurrentTask(task_id=task_id.hex(), name=name)
    _context.set_current(current)
    try:
        # The node sends a function's code once per worker: keep it even for a task not run.
        if fn_blob is not None and fn_id not in _worker.code:
            _worker.blobs[fn_id] = fn_blob
        if runtime_env is not None:
            _enter_env(*runtime_env)
        _gpus.hold(gpu_ids)
        if _worker.exit_reason is not None:
            # Exiting: calls already sent here do not run (the node fails them).
            return (_native.DEFERRED, None) if _worker.runner is not None else (_native.EXIT, _worker.exit_reason)
        if task_id in _worker.cancelled:
            del _worker.cancelled[task_id]
            return (_native.CANCELLED, _cancelled_message(name))
        call_args, call_kwargs = _serialization.deserialize_args(args, dep_values)
        if kind == _native.TASK_ACTOR_CREATE:
            setup = _concurrency.ActorSetup()
            if call_args and isinstance(call_args[0], _concurrency.ActorSetup):
                setup, call_args = call_args[0], call_args[1:]
            cls = _code(fn_id)
            _worker.is_async = _concurrency.is_async_class(cls)
            _worker.actor = cls(*call_args, **call_kwargs)
            _worker.runner = _concurrency.runner_for(_worker.actor, setup)
            return (0, [])
        if kind == _native.TASK_ACTOR_METHOD:
            if _worker.actor is None:
                raise RuntimeError(f"this worker holds no actor to call {method}() on")
            method, group = _concurrency.split_method(method)
            if _worker.runner is not None:
                _submit_concurrent(_worker.runner, current, task_id, method, group, name, call_args, call_kwargs, num_returns)
                return (_native.DEFERRED, None)
            result = _actor_method(method)(*call_args, **call_kwargs)
        else:
            result = _code(fn_id)(*call_args, **call_kwargs)
        if isinstance(result, types.CoroutineType):
            result = _worker.run_coroutine(result)
        return (0, _serialize_returns(result, num_returns, name))
    except BaseException as e:  # noqa: BLE001 - every failure of user code goes back to the caller
        if isinstance(e, ModuleNotFoundError):
            _runtime_env.describe_missing_module(e, _runtime.job_env())
        return (1, _errors.capture(e, name))
    finally:
        _worker.flush()
        _context.set_current(_context.NO_TASK)


def _enter_env(key: bytes, setup: str) -> None:
    """The task runs in runtime environment ``key``: take it up before this worker's first task
    (the node sends a worker tasks of its environment only); its submissions inherit it."""
    if _worker.env_key != key:
        if _worker.env_key is not None:
            raise RuntimeError("the node sent this worker a task of another runtime_env (internal error)")
        if _worker.env_error is None:
            try:
                _runtime_env.apply(setup)
                _worker.env_key = key
                # A CUDA_VISIBLE_DEVICES the user's env_vars set is theirs to keep (Ray #28215).
                _gpus.leave_alone(_gpus.CUDA_VISIBLE_DEVICES in (json.loads(setup).get("env_vars") or {}))
            except BaseException as e:  # noqa: BLE001 - every task of this worker fails with it
                _worker.env_error = str(e) if isinstance(e, RuntimeEnvSetupError) else f"{type(e).__name__}: {e}"
        if _worker.env_error is not None:
            fail_for_good()
            raise RuntimeEnvSetupError(f"setting up the task's runtime_env failed: {_worker.env_error}")
    _runtime.set_task_env(_runtime_env.from_setup(key, setup))


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
    gpu_ids: list[str],
    runtime_env: tuple[bytes, str] | None = None,
) -> tuple[int, Any]:
    """Run one task: ``(0, [(pickle, buffers), ...])`` on success, ``(1, (message, blob))`` if it
    raised, ``(DEFERRED, None)`` when a concurrent actor runs it on, ``(EXIT, reason)`` when the
    actor exits on purpose (the call that asked for it, or the constructor, fails with that)."""
    if kind == _native.TASK_ACTOR_CREATE:
        _worker.actor_name = name.removesuffix(".__init__")
    result = _execute(
        kind, task_id, fn_id, fn_blob, method, name, args, dep_values, num_returns, gpu_ids, runtime_env
    )
    if result[0] == 0:
        if _worker.exit_reason is None:
            return result  # the common case
    elif result[0] == 1 and _worker.failed_for_good:
        _worker.failed_for_good = False
        return (_native.FAILED_FINAL, result[1])
    if _worker.exit_reason is not None and kind != _native.TASK_NORMAL and result[0] != _native.DEFERRED:
        return (_native.EXIT, _worker.exit_reason)
    return result


def _actor_method(method: str) -> Any:
    """The bound method ``method`` of this worker's actor, or one of Ray's built-in methods."""
    if method == "__ray_ready__":
        return _ray_ready
    if method == "__ray_terminate__":
        return _ray_terminate
    return getattr(_worker.actor, method)


def _ray_terminate() -> None:
    """``handle.__ray_terminate__.remote()``: the actor ends gracefully once this call runs (its
    ``__ray_shutdown__``, ``__del__`` and ``atexit`` hooks run; it is not restarted)."""
    request_exit(f"the actor {_worker.actor_name} was terminated with __ray_terminate__")


def fail_for_good() -> None:
    """The running task's exception is not one its ``retry_exceptions`` lists: no retry."""
    _worker.failed_for_good = True


def in_actor() -> bool:
    """Whether this process is an actor's worker (its constructor may still be running)."""
    return _worker.actor_name is not None


def is_async_actor() -> bool:
    return _worker.is_async


def actor_name() -> str | None:
    """The class name of this worker's actor (None outside an actor)."""
    return _worker.actor_name


def request_exit(reason: str) -> None:
    """The actor exits once the running call returns (the first reason given is kept)."""
    if _worker.exit_reason is None:
        _worker.exit_reason = reason


def _ray_ready() -> bool:
    """``handle.__ray_ready__.remote()``: True once the constructor has run (as in Ray)."""
    return True


def _submit_concurrent(
    runner: _concurrency.Runner,
    current: _context.CurrentTask,
    task_id: bytes,
    method: str,
    group: str | None,
    name: str,
    call_args: tuple[Any, ...],
    call_kwargs: dict[str, Any],
    num_returns: int,
) -> None:
    """Hand a call of a threaded or async actor to its runner, which reports it when done."""
    group = runner.group_of(method, group)

    def invoke() -> Any:
        if task_id in _worker.cancelled:
            raise _CancelledBeforeStart()
        _context.set_current(current)
        return _actor_method(method)(*call_args, **call_kwargs)

    def outcome(result: Any) -> tuple[int, Any]:
        try:
            return (0, _serialize_returns(result, num_returns, name))
        finally:
            _worker.flush()

    def failure(e: BaseException) -> tuple[int, Any]:
        _worker.flush()
        import asyncio  # loaded already in an async actor

        if isinstance(e, (_CancelledBeforeStart, asyncio.CancelledError)) and task_id in _worker.cancelled:
            del _worker.cancelled[task_id]
            return (_native.CANCELLED, _cancelled_message(name))
        return (1, _errors.capture(e, name))

    def exiting() -> str | None:
        return _worker.exit_reason

    runner.submit(_concurrency.PendingCall(task_id, name, group, invoke, outcome, failure, exiting))


def _code(fn_id: bytes) -> Any:
    code = _worker.code.get(fn_id)
    if code is not None:
        return code
    blob = _worker.blobs.get(fn_id)
    if blob is None:
        raise RuntimeError(f"the node sent no code for function {fn_id.hex()} to this worker (internal error)")
    # A failure (a module missing here) leaves the blob for the next task to try again.
    code = _worker.code[fn_id] = pickle.loads(blob)
    del _worker.blobs[fn_id]
    return code
