"""The process's connection to a node: ``init``, ``shutdown``, auto-init, and the little state they keep.

All mutable per-process state of the Python package lives in :data:`_state`; everything else
(tasks, objects, actors) lives in the native runtime (``peer._native``). In a worker process the
native runtime is set up by ``_native.worker_main``; ``_state.in_worker`` marks that case so the
API never tries to start a second node there.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from . import _native

logger = logging.getLogger("peer")

STATE_DIR_ENV = "PEER_STATE_DIR"


@dataclass
class _State:
    info: dict[str, Any] | None = None
    namespace: str | None = None
    in_worker: bool = False
    registered: set[bytes] = field(default_factory=set)
    atexit_registered: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)


_state = _State()


def default_state_dir() -> str:
    """``$PEER_STATE_DIR`` if set, else ``~/.peer``."""
    return os.environ.get(STATE_DIR_ENV) or os.path.join(os.path.expanduser("~"), ".peer")


def _node_resources(
    num_gpus: float | None, resources: dict[str, float] | None
) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, amount in (resources or {}).items():
        if key in ("CPU", "GPU"):
            raise ValueError(
                f"resources must not contain {key!r}: use the num_cpus / num_gpus arguments instead"
            )
        out[str(key)] = float(amount)
    if num_gpus:
        out["GPU"] = float(num_gpus)
    return out


def init(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    ignore_reinit_error: bool = False,
    include_dashboard: bool | None = None,
    log_to_driver: bool = True,
    namespace: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    logging_level: int | str | None = None,
    bootstrap: list[str] | None = None,
    key: str | None = None,
    listen: list[str] | None = None,
    mdns: bool = True,
    _state_dir: str | None = None,
) -> dict[str, Any]:
    """Connect this process to a node and return the node's description.

    ``address``: None attaches to the ``peer up`` daemon of the state directory if one runs and
    otherwise starts a node inside this process; ``"auto"`` requires the daemon; ``"local"``
    always starts an in-process node; anything else is the path of a node's Unix socket.
    ``include_dashboard`` and ``log_to_driver`` are accepted for Ray compatibility (there is no
    dashboard; worker output always reaches the node's terminal).

    ``bootstrap``: multiaddrs of cluster members (``/ip4/…/tcp/…/p2p/…``); the in-process node
    then joins that cluster as a full peer, with the cluster ``key`` (64 hex characters or a key
    file; default: the state directory's key), listening on ``listen`` (default
    ``/ip4/0.0.0.0/tcp/0``) and, unless ``mdns=False``, finding LAN peers by mDNS. Without
    ``bootstrap`` (and without ``listen``) no network port is opened at all.
    """
    del include_dashboard, log_to_driver
    if runtime_env:
        raise ValueError("peer does not support runtime_env yet; install dependencies in the driver's environment")
    if logging_level is not None:
        logger.setLevel(logging_level)
    with _state.lock:
        if _state.in_worker or _state.info is not None or _native.is_initialized():
            if ignore_reinit_error or _state.in_worker:
                logger.info("peer.init() called again; using the existing connection")
                return dict(_state.info or {})
            raise RuntimeError(
                "peer.init() was already called in this process. Maybe you called it twice by "
                "accident? Pass ignore_reinit_error=True to ignore this, or call peer.shutdown() first."
            )
        state_dir = os.path.abspath(_state_dir or default_state_dir())
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        node_resources = _node_resources(num_gpus, resources)

        socket_path: str | None
        if address in (None, "auto"):
            socket_path = _native.daemon_socket(state_dir)
            if socket_path is None and address == "auto":
                raise ConnectionError(
                    f"no running `peer up` daemon for state directory {state_dir}: start one with "
                    "`peer up`, or call peer.init() without address= to run a node in this process"
                )
        elif address == "local":
            socket_path = None
        else:
            socket_path = address.removeprefix("unix://")
        if bootstrap or listen:
            if address not in (None, "local"):
                raise ValueError(
                    "pass either address= (attach to a node) or bootstrap= (join a cluster), not both"
                )
            socket_path = None  # a full peer in this process, whatever daemon runs here

        if socket_path is not None:
            if num_cpus is not None or node_resources or object_store_memory is not None:
                logger.warning(
                    "attaching to the running node at %s: num_cpus, num_gpus, resources and "
                    "object_store_memory are the daemon's; the values passed to init() are ignored",
                    socket_path,
                )
            info = _native.attach(socket_path)
        else:
            info = _native.init_embedded(
                num_cpus=num_cpus if num_cpus is not None else (os.cpu_count() or 1),
                resources=node_resources,
                object_store_memory=object_store_memory,
                state_dir=state_dir,
                python=sys.executable,
                python_path=list(sys.path),
                cwd=os.getcwd(),
                network=(
                    {
                        "bootstrap": [str(a) for a in bootstrap or []],
                        "key": key,
                        "listen": [str(a) for a in listen or ["/ip4/0.0.0.0/tcp/0"]],
                        "mdns": bool(mdns),
                    }
                    if bootstrap or listen
                    else None
                ),
            )
        _state.info = dict(info)
        _state.namespace = namespace
        if not _state.atexit_registered:
            atexit.register(shutdown)
            _state.atexit_registered = True
        return dict(info)


def shutdown() -> None:
    """Stop the in-process node (workers, fork server, store file) or detach from the daemon.

    Safe to call when not initialized. Object refs and actor handles made before become unusable.
    """
    with _state.lock:
        if _state.in_worker:
            return
        try:
            if _native.is_initialized():
                _native.shutdown()
        finally:
            _state.info = None
            _state.namespace = None
            _state.registered.clear()


def is_initialized() -> bool:
    """Whether this process is connected to a node (always true inside a task or actor)."""
    return _state.in_worker or _state.info is not None


def ensure_initialized() -> None:
    """Auto-init like Ray: the first API call that needs a node starts (or attaches to) one."""
    if _state.info is None and not _state.in_worker:
        with _state.lock:
            if _state.info is None:
                init()


def register_function(fn_id: bytes, blob: bytes) -> None:
    """Send a pickled function or class to the node once per runtime."""
    if fn_id in _state.registered:
        return
    _native.register_function(fn_id, blob)
    _state.registered.add(fn_id)


def mark_worker() -> None:
    """Called by the worker entry point: the native runtime is the worker's, never start a node."""
    _state.in_worker = True


def node_info() -> dict[str, Any]:
    """The dict returned by ``init`` (socket, arena path, ...); private, used by tests."""
    ensure_initialized()
    return dict(_state.info or {})


def namespace() -> str | None:
    return _state.namespace
