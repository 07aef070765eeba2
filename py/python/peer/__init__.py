"""peer: Ray's core API — tasks, actors and a shared-memory object store — with no head node.

``import peer as ray`` runs Ray core code unchanged::

    import peer as ray

    @ray.remote
    def f(x):
        return x + 1

    ray.get([f.remote(i) for i in range(8)])

Module map: ``_runtime`` (init/shutdown and per-process state), ``_api`` (get/put/wait/...),
``_remote_function`` and ``_actor`` (``@remote``), ``_options`` (the options dataclass),
``_serialization`` and ``_errors`` (values and errors across processes), ``_object_ref``,
``_context`` (runtime context), ``_worker`` / ``_forkserver`` (worker processes),
``exceptions`` (the public error hierarchy), ``_native`` (the Rust node).
"""

from __future__ import annotations

import inspect
from typing import Any

from . import actor, exceptions
from ._actor import ActorClass, ActorHandle, get_actor, kill, method
from ._api import available_resources, cancel, cluster_resources, get, nodes, put, wait
from ._context import RuntimeContext, get_runtime_context
from ._gpus import get_gpu_ids
from ._object_ref import ObjectRef
from ._observe import timeline
from ._options import Options
from ._remote_function import RemoteFunction
from ._runtime import init, is_initialized, shutdown

__all__ = [
    "ActorClass",
    "ActorHandle",
    "ObjectRef",
    "RemoteFunction",
    "RuntimeContext",
    "actor",
    "available_resources",
    "cancel",
    "cluster_resources",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "timeline",
    "wait",
]


def _make_remote(target: Any, options: dict[str, Any]) -> RemoteFunction | ActorClass:
    if inspect.isclass(target):
        return ActorClass(target, Options().updated("actor", **options))
    if callable(target):
        return RemoteFunction(target, Options().updated("function", **options))
    raise TypeError(f"@peer.remote applies to functions and classes, not {type(target).__name__}")


def remote(*args: Any, **options: Any) -> Any:
    """Make a function a remote function, or a class an actor class.

    Use as ``@peer.remote`` or with options, e.g. ``@peer.remote(num_cpus=2, num_returns=2)``.
    Functions accept ``num_cpus, num_gpus, accelerator_type, memory, resources, num_returns, max_retries,
    retry_exceptions, name``; classes ``num_cpus, num_gpus, accelerator_type, memory, resources, max_restarts, name,
    get_if_exists, lifetime``.
    """
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError(
            "@peer.remote takes either no arguments (@peer.remote) or keyword options only, "
            "e.g. @peer.remote(num_cpus=1)"
        )
    return lambda target: _make_remote(target, options)


def __getattr__(name: str) -> Any:
    """``peer.util`` on first use, as ``ray.util`` works after ``import ray`` (imported lazily:
    most programs never need it, and ``import peer`` stays fast)."""
    if name == "util":
        import importlib

        return importlib.import_module(".util", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
