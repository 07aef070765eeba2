"""Errors across processes: the wrapper a worker pickles for a failed task, and error values → exceptions.

Worker side, :func:`capture` turns an exception into ``(message, blob)`` where ``blob`` is a
cloudpickled :class:`RemoteError` (the exception itself when it pickles, else its type name and
repr, plus the formatted traceback, function name and pid). Caller side, :func:`from_error_info`
maps the native ``ErrorInfo`` of an error value to the matching ``peer.exceptions`` class.
"""

from __future__ import annotations

import importlib
import os
import pickle
import traceback
from dataclasses import dataclass
from typing import Any

from . import _native, _pickler
from . import exceptions as exc


@dataclass(frozen=True)
class RemoteError:
    """What a worker sends back about an exception raised by user code."""

    exception_pickle: bytes | None
    type_module: str
    type_qualname: str
    exception_repr: str
    traceback_str: str
    function_name: str
    pid: int


def capture(error: BaseException, function_name: str) -> tuple[str, bytes]:
    """``(message, blob)`` for the executor's ``(1, ...)`` reply."""
    if isinstance(error, exc.TaskError) and error.cause is not None:
        # A nested get re-raised a remote error: report the original cause, keep both tracebacks.
        cause: BaseException = error.cause
        tb = f"{_format(error)}\nwhich came from:\n{error.traceback_str}"
    else:
        cause = error
        tb = _format(error)
    try:
        exception_pickle: bytes | None = _pickler.dumps(cause)
    except Exception:  # noqa: BLE001 - any pickling failure means "send the repr instead"
        exception_pickle = None
    cls = type(cause)
    remote = RemoteError(
        exception_pickle=exception_pickle,
        type_module=cls.__module__,
        type_qualname=cls.__qualname__,
        exception_repr=_safe_repr(cause),
        traceback_str=tb,
        function_name=function_name,
        pid=os.getpid(),
    )
    message = f"{function_name}() raised {cls.__name__}: {_safe_str(cause)}"
    return message, _pickler.dumps(remote)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _format(error: BaseException) -> str:
    """The traceback from the first frame of user code on (peer's own frames are noise)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb or error.__traceback__))


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the error
        return f"<{type(value).__name__} with a failing __repr__>"


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001
        return _safe_repr(value)


def _rebuild_cause(remote: RemoteError) -> BaseException | None:
    if remote.exception_pickle is not None:
        try:
            cause = pickle.loads(remote.exception_pickle)
            if isinstance(cause, BaseException):
                return cause
        except Exception:  # noqa: BLE001 - fall back to an instance made from the type name
            pass
    try:
        obj: Any = importlib.import_module(remote.type_module)
        for part in remote.type_qualname.split("."):
            obj = getattr(obj, part)
    except Exception:  # noqa: BLE001 - the type does not exist here
        return None
    if not (isinstance(obj, type) and issubclass(obj, BaseException)):
        return None
    try:
        cause = obj.__new__(obj)
        cause.args = (remote.exception_repr,)
        return cause
    except Exception:  # noqa: BLE001
        return None


def task_error(blob: bytes | None, message: str) -> exc.TaskError:
    """The exception to raise for an ``ERR_TASK`` value."""
    try:
        remote = pickle.loads(blob) if blob is not None else None
    except Exception:  # noqa: BLE001 - the wrapper itself could not be loaded here
        remote = None
    if not isinstance(remote, RemoteError):
        return exc.TaskError("<unknown>", message, None, None)
    cause = _rebuild_cause(remote)
    tb = remote.traceback_str
    if cause is None:
        tb += f"\n(the exception {remote.type_module}.{remote.type_qualname} could not be rebuilt here)"
    return exc.TaskError(remote.function_name, tb, cause, remote.pid).as_instanceof_cause()


# Error kind -> (exception class, fallback message when the node sent none).
_KINDS: dict[str, tuple[type[exc.PeerError], str]] = {
    _native.ERR_WORKER_CRASHED: (
        exc.WorkerCrashedError,
        "check the worker's output above for a crash (segfault, os._exit, out of memory); "
        "set max_retries to retry such tasks",
    ),
    _native.ERR_ACTOR_DIED: (
        exc.ActorDiedError,
        "the actor was killed, its constructor raised, or its process exited; create a new actor",
    ),
    _native.ERR_ACTOR_UNAVAILABLE: (
        exc.ActorUnavailableError,
        "the link to the actor's peer broke; the call may or may not have run",
    ),
    _native.ERR_STORE_FULL: (
        exc.ObjectStoreFullError,
        "drop references to objects you no longer need, or pass a larger object_store_memory to init()",
    ),
    _native.ERR_CANCELLED: (exc.TaskCancelledError, "the task was cancelled with peer.cancel()"),
    _native.ERR_OBJECT_LOST: (
        exc.ObjectLostError,
        "the value is gone and could not be recomputed; keep a reference or re-run the task",
    ),
    _native.ERR_OWNER_DIED: (
        exc.OwnerDiedError,
        "the peer that created this ref is gone, and with it what the object was and where it was",
    ),
}


def from_error_info(info: Any) -> exc.PeerError:
    """Map a native ``ErrorInfo`` to the exception to raise in the caller."""
    kind: str = info.kind
    message: str = info.message
    if kind == _native.ERR_TASK:
        return task_error(info.blob, message)
    known = _KINDS.get(kind)
    if known is None:
        return exc.PeerSystemError(f"unexpected error kind {kind!r} from the node: {message}")
    cls, hint = known
    return cls(message or hint)  # the node's messages already say what to check next
