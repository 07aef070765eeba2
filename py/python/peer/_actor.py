"""Actors: ``ActorClass`` (what ``@peer.remote`` makes of a class), ``ActorHandle`` and ``ActorMethod``.

``Cls.remote(...)`` creates the actor on its own worker and returns a handle; ``handle.m.remote(...)``
queues a call (the node sends calls to the actor's worker in submission order; a plain actor runs
them one at a time, a threaded or async one concurrently, see ``_concurrency``). Handles pickle to
``(actor id, class name, method table, handle ref, method signatures, max_task_retries)`` so they
can be passed to
tasks, returned, and looked up by name with ``get_actor``; the signatures let every holder check a
call's arguments before submitting it, as Ray does.

Named actors live in a namespace (Ray's rules): ``.options(name=..., namespace=...)`` and
``get_actor(name, namespace=...)``, by default the job's namespace (see ``peer.init``); tasks and
actors run in the namespace of the job that submitted them. The node keeps the name as
``namespace NUL name``, so equal names in different namespaces do not collide.

Actor lifetimes follow Ray's: every handle holds an ``ObjectRef`` to the actor's handle object
(its id is the actor id followed by ``fe ff ff ff``). References to it are counted like any other
ref, across processes and peers; once the last one is gone, the actor finishes its queued calls and
its worker exits (running ``atexit`` hooks and ``__del__``). ``lifetime="detached"`` actors live
until ``kill()``.
"""

from __future__ import annotations

import inspect
import pickle
import weakref
from collections.abc import Iterable
from typing import Any

from . import _concurrency, _native, _runtime, _runtime_env, _serialization
from ._object_ref import ObjectRef
from ._options import Options
from ._remote_function import ArgSpec, PickledCode, wrap_returns

_METHOD_OPTIONS_ATTR = "__peer_method_options__"


def method(**options: Any) -> Any:
    """Decorator for actor methods: ``@peer.method(num_returns=2)``."""
    opts = Options().updated("method", **options)

    def decorate(fn: Any) -> Any:
        setattr(fn, _METHOD_OPTIONS_ATTR, opts)
        if opts.concurrency_group is not None:
            setattr(fn, _concurrency.GROUP_ATTR, opts.concurrency_group)
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
    # Ray's built-in methods every actor has.
    table.setdefault("__ray_ready__", 1)
    table.setdefault("__ray_terminate__", 1)
    return table


def _method_specs(cls: type, names: Iterable[str]) -> dict[str, ArgSpec]:
    """The signature each method's calls must bind to, without ``self`` (or ``cls``)."""
    specs: dict[str, ArgSpec] = {}
    for name in names:
        raw = inspect.getattr_static(cls, name, None)
        where = f"{cls.__name__}.{name}"
        spec: ArgSpec | None
        if isinstance(raw, staticmethod):
            spec = ArgSpec.of(raw.__func__, where)
        elif isinstance(raw, classmethod):
            spec = ArgSpec.of(raw.__func__, where, bound=True)
        elif inspect.isfunction(raw):
            spec = ArgSpec.of(raw, where, bound=True)
        elif raw is None or hasattr(type(raw), "__get__"):
            spec = None  # not on the class, or a descriptor that may bind in its own way
        else:
            spec = ArgSpec.of(raw, where)  # a callable object stored on the class: not bound
        if spec is not None:
            specs[name] = spec
    return specs


def _init_spec(cls: type) -> ArgSpec | None:
    """What ``Cls.remote(...)`` must bind to: the ``__init__`` the class has (its own or a base's)."""
    where = f"{cls.__name__}.__init__"
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            if klass is object:
                # No __init__ at all: like Ray's actors, it takes no arguments (unless a __new__ does).
                new: Any = cls.__new__
                return ArgSpec(where, ()) if new is object.__new__ else None
            raw = vars(klass)["__init__"]
            return ArgSpec.of(raw, where, bound=True) if inspect.isfunction(raw) else None
    return None


# Per class, read once per process: (constructor spec, method specs); shared by .options() copies.
_class_specs: weakref.WeakKeyDictionary[type, tuple[ArgSpec | None, dict[str, ArgSpec]]] = (
    weakref.WeakKeyDictionary()
)


def _specs_of(cls: type, methods: Iterable[str]) -> tuple[ArgSpec | None, dict[str, ArgSpec]]:
    found = _class_specs.get(cls)
    if found is None:
        found = _class_specs[cls] = (_init_spec(cls), _method_specs(cls, methods))
    return found


def qualified_name(name: str, namespace: str) -> str:
    """The name the node keeps for actor ``name`` of ``namespace`` (namespaces hold no NUL)."""
    return f"{namespace}\x00{name}"


class ActorMethod:
    """``handle.method``: call ``.remote(*args)`` to queue a call on the actor."""

    __slots__ = ("_handle", "_name", "_num_returns", "_task_name", "_group")

    def __init__(
        self,
        handle: ActorHandle,
        name: str,
        num_returns: int,
        task_name: str | None = None,
        group: str | None = None,
    ) -> None:
        self._handle = handle
        self._name = name
        self._num_returns = num_returns
        self._task_name = task_name
        self._group = group

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor methods cannot be called directly. Instead of {self._name}(), use {self._name}.remote()."
        )

    def options(self, **options: Any) -> ActorMethod:
        opts = Options(num_returns=self._num_returns, name=self._task_name, concurrency_group=self._group).updated(
            "method", **options
        )
        assert opts.num_returns is not None
        return ActorMethod(self._handle, self._name, opts.num_returns, opts.name, opts.concurrency_group)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Queue the call; TypeError at once (nothing sent) if the arguments do not fit the method."""
        handle = self._handle
        spec = handle._specs.get(self._name)
        if spec is not None:
            spec.check(args, kwargs)
        name = self._task_name or f"{handle._class_name}.{self._name}"
        data, buffers, deps, contained = _serialization.serialize_args(args, kwargs, name)
        # A call's own concurrency group travels with the method name (the worker splits them).
        method = self._name if self._group is None else f"{self._name}{_concurrency.GROUP_SEPARATOR}{self._group}"
        ids = _native.submit_actor_task(
            handle._actor_id,
            method,
            data,
            buffers,
            deps,
            num_returns=self._num_returns,
            name=name,
            contained=contained,
            max_retries=handle._task_retries,
        )
        return wrap_returns(ids, self._num_returns)


class ActorHandle:
    """A handle to a live actor; picklable, so it can be passed to tasks and other actors."""

    __slots__ = ("_actor_id", "_class_name", "_methods", "_ref", "_specs", "_task_retries", "__weakref__")

    def __init__(
        self,
        actor_id: bytes,
        class_name: str,
        methods: dict[str, int],
        ref: ObjectRef | None = None,
        specs: dict[str, ArgSpec] | None = None,
        task_retries: int = 0,
    ) -> None:
        self._actor_id = actor_id
        self._class_name = class_name
        self._methods = methods
        # Keeps the actor alive while this handle exists (see the module doc).
        self._ref = ref if ref is not None else ObjectRef(handle_object_id(actor_id))
        # Method name -> the signature its calls must bind to (methods without one are not checked).
        self._specs = specs if specs is not None else {}
        # The actor's max_task_retries: each call runs again this often if the actor dies under it.
        self._task_retries = task_retries

    def __getattr__(self, name: str) -> ActorMethod:
        methods = object.__getattribute__(self, "_methods")
        if name in methods:
            return ActorMethod(self, name, methods[name])
        raise AttributeError(f"actor {self._class_name} has no method {name!r}")

    def __dir__(self) -> list[str]:
        return sorted(self._methods)  # tab completion lists the methods, as in Ray

    def __reduce__(self) -> tuple[Any, ...]:
        # The ref travels inside the pickle, so whoever unpickles the handle holds the actor too.
        return (
            ActorHandle,
            (self._actor_id, self._class_name, self._methods, self._ref, self._specs, self._task_retries),
        )

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
        # (the job's environment, this class's merged over it), worked out on first use.
        self._env: tuple[_runtime_env.Resolved | None, _runtime_env.Resolved | None] | None = None
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__
        self.__module__ = cls.__module__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actors cannot be instantiated directly. Instead of {self.__name__}(), use {self.__name__}.remote()."
        )

    def __getattr__(self, name: str) -> Any:
        # Called only for names the actor class itself lacks: class attributes, static methods and
        # class methods of the user's class read through, as in Ray (whose actor class derives
        # from the user's), e.g. ``Cls.LIMIT`` or ``Cls.helper()`` inside the actor's own methods.
        cls = self.__dict__.get("_cls")
        if cls is None or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        try:
            return getattr(cls, name)
        except AttributeError:
            raise AttributeError(f"actor class {cls.__name__} has no attribute {name!r}") from None

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        raise TypeError(
            f"Inheriting from actor classes is not currently supported (as in Ray): {self.__name__} is an "
            "actor class. Inherit from the plain class and decorate the subclass with @peer.remote instead."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (ActorClass, (self._cls, self._options))

    def __repr__(self) -> str:
        return f"<peer actor class {self.__qualname__}>"

    def options(self, **options: Any) -> ActorClass:
        """A copy with some options changed, e.g. ``Cls.options(name="x").remote()``."""
        return ActorClass(self._cls, self._options.updated("actor", **options), self._code)

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """Create the actor; returns its handle at once (the constructor runs in the background).

        Raises TypeError, before anything is submitted, if the arguments do not fit ``__init__``;
        ValueError if the name is taken in its namespace (unless ``get_if_exists=True``, which
        returns the existing actor, as in Ray).
        """
        _runtime.ensure_initialized()
        opts = self._options
        job_namespace = _runtime.current_namespace()
        namespace = job_namespace
        if opts.namespace is not None:
            _runtime.check_namespace(opts.namespace, f"{self.__name__}.options()")
            namespace = opts.namespace
        if opts.name is not None and opts.get_if_exists:
            existing = lookup(opts.name, namespace)
            if existing is not None:
                return existing
        init_spec, specs = _specs_of(self._cls, self._methods)
        if init_spec is not None:
            init_spec.check(args, kwargs)
        if opts.max_concurrency is not None or opts.concurrency_groups:
            # How the worker runs the calls: sent ahead of the constructor's arguments.
            setup = _concurrency.ActorSetup(opts.max_concurrency, dict(opts.concurrency_groups or {}))
            args = (setup, *args)
        # The actor runs in its creator's namespace (the name may be registered in another one).
        data, buffers, deps, contained = _serialization.serialize_args(
            args, kwargs, self.__name__, namespace=job_namespace
        )
        # The id is only known once create_actor returns, so the blob kept for get_actor()
        # holds the class name, method table and signatures; the node returns the id beside it.
        task_retries = opts.task_retries()
        handle_blob = pickle.dumps((self.__name__, self._methods, specs, task_retries), protocol=5)
        env = _runtime.job_env()
        if opts.runtime_env is not None:
            if self._env is None or self._env[0] is not env:
                raw = _runtime_env.validate(opts.runtime_env, f"{self.__name__}.options()")
                self._env = (env, _runtime_env.resolve(env, raw))
            env = self._env[1]
        env_kw = {} if env is None else {"runtime_env": env.handle}
        try:
            actor_id = _native.create_actor(
                self._code.registered_id(),
                data,
                buffers,
                deps,
                num_cpus=0.0 if opts.num_cpus is None else float(opts.num_cpus),
                resources=opts.resource_demand(),
                max_restarts=opts.restarts(),
                name=None if opts.name is None else qualified_name(opts.name, namespace),
                class_name=self.__name__,
                handle_blob=handle_blob,
                contained=contained,
                detached=opts.lifetime == "detached",
                **env_kw,
            )
        except ValueError as e:
            if opts.name is None or "already exists" not in str(e):
                raise
            if opts.get_if_exists:  # another caller created it first: use theirs, as Ray does
                existing = lookup(opts.name, namespace)
                if existing is not None:
                    return existing
            raise ValueError(
                f"The name {opts.name} (namespace={namespace}) is already taken. Please use a different "
                f"name or get the existing actor using ray.get_actor({opts.name!r}, namespace={namespace!r})"
            ) from None
        return ActorHandle(actor_id, self.__name__, self._methods, specs=specs, task_retries=task_retries)


def lookup(name: str, namespace: str | None = None) -> ActorHandle | None:
    """The handle of the live actor created with ``.options(name=name)`` in ``namespace`` (default:
    the job's), or None."""
    _runtime.ensure_initialized()
    if namespace is None:
        namespace = _runtime.current_namespace()
    found: Any = _native.get_actor(qualified_name(name, namespace))
    if found is None:
        return None
    # The native layer keeps the actor id next to the blob (the id is only known after
    # create_actor returns, when the blob was already handed over).
    actor_id, blob = found
    stored = pickle.loads(blob)  # (class name, method table, signatures); older peers sent no signatures
    specs = stored[2] if len(stored) > 2 else None
    task_retries = stored[3] if len(stored) > 3 else 0
    handle = ActorHandle(bytes(actor_id), stored[0], stored[1], specs=specs, task_retries=task_retries)
    # The node kept the actor alive for this answer with one ref; the handle holds its own now.
    _native.release_ref(handle_object_id(bytes(actor_id)))
    return handle


def handle_object_id(actor_id: bytes) -> bytes:
    """The id of the object every handle of ``actor_id`` holds a ref to."""
    return actor_id + b"\xfe\xff\xff\xff"


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the actor named ``name`` in ``namespace`` (None: the current namespace, as in
    Ray); ValueError if there is none."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"get_actor() expects a non-empty actor name, got {name!r}")
    if namespace is not None:
        _runtime.check_namespace(namespace, "get_actor()")
    handle = lookup(name, namespace)
    if handle is None:
        where = "the current namespace" if namespace is None else f"namespace {namespace!r}"
        raise ValueError(
            f"no live actor named {name!r} in {where}: create it with Cls.options(name={name!r}).remote(), "
            "or pass the namespace it was created in: get_actor(name, namespace=...)"
        )
    return handle


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Stop the actor's process now (its exit hooks do not run); pending and later calls raise
    ActorDiedError."""
    if not isinstance(actor, ActorHandle):
        raise ValueError(f"kill() expects an actor handle, got {type(actor).__name__}")
    _runtime.ensure_initialized()
    _native.kill_actor(actor._actor_id, no_restart)

