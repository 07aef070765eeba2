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
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import _native, _runtime_env

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
    # The job's runtime environment (in a worker: the running task's), merged under each task's.
    job_env: _runtime_env.Resolved | None = None


_state = _State()


def default_state_dir() -> str:
    """``$PEER_STATE_DIR`` if set, else ``~/.peer``."""
    return os.environ.get(STATE_DIR_ENV) or os.path.join(os.path.expanduser("~"), ".peer")


def _node_resources(resources: dict[str, float] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, amount in (resources or {}).items():
        if key in ("CPU", "GPU"):
            raise ValueError(
                f"resources must not contain {key!r}: use the num_cpus / num_gpus arguments instead"
            )
        out[str(key)] = float(amount)
    return out


def _node_gpus(num_gpus: float | None) -> int | None:
    """The GPU count init() was given (None: detect them), which must be whole, as in Ray."""
    if num_gpus is None:
        return None
    if isinstance(num_gpus, bool) or not float(num_gpus).is_integer() or num_gpus < 0:
        raise ValueError(f"num_gpus must be a non-negative whole number, got {num_gpus!r}")
    return int(num_gpus)


class UnknownInitArgumentError(TypeError, RuntimeError):
    """``init()`` got a keyword argument neither peer nor Ray knows (Ray raises RuntimeError for
    these, Python's convention is TypeError: this is both)."""


# Ray's init() options that tune Ray's own machinery (dashboard, GCS, raylet, logging set-up,
# job config, ...): peer has no such parts, so it accepts them and says once that they do nothing.
_IGNORED_OPTIONS: dict[str, str] = {
    "local_mode": "tasks still run in worker processes (Ray deprecated local_mode)",
    "dashboard_host": "the dashboard is off: pass dashboard=True to serve it",
    "dashboard_port": "the dashboard is off: pass dashboard=True to serve it",
    "job_config": "peer has no job config; pass namespace= to init() for the job's namespace",
    "logging_format": "peer logs through the standard `logging` module: configure its handlers",
    "logging_config": "peer logs through the standard `logging` module: configure its handlers",
    "log_to_driver": "peer always forwards worker output",
    "labels": "peer places by resources only: use resources= for custom placement",
    "storage": "peer has no cluster storage",
    "enable_resource_isolation": "peer does not isolate resources with cgroups",
    "cgroup_path": "peer does not isolate resources with cgroups",
    "system_reserved_cpu": "peer does not isolate resources with cgroups",
    "system_reserved_memory": "peer does not isolate resources with cgroups",
    "proxy_server_url": "peer has no Ray Client proxy",
}
# Ray's hidden init() options (``_name=...`` keyword arguments Ray pops before rejecting the rest).
_RAY_PRIVATE_OPTIONS: dict[str, str] = {
    "_system_config": "peer has no RayConfig to override",
    "_temp_dir": "peer keeps its files in the state directory: set PEER_STATE_DIR or pass _state_dir=",
    "_enable_object_reconstruction": "peer has no such setting",
    "_redis_max_memory": "peer has no Redis",
    "_redis_password": "peer has no Redis: the cluster key (key=) authenticates peers",
    "_plasma_directory": "peer chooses where its shared-memory store lives",
    "_node_ip_address": "a peer is reached at its listen addresses (listen=)",
    "_driver_object_store_memory": "the driver uses the node's object store",
    "_memory": "peer has no such setting",
    "_metrics_export_port": "peer exports no Prometheus metrics; see `peer status --json`",
    "_tracing_startup_hook": "peer has no tracing hooks",
    "_node_name": "nodes are named by their peer id",
    "_skip_env_hook": "peer runs no runtime_env hooks",
}
_warned_options: set[str] = set()


def _ignore_option(name: str, value: Any, why: str) -> None:
    """Warn once per process that a Ray-only ``init()`` option does nothing here.

    A log record, not ``warnings.warn``: Ray accepts these without a warning, so a Ray program (or
    its test suite run with ``-W error``) must keep working unchanged.
    """
    if name in _warned_options:
        return
    _warned_options.add(name)
    logger.warning("peer.init(%s=%r) is accepted for Ray compatibility and ignored: %s", name, value, why)


def check_namespace(namespace: object, where: str) -> None:
    """Ray's rules for a namespace (a non-empty string), plus: no NUL (it separates the namespace
    from the actor name in what the node stores)."""
    if not isinstance(namespace, str):
        raise TypeError(f"{where}: namespace must be None or a string, got {type(namespace).__name__}")
    if namespace == "":
        raise ValueError(f'{where}: "" is not a valid namespace. Pass None to not specify a namespace.')
    if "\x00" in namespace:
        raise ValueError(f"{where}: a namespace cannot contain a NUL character, got {namespace!r}")


def init(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
    object_store_memory: int | None = None,
    local_mode: bool = False,
    ignore_reinit_error: bool = False,
    include_dashboard: bool | None = None,
    dashboard_host: str | None = None,
    dashboard_port: int | None = None,
    job_config: Any = None,
    configure_logging: bool = True,
    logging_level: int | str | None = None,
    logging_format: str | None = None,
    logging_config: Any = None,
    log_to_driver: bool | None = None,
    namespace: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    storage: str | None = None,
    enable_resource_isolation: bool = False,
    cgroup_path: str | None = None,
    system_reserved_cpu: float | None = None,
    system_reserved_memory: int | None = None,
    proxy_server_url: str | None = None,
    bootstrap: list[str] | None = None,
    key: str | None = None,
    listen: list[str] | None = None,
    mdns: bool = True,
    dashboard: bool | str = False,
    _state_dir: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Connect this process to a node and return the node's description.

    ``address``: None attaches to the ``peer up`` daemon of the state directory if one runs and
    otherwise starts a node inside this process; ``"auto"`` requires the daemon; ``"local"``
    always starts an in-process node; anything else is the path of a node's Unix socket.

    ``namespace``: the namespace named actors of this job are created in and looked up in (Ray's
    rules); None gives the job an anonymous namespace of its own (a UUID, as in Ray).

    Ray's other init() options (``include_dashboard``, ``log_to_driver``, ``_system_config``,
    ``_temp_dir``, ...) are accepted; those that would change something log a one-line warning
    that peer ignores them. Keyword arguments Ray does not know either raise TypeError.
    ``configure_logging`` is accepted (peer installs no logging handlers); ``logging_level`` sets
    the level of the ``peer`` logger.

    ``dashboard``: serve the dashboard from the in-process node (True: on ``127.0.0.1:8265``,
    Ray's port; a ``"HOST:PORT"`` string: there) and print its URL. Ray's
    ``include_dashboard=True`` with ``dashboard_host``/``dashboard_port`` does the same. Off a
    loopback address the page needs the token the printed URL carries. A driver attached to a
    ``peer up`` daemon uses the daemon's dashboard (``peer up --dashboard``).

    ``bootstrap``: multiaddrs of cluster members (``/ip4/…/tcp/…/p2p/…``); the in-process node
    then joins that cluster as a full peer, with the cluster ``key`` (64 hex characters or a key
    file; default: the state directory's key), listening on ``listen`` (default
    ``/ip4/0.0.0.0/tcp/0``) and, unless ``mdns=False``, finding LAN peers by mDNS. Without
    ``bootstrap`` (and without ``listen``) no network port is opened at all.
    """
    del configure_logging  # peer never installs handlers, so there is nothing to switch off
    unknown = [k for k in kwargs if k not in _RAY_PRIVATE_OPTIONS]
    if unknown:
        raise UnknownInitArgumentError(
            f"peer.init() got unknown keyword argument(s): {', '.join(unknown)} (Ray's init() rejects "
            "them too); check the spelling against peer.init's documentation"
        )
    job_env = _runtime_env.validate(runtime_env, "peer.init()")
    if namespace is not None:
        check_namespace(namespace, "peer.init()")
    if address is not None and "://" in address:
        raise ValueError(
            f"peer.init(address={address!r}): peer has no Ray Client (ray://) and no head node; "
            "join the cluster as a peer with peer.init(bootstrap=[...], key=...), or pass the "
            "path of a node's Unix socket"
        )
    dashboard_addr = _dashboard_address(dashboard, include_dashboard, dashboard_host, dashboard_port)
    ignored: dict[str, Any] = {
        "local_mode": local_mode or None,
        "dashboard_host": dashboard_host if dashboard_addr is None else None,
        "dashboard_port": dashboard_port if dashboard_addr is None else None,
        "job_config": job_config,
        "logging_format": logging_format,
        "logging_config": logging_config,
        "log_to_driver": None if log_to_driver in (None, True) else log_to_driver,
        "labels": labels or None,
        "storage": storage,
        "enable_resource_isolation": enable_resource_isolation or None,
        "cgroup_path": cgroup_path,
        "system_reserved_cpu": system_reserved_cpu,
        "system_reserved_memory": system_reserved_memory,
        "proxy_server_url": proxy_server_url,
    }
    for name, value in ignored.items():
        if value is not None:
            _ignore_option(name, value, _IGNORED_OPTIONS[name])
    for name, value in kwargs.items():
        if value is not None and value is not False:
            _ignore_option(name, value, _RAY_PRIVATE_OPTIONS[name])
    if logging_level is not None:
        logger.setLevel(logging_level.upper() if isinstance(logging_level, str) else logging_level)
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
        node_resources = _node_resources(resources)
        node_gpus = _node_gpus(num_gpus)

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
            if dashboard_addr is not None:
                logger.warning(
                    "attaching to the running node at %s: its dashboard is the daemon's (start it "
                    "with `peer up --dashboard`); dashboard= is ignored",
                    socket_path,
                )
            if num_cpus is not None or node_resources or node_gpus is not None or object_store_memory is not None:
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
                num_gpus=node_gpus,
                dashboard=dashboard_addr,
            )
            if "dashboard_url" in info:
                print(f"peer dashboard: {info['dashboard_url']}", file=sys.stderr, flush=True)
        _state.info = dict(info)
        if job_env is not None:
            # Packed now, once: the job's code is what it was at init() (as in Ray).
            try:
                _state.job_env = _runtime_env.resolve(None, job_env)
            except BaseException:
                shutdown()
                raise
        # Ray's anonymous namespace: a UUID of this job's own.
        _state.namespace = namespace if namespace is not None else str(uuid.uuid4())
        if not _state.atexit_registered:
            atexit.register(shutdown)
            _state.atexit_registered = True
        return dict(info)


def _dashboard_address(
    dashboard: bool | str,
    include_dashboard: bool | None,
    host: str | None,
    port: int | None,
) -> str | None:
    """Where init() serves the dashboard ("HOST:PORT"), or None for no dashboard."""
    if isinstance(dashboard, str):
        return dashboard
    if dashboard or include_dashboard:
        return f"{host or '127.0.0.1'}:{port if port is not None else 8265}"
    return None


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
            _state.job_env = None
            _runtime_env.forget()


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
    """The namespace of this job (in a worker: of the task or actor it runs); None before init."""
    return _state.namespace


def current_namespace() -> str:
    """The namespace named actors are created in and looked up in when none is given."""
    ensure_initialized()
    return _state.namespace or ""


def job_env() -> _runtime_env.Resolved | None:
    """The environment tasks submitted here run in unless their options say otherwise: the job's
    (``init(runtime_env=...)``), in a worker the running task's or actor's."""
    return _state.job_env


def set_task_env(env: _runtime_env.Resolved | None) -> None:
    """Worker side: the task about to run is in ``env`` (its own submissions inherit it)."""
    _state.job_env = env


def set_task_namespace(namespace: str) -> None:
    """Worker side: the task (or actor) about to run belongs to ``namespace``."""
    _state.namespace = namespace
