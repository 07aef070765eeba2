"""``RemoteFunction``: what ``@peer.remote`` makes of a function; ``.remote()`` submits a task.

The function is cloudpickled once per process (content id = blake2b of the blob) and sent to the
node once per runtime; each task then carries only the id and its arguments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from . import _native, _pickler, _runtime, _serialization
from ._object_ref import ObjectRef
from ._options import Options


def content_id(blob: bytes) -> bytes:
    """The id a pickled function or class is known by: blake2b, 16 bytes."""
    return hashlib.blake2b(blob, digest_size=16).digest()


class PickledCode:
    """A function or class pickled on first use, with its content id (cached per process)."""

    __slots__ = ("_obj", "_blob", "_id")

    def __init__(self, obj: Any) -> None:
        self._obj = obj
        self._blob: bytes | None = None
        self._id: bytes | None = None

    def registered_id(self) -> bytes:
        """The content id, after making sure the current runtime knows the blob."""
        if self._id is None or self._blob is None:
            blob = _pickler.dumps(self._obj)
            self._blob, self._id = blob, content_id(blob)
        _runtime.register_function(self._id, self._blob)
        return self._id


def wrap_returns(ids: list[bytes], num_returns: int) -> ObjectRef | list[ObjectRef] | None:
    """Ray's return shape: one ref, a list of refs, or None for ``num_returns=0``."""
    if num_returns == 1:
        return ObjectRef(ids[0])
    if num_returns == 0:
        return None
    return [ObjectRef(i) for i in ids]


class RemoteFunction:
    """A function that runs as a task: call ``f.remote(*args)`` to get an ObjectRef."""

    def __init__(self, function: Callable[..., Any], options: Options, code: PickledCode | None = None) -> None:
        self._function = function
        self._options = options
        self._code = code or PickledCode(function)
        self.__name__ = getattr(function, "__name__", "remote_function")
        self.__qualname__ = getattr(function, "__qualname__", self.__name__)
        self.__doc__ = function.__doc__
        self.__module__ = getattr(function, "__module__", __name__)
        self.__wrapped__ = function
        # Options are immutable: work out the submit arguments once, not per call.
        self._num_returns = 1 if options.num_returns is None else options.num_returns
        self._task_name = options.name or self.__name__
        self._submit_options: dict[str, Any] = {
            "num_returns": self._num_returns,
            "num_cpus": 1.0 if options.num_cpus is None else float(options.num_cpus),
            "resources": options.resource_demand(),
            "max_retries": options.retries(),
            "retry_exceptions": bool(options.retry_exceptions),
            "name": self._task_name,
        }

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"remote functions cannot be called directly. Instead of {self.__name__}(), "
            f"use {self.__name__}.remote()."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteFunction, (self._function, self._options))

    def __repr__(self) -> str:
        return f"<peer remote function {self.__qualname__}>"

    def options(self, **options: Any) -> RemoteFunction:
        """A copy with some options changed, e.g. ``f.options(num_cpus=2).remote()``."""
        return RemoteFunction(self._function, self._options.updated("function", **options), self._code)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Submit a task; returns an ObjectRef (a list of them if ``num_returns > 1``)."""
        _runtime.ensure_initialized()
        data, buffers, deps, contained = _serialization.serialize_args(args, kwargs, self._task_name)
        ids = _native.submit_task(
            self._code.registered_id(), data, buffers, deps, contained=contained, **self._submit_options
        )
        return wrap_returns(ids, self._num_returns)
