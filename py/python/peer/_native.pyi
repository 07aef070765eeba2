"""Type stubs for ``peer._native``, the thin pyo3 layer over the Rust node.

This is the contract between the Rust side (``py/src``) and the pure-Python
package (``py/python/peer``). Everything here works on ids (``bytes``) and
already-serialized values; pickling, ObjectRef wrapping and exceptions are
Python's job.

A *value* as returned by :func:`get` (and handed to the worker executor) is a
tuple ``(kind, payload)``:

* ``(VALUE_INLINE, bytes)``: an encoded object blob held in process memory;
* ``(VALUE_STORED, PinnedBuffer)``: an encoded object blob in the shared-memory
  store; the buffer pins it until the last view of it is gone;
* ``(VALUE_ERROR, ErrorInfo)``: the object is an error.

An encoded blob is decoded by :func:`decode` into the pickle bytes and the
out-of-band buffers, all zero-copy views of the blob.
"""

from collections.abc import Callable, Sequence
from typing import Any

VALUE_INLINE: int
VALUE_STORED: int
VALUE_ERROR: int

# ErrorInfo.kind values
ERR_TASK: str  # the task raised; ``blob`` is the pickled exception wrapper
ERR_WORKER_CRASHED: str
ERR_ACTOR_DIED: str
ERR_STORE_FULL: str
ERR_CANCELLED: str
ERR_OBJECT_LOST: str
ERR_OWNER_DIED: str
ERR_ACTOR_UNAVAILABLE: str

# executor task kinds
TASK_NORMAL: int
TASK_ACTOR_CREATE: int
TASK_ACTOR_METHOD: int
# executor status: the call runs on (a concurrent actor's); task_finished reports it
DEFERRED: int
# executor status: the actor exits on purpose, ``(EXIT, reason)``
EXIT: int
# executor status: the call was cancelled, ``(CANCELLED, message)``
CANCELLED: int
# executor status: raised an exception retry_exceptions does not list, ``(FAILED_FINAL, (message, blob))``
FAILED_FINAL: int

class PeerNativeError(Exception):
    """Base of the errors raised by the native layer."""

class NativeStoreFullError(PeerNativeError):
    """The object store has no room for the object (message says how much is used/pinned)."""

class NativeNotInitializedError(PeerNativeError):
    """No runtime: call ``peer.init()`` first."""

class PinnedBuffer:
    """Read-only buffer (PEP 3118) over an object in the shared-memory store.

    While this object (or any memoryview / numpy array made from it) lives, the
    object stays pinned in the store.
    """

    def __len__(self) -> int: ...
    def __buffer__(self, flags: int) -> memoryview: ...

class ErrorInfo:
    kind: str
    message: str
    blob: bytes | None

class RuntimeEnv:
    """A normalised runtime environment, made once and passed with each task submitted in it:
    ``key`` (16 bytes) is what workers are matched by, ``setup`` the JSON a worker applies, and
    ``packages`` the object ids of its packages (every task in it holds them)."""

    def __init__(self, key: bytes, setup: str, packages: list[bytes]) -> None: ...

class ObjectRefBase:
    """Native part of ``peer.ObjectRef``: an object id plus a live-handle count.

    Creating one registers a local handle of the id with the runtime (if any);
    dropping it releases the handle. Subclassable.
    """

    def __init__(self, id: bytes) -> None: ...
    def binary(self) -> bytes: ...
    def hex(self) -> str: ...
    def __hash__(self) -> int: ...
    def __eq__(self, other: object) -> bool: ...

# ---- lifecycle -------------------------------------------------------------

def init_embedded(
    *,
    num_cpus: int,
    resources: dict[str, float],
    object_store_memory: int | None,
    state_dir: str,
    python: str,
    python_path: list[str],
    cwd: str,
    network: dict[str, Any] | None = None,
    num_gpus: int | None = None,
    dashboard: str | None = None,
) -> dict[str, Any]:
    """Start a node inside this process (laptop mode). ``num_gpus``: GPUs to offer (None: the
    NVIDIA devices NVML finds, limited by ``CUDA_VISIBLE_DEVICES``).

    ``network`` (``{"listen": [...], "bootstrap": [...], "key": str | None, "mdns": bool}``)
    makes it a full peer of a multi-peer cluster; the dict returned then also has
    ``peer_id``, ``listen`` and ``key_fingerprint``. Without it no network port is opened.
    ``dashboard`` (``"HOST:PORT"``) serves the dashboard there; the dict then has its
    ``dashboard_url`` (with the token when the address is not loopback).

    Spawns the fork server (``python -m peer._forkserver``) in the background
    and returns at once with ``{"node_id", "socket", "arena_path",
    "arena_size", "num_cpus", "resources"}``.
    """

def attach(socket_path: str) -> dict[str, Any]:
    """Attach this process as a driver to the running daemon at ``socket_path``.

    Returns the same dict as :func:`init_embedded`. Raises ``ConnectionError``.
    """

def daemon_socket(state_dir: str) -> str | None:
    """The socket path of a live ``peer up`` daemon of ``state_dir``, or None."""

def shutdown() -> None:
    """Stop the embedded node (workers, fork server, arena file) or detach."""

def is_initialized() -> bool: ...

# ---- functions, tasks, actors ------------------------------------------------

def register_function(fn_id: bytes, blob: bytes) -> None:
    """Make a cloudpickled function or class known to the node (idempotent)."""

def submit_task(
    fn_id: bytes,
    args_pickle: bytes,
    args_buffers: Sequence[Any],
    deps: list[bytes],
    *,
    num_returns: int,
    num_cpus: float,
    resources: dict[str, float],
    max_retries: int,
    retry_exceptions: bool,
    name: str,
    contained: list[bytes] | None = None,
    runtime_env: RuntimeEnv | None = None,
) -> list[bytes]:
    """Submit a task; returns its ``num_returns`` object ids at once.

    ``args_pickle`` / ``args_buffers`` are the protocol-5 pickle of the
    arguments (top-level ObjectRefs replaced by placeholders) and its
    out-of-band buffers; large arguments go through the store. ``deps`` are the
    ids of the top-level ObjectRef arguments, in placeholder order: the task
    runs when all exist, with their values. ``contained`` are the ids of refs
    nested deeper in the arguments: the task keeps them alive until it ends.
    """

def create_actor(
    class_id: bytes,
    args_pickle: bytes,
    args_buffers: Sequence[Any],
    deps: list[bytes],
    *,
    num_cpus: float,
    resources: dict[str, float],
    max_restarts: int,
    name: str | None,
    class_name: str,
    handle_blob: bytes,
    contained: list[bytes] | None = None,
    detached: bool = False,
    runtime_env: RuntimeEnv | None = None,
) -> bytes:
    """Create an actor on a dedicated worker; returns its actor id at once. A ``detached`` actor
    lives until ``kill()``; any other ends once no ref to its handle object is left.

    ``handle_blob`` is the pickled actor handle, returned by :func:`get_actor`
    for a named actor. Raises ``ValueError`` if ``name`` is already taken.
    """

def submit_actor_task(
    actor_id: bytes,
    method: str,
    args_pickle: bytes,
    args_buffers: Sequence[Any],
    deps: list[bytes],
    *,
    num_returns: int,
    name: str,
    contained: list[bytes] | None = None,
    max_retries: int = 0,
) -> list[bytes]:
    """Queue a method call (sent to the actor in submission order); ``max_retries``: how often it
    runs again if the actor dies under it and restarts (the actor's ``max_task_retries``)."""

def get_actor(name: str) -> tuple[bytes, bytes] | None:
    """``(actor_id, handle_blob)`` of the live named actor ``name``, or None."""

def kill_actor(actor_id: bytes, no_restart: bool) -> None: ...
def cancel(object_id: bytes, force: bool, recursive: bool = True) -> None:
    """Cancel the task producing ``object_id`` (and, ``recursive``, the tasks it submitted):
    dropped if not started; interrupted if running; with ``force``, its worker is killed."""

# ---- objects -------------------------------------------------------------------

def put(pickle: bytes, buffers: Sequence[Any], contained: list[bytes] | None = None) -> bytes:
    """Store a serialized value; returns its new object id.

    ``contained``: ids of the refs serialized inside the value, which it keeps alive.

    Raises :class:`NativeStoreFullError` when it does not fit.
    """

def get(ids: list[bytes], timeout: float | None) -> list[tuple[int, Any]] | None:
    """Block (GIL released) until every id has a value; None on timeout (seconds).

    As soon as one id's value is an error, returns that error value alone (a one-item list), so
    the caller raises it without waiting for the others."""

def wait(ids: list[bytes], num_returns: int, timeout: float | None, fetch_local: bool) -> list[int]:
    """Indices of ids that are ready, in completion order; stops at num_returns or timeout.

    ``fetch_local``: ready means the value is on this node (pulled here if need be), else that it
    exists anywhere in the cluster (nothing is pulled)."""

def decode(value: bytes | PinnedBuffer) -> tuple[memoryview, list[memoryview]]:
    """Split an encoded blob into (pickle bytes, out-of-band buffers), zero-copy."""

def release_ref(object_id: bytes) -> None:
    """Drop one handle the node counted for this process (a named actor lookup's answer)."""

def ref_escaped(object_id: bytes) -> None:
    """Note that a ref was serialized (it may outlive every local handle)."""

# ---- introspection ------------------------------------------------------------

def nodes() -> list[dict[str, Any]]: ...
def cluster_resources() -> dict[str, float]: ...
def available_resources() -> dict[str, float]: ...
def runtime_context() -> dict[str, Any]:
    """``{"node_id", "worker_id", "task_id", "actor_id"}`` (hex strings or None)."""

def status() -> dict[str, Any]: ...
def cluster_list(what: str) -> dict[str, Any]:
    """``peer list <what>`` (peers, tasks, actors, objects, timeline, overview) from every peer:
    ``{"nodes": [{"node": id, "address": ..., "rows": ...}, ...], "missing": [peer ids]}``."""

def timeline() -> list[dict[str, Any]]:
    """Chrome trace events of the task runs, gets, puts and transfers every peer kept."""


def cli_main(argv: list[str], python: str, python_path: list[str]) -> int:
    """Run the ``peer`` command line (``argv[0]`` is the program name); returns the exit code.

    ``python`` and ``python_path`` are what a ``peer up`` daemon's workers run with.
    """

# ---- worker side -----------------------------------------------------------------

Executor = Callable[
    [
        int,
        bytes,
        bytes,
        bytes | None,
        str,
        str,
        tuple[int, Any],
        list[tuple[int, Any]],
        int,
        list[str],
        tuple[bytes, str] | None,
    ],
    tuple[int, Any],
]

def emit_output(stream: int, data: bytes) -> bool:
    """Worker side: send printed lines of the current task to the node for its driver.

    Returns False (nothing sent) when the driver shares this worker's terminal.
    """

def worker_main(
    socket_path: str, worker_id: str, executor: Executor, canceller: Callable[[bytes], None]
) -> None:
    """Run this process as a worker until the node says stop (or the socket closes).

    For each task the loop calls ``executor(kind, task_id, fn_id, fn_blob,
    method, name, args, dep_values, num_returns, gpu_ids, runtime_env)`` where ``fn_blob`` is the
    cloudpickled function/class the first time this worker sees ``fn_id`` (else
    None), ``args`` and each of ``dep_values`` is a value tuple, and ``gpu_ids`` names the GPU
    devices the task (or this worker's actor) holds. The executor
    returns either ``(0, [(pickle, buffers, contained), ...])`` with one entry
    per return (``contained``: ids of refs nested in that return value),
    or ``(1, (message, blob))`` when the task raised (``blob``: the pickled
    exception wrapper). For TASK_ACTOR_CREATE, success returns ``(0, [])``.
    ``runtime_env`` is ``(key, setup)`` of the task's runtime environment (None: the node's own;
    an actor's calls run in its creation's). ``canceller(task_id)`` is called when the node
    cancels a task sent here (before the task comes, if it has not yet). ``(CANCELLED, message)`` reports a task cancelled before it ran.
    ``(DEFERRED, None)`` says the call runs on elsewhere (a thread of a threaded actor, or an
    async actor's event loop); its outcome is reported later with :func:`task_finished`.
    """

def retire_after_task() -> None:
    """Worker side: the running task is this worker's last (``max_calls``); it exits once the task
    is reported, and the node gives the tasks sent to it since to other workers."""

def take_cancel(task_id: bytes, wait_s: float) -> bool:
    """Worker side, in the interrupt signal's handler: whether the node cancelled ``task_id``
    (waiting up to ``wait_s`` for its word, which may trail the signal)."""

def actor_exit(reason: str) -> None:
    """Worker side: this actor exits on purpose; the node fails its calls with ``reason`` and
    tells this worker to exit (for a concurrent actor, whose calls run off the receive loop)."""

def task_finished(task_id: bytes, name: str, result: tuple[int, Any], run_us: int) -> None:
    """Worker side: report a deferred call's outcome (``result`` as an executor returns it).

    Safe from any thread; sent to the node at once.
    """
