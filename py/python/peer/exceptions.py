"""The one exception hierarchy of ``peer``: everything raised by the API derives from :class:`PeerError`.

Ray's names are aliases of the same classes (``RayError``, ``RayTaskError``, ``RayActorError``, ...),
so ``except ray.exceptions.RayTaskError`` works under ``import peer as ray``.

A task's exception is re-raised in the caller by :meth:`TaskError.as_instanceof_cause`: an instance
of a class derived from both :class:`TaskError` and the original exception type (named
``RayTaskError(ValueError)``, as in Ray), so both ``except TaskError`` and ``except ValueError``
catch a remote ``ValueError``. ``str()`` of it is Ray's layout: ``ray::f() (pid=...)`` and then
the remote traceback, ending with the original ``ValueError: message`` line.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = [
    "PeerError",
    "PeerSystemError",
    "TaskError",
    "SerializationError",
    "GetTimeoutError",
    "WorkerCrashedError",
    "ActorError",
    "ActorDiedError",
    "ActorUnavailableError",
    "ObjectStoreFullError",
    "ObjectLostError",
    "OwnerDiedError",
    "TaskCancelledError",
    "RuntimeEnvSetupError",
    "RayError",
    "RaySystemError",
    "RayTaskError",
    "RayActorError",
    "AsyncioActorExit",
]


class PeerError(Exception):
    """Base of every error raised by ``peer``."""


class PeerSystemError(PeerError):
    """Something inside ``peer`` itself went wrong (not the user's code)."""


class SerializationError(PeerError, TypeError):
    """A value (a task argument, return value or ``put`` value) could not be pickled or unpickled."""


class TaskError(PeerError):
    """A task or actor method raised; carries the remote traceback.

    ``cause`` is the original exception (rebuilt in this process; if it could not be rebuilt at
    all, a :class:`PeerError` that says what it was, as Ray does), ``traceback_str`` the traceback
    as formatted in the worker, ``function_name`` and ``pid`` say where it ran.
    """

    cause: BaseException | None
    traceback_str: str
    function_name: str
    pid: int | None

    def __init__(
        self,
        function_name: str = "<unknown>",
        traceback_str: str = "",
        cause: BaseException | None = None,
        pid: int | None = None,
    ) -> None:
        super().__init__(function_name, traceback_str)
        self._set(function_name, traceback_str, cause, pid)

    def _set(
        self,
        function_name: str,
        traceback_str: str,
        cause: BaseException | None,
        pid: int | None,
    ) -> None:
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.pid = pid

    def __str__(self) -> str:
        # Ray's layout: "ray::<task>() (pid=...)", then the traceback as the worker printed it.
        where = f"ray::{self.function_name}()" + (f" (pid={self.pid})" if self.pid is not None else "")
        cause = "" if self.cause is None else f"{type(self.cause).__name__}: {self.cause}"
        text = self.traceback_str.strip() or cause
        return f"{where}\n{text}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_task_error, (self.function_name, self.traceback_str, self.cause, self.pid))

    def as_instanceof_cause(self) -> TaskError:
        """This error as an instance of both :class:`TaskError` and the type of ``cause``.

        Returns ``self`` when it already is one (the cause is a ``TaskError``, or of a type
        ``TaskError`` derives from, such as ``Exception`` or ``PeerError``: Ray's rule), and when
        that type cannot be subclassed (e.g. it is final or has an incompatible layout).
        """
        cause = self.cause
        if cause is None or isinstance(cause, TaskError) or issubclass(TaskError, type(cause)):
            return self
        cls = _dual_class(type(cause))
        if cls is None:
            return self
        err = cls.__new__(cls)
        TaskError._set(err, self.function_name, self.traceback_str, cause, self.pid)
        err.args = cause.args
        return err


def _rebuild_task_error(
    function_name: str, traceback_str: str, cause: BaseException | None, pid: int | None
) -> TaskError:
    return TaskError(function_name, traceback_str, cause, pid).as_instanceof_cause()


_dual_classes: dict[type, type[TaskError] | None] = {}
_dual_lock = threading.Lock()


def _dual_class(cause_type: type[BaseException]) -> type[TaskError] | None:
    """The cached subclass of (TaskError, ``cause_type``), or None if Python refuses to make one."""
    with _dual_lock:
        if cause_type in _dual_classes:
            return _dual_classes[cause_type]

        def __getattr__(self: TaskError, name: str) -> Any:
            # Attributes of the original exception (``e.errno``, custom fields) read through.
            cause = self.__dict__.get("cause")
            if cause is None:
                raise AttributeError(name)
            return getattr(cause, name)

        namespace: dict[str, Any] = {
            "__getattr__": __getattr__,
            "__init__": TaskError.__init__,
            "__str__": TaskError.__str__,
            "__reduce__": TaskError.__reduce__,
            "__module__": cause_type.__module__,
            "__qualname__": f"RayTaskError({cause_type.__qualname__})",
        }
        try:
            cls: type[TaskError] | None = type(
                f"RayTaskError({cause_type.__name__})", (TaskError, cause_type), namespace
            )
        except Exception:  # noqa: BLE001 - a layout conflict, or an __init_subclass__ that refuses
            cls = None
        _dual_classes[cause_type] = cls
        return cls


class GetTimeoutError(PeerError, TimeoutError):
    """``get`` (or ``await ref``) did not see the value within ``timeout`` seconds."""


class WorkerCrashedError(PeerError):
    """The worker process running the task died (and its retries, if any, were used up)."""


class ActorError(PeerError):
    """An actor could not run a method call."""


class ActorDiedError(ActorError):
    """The actor's process died or it was killed; later calls on the handle fail with this too."""


class ActorUnavailableError(ActorError):
    """The call went to an actor whose connection broke: it may or may not have run. The actor
    itself may still be alive; call again if running the method twice is safe."""


class ObjectStoreFullError(PeerError):
    """The shared-memory object store has no room for the object."""


class ObjectLostError(PeerError):
    """The object's value no longer exists anywhere and could not be rebuilt."""


class OwnerDiedError(ObjectLostError):
    """The process that owned the object (and knew how to rebuild it) is gone."""


class TaskCancelledError(PeerError):
    """The task producing the object was cancelled with ``peer.cancel``."""


class RuntimeEnvSetupError(PeerError):
    """A task's ``runtime_env`` could not be set up on the peer that was to run it (a failed pip
    install, a package that could not be fetched); the message says why. Not retried."""


# Ray's names for the same classes.
RayError = PeerError
RaySystemError = PeerSystemError
RayTaskError = TaskError
RayActorError = ActorError


class AsyncioActorExit(PeerError):
    """Raised by ``peer.actor.exit_actor()`` inside an async actor's method (Ray's name); catching
    it does not stop the exit."""
