"""Errors across processes: the wrapper a worker pickles for a failed task, and error values → exceptions.

Worker side, :func:`capture` turns an exception into ``(message, blob)`` where ``blob`` is a
cloudpickled :class:`RemoteError`: the exception itself when it survives a pickle round trip;
otherwise (it holds a lock or a socket, or its ``__init__`` needs arguments unpickling does not
pass) a *shell* of it: its class, its args and the attributes that pickle, from which the caller
rebuilds an instance of the same type without calling ``__init__``. Always with its type name and
repr, the formatted traceback, function name and pid. Caller side, :func:`from_error_info` maps the
native ``ErrorInfo`` of an error value to the matching ``peer.exceptions`` class.
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
    # Set when exception_pickle is None: (class pickle, args, picklable attributes), and why.
    shell: bytes | None = None
    pickle_error: str | None = None


# The end of a traceback that travels in an error's message (the whole one is in its blob).
_MESSAGE_TRACEBACK = 8 * 1024


def capture(error: BaseException, function_name: str) -> tuple[str, bytes]:
    """``(message, blob)`` for the executor's ``(1, ...)`` reply."""
    if isinstance(error, exc.TaskError) and error.cause is not None:
        # A nested get re-raised a remote error: report the original cause, keep both tracebacks.
        cause: BaseException = error.cause
        tb = f"{_format(error)}\nwhich came from:\n{error.traceback_str}"
    else:
        cause = error
        tb = _format(error)
    shell: bytes | None = None
    pickle_error: str | None = None
    exception_pickle: bytes | None
    try:
        exception_pickle = blob = _pickler.dumps(cause)
        # Round trip here: an exception whose __init__ needs other arguments than its args
        # pickles fine but cannot be unpickled; better to find that out where it was raised.
        pickle.loads(blob)
    except Exception as e:  # noqa: BLE001 - any failure means "send a shell of it instead"
        exception_pickle = None
        pickle_error = f"{type(e).__name__}: {_safe_str(e)}"
        shell = _shell(cause)
    cls = type(cause)
    remote = RemoteError(
        exception_pickle=exception_pickle,
        type_module=cls.__module__,
        type_qualname=cls.__qualname__,
        exception_repr=_safe_repr(cause),
        traceback_str=tb,
        function_name=function_name,
        pid=os.getpid(),
        shell=shell,
        pickle_error=pickle_error,
    )
    # The first line says what happened; the traceback follows for those that cannot unpickle the
    # blob (the node: `peer list tasks`, the dashboard's failures).
    message = f"{function_name}() raised {cls.__name__}: {_safe_str(cause)}\n\n{tb[-_MESSAGE_TRACEBACK:]}"
    return message, _pickler.dumps(remote)


def _pickles(value: object) -> bool:
    try:
        _pickler.dumps(value)
        return True
    except Exception:  # noqa: BLE001
        return False


def _shell(error: BaseException) -> bytes | None:
    """``(class pickle, args, state)`` of an exception that does not pickle whole: args that do not
    pickle become their repr, attributes that do not pickle are left out."""
    try:
        cls_pickle = _pickler.dumps(type(error))
        args = tuple(a if _pickles(a) else _safe_repr(a) for a in error.args)
        state = {k: v for k, v in getattr(error, "__dict__", {}).items() if _pickles(v)}
        return _pickler.dumps((cls_pickle, args, state))
    except Exception:  # noqa: BLE001 - then the caller rebuilds it from the type name
        return None


def _bare_instance(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException | None:
    """An instance of ``cls`` made without calling ``__init__`` (which may need other arguments)."""
    for new_args in ((), args):
        try:
            obj = cls.__new__(cls, *new_args)
        except Exception:  # noqa: BLE001 - try the next way
            continue
        if isinstance(obj, cls):
            obj.args = args
            return obj
    return None


def _from_shell(shell: bytes) -> BaseException | None:
    try:
        cls_pickle, args, state = pickle.loads(shell)
        cls = pickle.loads(cls_pickle)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            return None
        obj = _bare_instance(cls, tuple(args))
        if obj is not None and state:
            try:
                obj.__dict__.update(state)
            except AttributeError:
                pass  # no __dict__ (slots): the args are what there is
        return obj
    except Exception:  # noqa: BLE001 - the class cannot be loaded here
        return None


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
    if remote.shell is not None:
        rebuilt = _from_shell(remote.shell)
        if rebuilt is not None:
            return rebuilt
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
    name = f"{remote.type_module}.{remote.type_qualname}"
    if cause is None:
        # Ray's answer to an exception it cannot send: the cause becomes an error saying so.
        why = f" ({remote.pickle_error})" if remote.pickle_error else ""
        note = f"the exception {name} raised by {remote.function_name}() could not be rebuilt here{why}"
        tb += f"\n({note}; its repr: {remote.exception_repr})"
        cause = exc.PeerError(f"{note}. It was: {remote.exception_repr}")
    elif remote.pickle_error is not None:
        tb += (
            f"\n({name} could not be pickled whole ({remote.pickle_error}); it was rebuilt here from "
            "its type, args and the attributes that pickle)"
        )
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
