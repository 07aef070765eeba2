"""Actors: ``ActorClass`` (what ``@peer.remote`` makes of a class), ``ActorHandle`` and ``ActorMethod``.

``Cls.remote(...)`` creates the actor on its own worker and returns a handle; ``handle.m.remote(...)``
queues a call (the node runs one call at a time, in submission order). Handles pickle to
``(actor id, class name, method table, handle ref)`` so they can be passed to tasks, returned,
and looked up by name with ``get_actor``.

Actor lifetimes follow Ray's: every handle holds an ``ObjectRef`` to the actor's handle object
(its id is the actor id followed by ``fe ff ff ff``). References to it are counted like any other
ref, across processes and peers; once the last one is gone, the actor finishes its queued calls and
its worker exits (running ``atexit`` hooks and ``__del__``). ``lifetime="detached"`` actors live
until ``kill()``.
"""

from __future__ import annotations

import inspect
import pickle
from typing import Any

from . import _native, _runtime, _serialization
from ._object_ref import ObjectRef
from ._options import Options
from ._remote_function import PickledCode, wrap_returns

_METHOD_OPTIONS_ATTR = "__peer_method_options__"


def method(**options: Any) -> Any:
    """Decorator for actor methods: ``@peer.method(num_returns=2)``."""
    opts = Options().updated("method", **options)

    def decorate(fn: Any) -> Any:
        setattr(fn, _METHOD_OPTIONS_ATTR, opts)
        return fn

    return decorate


def _method_table(cls: type) -> dict[str, int]:
    """Public methods of ``cls`` (inherited too) and their num_returns."""
    table: dict[str, int] = {}
    for name in dir(cls):
        if name.startswith("__") and name.endswith("__"):
            continue
        attr = inspect.getattr_static(cls, name, None)
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if not callable(attr):
            continue
        opts = getattr(attr, _METHOD_OPTIONS_ATTR, None)
        n = opts.num_returns if isinstance(opts, Options) and opts.num_returns is not None else 1
        table[name] = n
    return table


class ActorMethod:
    """``handle.method``: call ``.remote(*args)`` to queue a call on the actor."""

    __slots__ = ("_handle", "_name", "_num_returns", "_task_name")

    def __init__(self, handle: ActorHandle, name: str, num_returns: int, task_name: str | None = None) -> None:
        self._handle = handle
        self._name = name
        self._num_returns = num_returns
        self._task_name = task_name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor methods cannot be called directly. Instead of {self._name}(), use {self._name}.remote()."
        )

    def options(self, **options: Any) -> ActorMethod:
        opts = Options(num_returns=self._num_returns, name=self._task_name).updated("method", **options)
        assert opts.num_returns is not None
        return ActorMethod(self._handle, self._name, opts.num_returns, opts.name)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        handle = self._handle
        name = self._task_name or f"{handle._class_name}.{self._name}"
        data, buffers, deps, contained = _serialization.serialize_args(args, kwargs, name)
        ids = _native.submit_actor_task(
            handle._actor_id,
            self._name,
            data,
            buffers,
            deps,
            num_returns=self._num_returns,
            name=name,
            contained=contained,
        )
        return wrap_returns(ids, self._num_returns)


class ActorHandle:
    """A handle to a live actor; picklable, so it can be passed to tasks and other actors."""

    __slots__ = ("_actor_id", "_class_name", "_methods", "_ref", "__weakref__")

    def __init__(self, actor_id: bytes, class_name: str, methods: dict[str, int], ref: ObjectRef | None = None) -> None:
        self._actor_id = actor_id
        self._class_name = class_name
        self._methods = methods
        # Keeps the actor alive while this handle exists (see the module doc).
        self._ref = ref if ref is not None else ObjectRef(handle_object_id(actor_id))

    def __getattr__(self, name: str) -> ActorMethod:
        methods = object.__getattribute__(self, "_methods")
        if name in methods:
            return ActorMethod(self, name, methods[name])
        raise AttributeError(f"actor {self._class_name} has no method {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        # The ref travels inside the pickle, so whoever unpickles the handle holds the actor too.
        return (ActorHandle, (self._actor_id, self._class_name, self._methods, self._ref))

    def __repr__(self) -> str:
        return f"Actor({self._class_name}, {self._actor_id.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)


class ActorClass:
    """A class whose instances live in their own worker: ``Cls.remote(*args)`` returns a handle."""

    def __init__(self, cls: type, options: Options, code: PickledCode | None = None) -> None:
        self._cls = cls
        self._options = options
        self._code = code or PickledCode(cls)
        self._methods = _method_table(cls)
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__
        self.__module__ = cls.__module__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actors cannot be instantiated directly. Instead of {self.__name__}(), use {self.__name__}.remote()."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (ActorClass, (self._cls, self._options))

    def __repr__(self) -> str:
        return f"<peer actor class {self.__qualname__}>"

    def options(self, **options: Any) -> ActorClass:
        """A copy with some options changed, e.g. ``Cls.options(name="x").remote()``."""
        return ActorClass(self._cls, self._options.updated("actor", **options), self._code)

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """Create the actor; returns its handle at once (the constructor runs in the background)."""
        _runtime.ensure_initialized()
        opts = self._options
        if opts.name is not None and opts.get_if_exists:
            existing = lookup(opts.name)
            if existing is not None:
                return existing
        data, buffers, deps, contained = _serialization.serialize_args(args, kwargs, self.__name__)
        # The id is only known once create_actor returns, so the blob kept for get_actor()
        # holds the class name and method table; the node returns the id beside it.
        handle_blob = pickle.dumps((self.__name__, self._methods), protocol=5)
        actor_id = _native.create_actor(
            self._code.registered_id(),
            data,
            buffers,
            deps,
            num_cpus=0.0 if opts.num_cpus is None else float(opts.num_cpus),
            resources=opts.resource_demand(),
            max_restarts=opts.restarts(),
            name=opts.name,
            class_name=self.__name__,
            handle_blob=handle_blob,
            contained=contained,
            detached=opts.lifetime == "detached",
        )
        return ActorHandle(actor_id, self.__name__, self._methods)


def lookup(name: str) -> ActorHandle | None:
    """The handle of the live actor created with ``.options(name=name)``, or None."""
    _runtime.ensure_initialized()
    found: Any = _native.get_actor(name)
    if found is None:
        return None
    # The native layer keeps the actor id next to the blob (the id is only known after
    # create_actor returns, when the blob was already handed over).
    actor_id, blob = found
    class_name, methods = pickle.loads(blob)
    handle = ActorHandle(bytes(actor_id), class_name, methods)
    # The node kept the actor alive for this answer with one ref; the handle holds its own now.
    _native.release_ref(handle_object_id(bytes(actor_id)))
    return handle


def handle_object_id(actor_id: bytes) -> bytes:
    """The id of the object every handle of ``actor_id`` holds a ref to."""
    return actor_id + b"\xfe\xff\xff\xff"


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the named actor; ValueError if there is none."""
    del namespace
    if not isinstance(name, str) or not name:
        raise ValueError(f"get_actor() expects a non-empty actor name, got {name!r}")
    handle = lookup(name)
    if handle is None:
        raise ValueError(f"no live actor named {name!r}: create it with Cls.options(name={name!r}).remote()")
    return handle


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Stop the actor's process now (its exit hooks do not run); pending and later calls raise
    ActorDiedError."""
    if not isinstance(actor, ActorHandle):
        raise ValueError(f"kill() expects an actor handle, got {type(actor).__name__}")
    _runtime.ensure_initialized()
    _native.kill_actor(actor._actor_id, no_restart)

