"""The object and cluster verbs of the public API: ``get``, ``put``, ``wait``, ``cancel``, ``nodes``, ...

Each validates its arguments the way Ray does, auto-initializes, and calls the native layer with
plain ids; values are (de)serialized by ``_serialization``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

from . import _native, _observe, _runtime, _serialization
from ._object_ref import ObjectRef
from .exceptions import GetTimeoutError, ObjectStoreFullError


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
        raise ValueError(f"timeout must be None or a non-negative number of seconds, got {timeout!r}")


def _not_a_ref(value: object, where: str) -> TypeError:
    return TypeError(
        f"{where} expects an ObjectRef or a list of ObjectRefs, got {type(value).__name__}: "
        f"{value!r:.80}. ObjectRefs come from f.remote(), actor.method.remote() and peer.put()."
    )


@overload
def get(object_refs: ObjectRef, *, timeout: float | None = None, progress: bool = False) -> Any: ...
@overload
def get(
    object_refs: Sequence[ObjectRef], *, timeout: float | None = None, progress: bool = False
) -> list[Any]: ...


def get(
    object_refs: ObjectRef | Sequence[ObjectRef], *, timeout: float | None = None, progress: bool = False
) -> Any:
    """Block until the value(s) exist and return them; raises the task's error if it failed.

    As in Ray, the error is raised as soon as one of the refs failed, even while others are still
    pending (the first failed one in the list's order).

    ``timeout`` is in seconds; when it passes first, :class:`GetTimeoutError` is raised.
    ``timeout=0`` returns the values if they are all ready and raises GetTimeoutError at once
    otherwise (what Ray documents as the intended behaviour of ``timeout=0``). Arrays in the
    shared-memory store come back as read-only views of it, without copying.

    ``progress=True`` draws a progress bar (ready/total) on stderr while the refs are pending
    (not with a ``timeout``, which the bar would not honour).
    """
    single = isinstance(object_refs, ObjectRef)
    refs: Sequence[Any]
    if isinstance(object_refs, ObjectRef):
        refs = [object_refs]
    elif isinstance(object_refs, (list, tuple)):
        refs = object_refs
    else:
        raise _not_a_ref(object_refs, "peer.get()")
    for ref in refs:
        if not isinstance(ref, ObjectRef):
            raise _not_a_ref(ref, "peer.get()")
    _check_timeout(timeout)
    _runtime.ensure_initialized()
    if progress and timeout is None and refs:
        _observe.show_progress([r.binary() for r in refs])
    values = _native.get([r.binary() for r in refs], None if timeout is None else float(timeout))
    if values is None:
        raise GetTimeoutError(
            f"get() timed out after {timeout} s waiting for {len(refs)} object(s); the tasks may "
            "still be queued or running: check peer.available_resources() and pass a larger timeout"
        )
    # A failed get's answer is its error alone: deserializing it raises.
    out = [_serialization.deserialize(v) for v in values]
    return out[0] if single else out


def put(value: Any) -> ObjectRef:
    """Store ``value`` in the object store and return a ref to it."""
    if isinstance(value, ObjectRef):
        raise TypeError("calling peer.put() on an ObjectRef is not allowed; pass the ref itself instead")
    _runtime.ensure_initialized()
    data, buffers, contained = _serialization.serialize(value, "the value passed to put()")
    try:
        id = _native.put(data, buffers, contained)
    except _native.NativeStoreFullError as e:
        raise ObjectStoreFullError(str(e)) from None
    return ObjectRef(id)


def wait(
    object_refs: Sequence[ObjectRef],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Wait until ``num_returns`` of the refs are ready or ``timeout`` seconds pass.

    Returns ``(ready, not_ready)``, both in input order (as Ray documents); ``ready`` holds at
    most ``num_returns`` refs. ``timeout=0`` only looks at what is ready now. As in Ray, with
    ``fetch_local=True`` (the default) a ref is ready once its value is on this node: values on
    other peers are pulled here first, so a ``get`` afterwards does not wait for the network.
    With ``fetch_local=False`` a ref is ready as soon as its value exists on any peer, and
    nothing is pulled. The checks follow Ray's order: an empty list returns ``([], [])``
    whatever ``num_returns`` is.
    """
    if isinstance(object_refs, ObjectRef):
        raise TypeError("wait() expects a list of ObjectRefs, got a single ObjectRef; pass [ref]")
    if not isinstance(object_refs, (list, tuple)):
        raise TypeError(f"wait() expects a list of ObjectRefs, got {type(object_refs).__name__}")
    _check_timeout(timeout)
    for ref in object_refs:
        if not isinstance(ref, ObjectRef):
            raise _not_a_ref(ref, "peer.wait()")
    if len(object_refs) == 0:
        return [], []
    if len(set(object_refs)) != len(object_refs):
        raise ValueError("wait() requires a list of unique ObjectRefs; remove the duplicates")
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns < 1:
        raise ValueError(f"num_returns must be a positive int, got {num_returns!r}")
    if num_returns > len(object_refs):
        raise ValueError(
            f"num_returns ({num_returns}) cannot be greater than the number of refs ({len(object_refs)}) "
            "passed to wait()"
        )
    _runtime.ensure_initialized()
    ids = [r.binary() for r in object_refs]
    ready_idx = _native.wait(ids, num_returns, None if timeout is None else float(timeout), bool(fetch_local))
    ready_set = set(ready_idx[:num_returns])
    ready = [r for i, r in enumerate(object_refs) if i in ready_set]
    rest = [r for i, r in enumerate(object_refs) if i not in ready_set]
    return ready, rest


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that produces ``object_ref``; ``get`` then raises TaskCancelledError.

    As in Ray: a task not started yet never runs; a running task gets ``KeyboardInterrupt``
    (with ``force=True`` its worker is killed instead); ``recursive`` cancels the tasks it submitted
    too. An actor call not started yet is skipped; a running call of an async actor is cancelled
    as an asyncio task, and of another actor runs on. A finished task is left as it is.
    """
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() expects an ObjectRef, got {type(object_ref).__name__}")
    _runtime.ensure_initialized()
    _native.cancel(object_ref.binary(), bool(force), bool(recursive))


def nodes() -> list[dict[str, Any]]:
    """One dict per node (``NodeID``, ``Alive``, ``Resources`` as in Ray, plus the node's own keys)."""
    _runtime.ensure_initialized()
    out = []
    for node in _native.nodes():
        entry = dict(node)
        entry.setdefault("NodeID", node.get("node_id"))
        entry.setdefault("Alive", node.get("alive", True))
        entry.setdefault("Resources", node.get("resources"))
        out.append(entry)
    return out


def cluster_resources() -> dict[str, float]:
    """Total resources of the cluster (``CPU``, ``GPU``, custom ones, ...)."""
    _runtime.ensure_initialized()
    return dict(_native.cluster_resources())


def available_resources() -> dict[str, float]:
    """Resources not held by running tasks and actors right now."""
    _runtime.ensure_initialized()
    return dict(_native.available_resources())
