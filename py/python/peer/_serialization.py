"""Values and task arguments ↔ pickle protocol 5 with out-of-band buffers.

- :func:`serialize` pickles a value with cloudpickle and collects its out-of-band buffers
  (numpy arrays and anything else exposing ``PickleBuffer``) as flat byte views; the native layer
  lays them out 64-byte aligned inline or in the store.
- :func:`serialize_args` does the same for ``(args, kwargs)`` after replacing each top-level
  ``ObjectRef`` by a :class:`DepPlaceholder`; the refs' ids become the task's dependencies. Tasks
  and actor constructors also carry the caller's namespace (``(args, kwargs, namespace)``): the
  worker runs them in it, as a Ray worker runs in its job's namespace.
- :func:`deserialize` turns a native value tuple back into the object: stored values come back as
  zero-copy, read-only views of shared memory; error values raise.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

from . import _errors, _native, _pickler, _runtime
from ._object_ref import ObjectRef, collect_refs
from .exceptions import SerializationError


class DepPlaceholder:
    """Stands in a pickled argument list for the value of the ``index``-th dependency."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (DepPlaceholder, (self.index,))

    def __repr__(self) -> str:
        return f"DepPlaceholder({self.index})"


def _fast_dumps(value: Any, buffers: list[pickle.PickleBuffer]) -> bytes | None:
    """Plain ``pickle`` (C, several times faster than cloudpickle for plain data), or None when
    the value needs cloudpickle: something pickle refuses (lambdas, local classes) or anything
    pickled by reference to ``__main__``, which workers cannot import."""
    try:
        data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    except Exception:  # noqa: BLE001 - any refusal means: use cloudpickle
        buffers.clear()
        return None
    if b"__main__" in data:
        buffers.clear()
        return None
    return data


def _dumps(value: Any) -> tuple[bytes, list[memoryview], list[bytes]]:
    """``(pickle, out-of-band buffers, ids of the refs nested in the value)``."""
    buffers: list[pickle.PickleBuffer] = []
    with collect_refs() as contained:
        data = _fast_dumps(value, buffers)
    if data is None:
        with collect_refs() as contained:
            data = _pickler.dumps(value, buffer_callback=buffers.append)
    if not buffers:
        return data, [], contained
    views: list[memoryview] = []
    for buf in buffers:
        try:
            views.append(buf.raw())
        except BufferError:
            # Not contiguous: pickle the bytes in order instead (rare; numpy never does this).
            views.append(memoryview(bytes(memoryview(buf))))
    return data, views, contained


def serialize(value: Any, what: str = "the value") -> tuple[bytes, list[memoryview], list[bytes]]:
    """``(pickle bytes, out-of-band buffers, nested ref ids)`` of ``value``; ``what`` names it in errors."""
    try:
        return _dumps(value)
    except Exception as e:  # noqa: BLE001 - any pickling failure is reported the same way
        raise SerializationError(
            f"could not serialize {what} of type {type(value).__name__}: {e}. Values sent to or "
            "from tasks must be picklable (cloudpickle); create things like locks, sockets and "
            "open files inside the task instead of passing them."
        ) from e


_NO_ARGS = pickle.dumps(((), {}), protocol=5)
_no_args_in: dict[str, bytes] = {}  # namespace -> the pickle of no arguments in it


def serialize_args(
    args: Sequence[Any], kwargs: dict[str, Any], fn_name: str, namespace: str | None = None
) -> tuple[bytes, list[memoryview], list[bytes], list[bytes]]:
    """``(pickle, buffers, deps, contained)`` for a task's arguments: top-level refs become deps
    (the task gets their values), refs nested deeper stay refs and are held by the task.
    ``namespace``: the namespace the task runs in (None for actor method calls: an actor runs in
    the one it was created in)."""
    if not args and not kwargs:
        if namespace is None:
            return _NO_ARGS, [], [], []
        data = _no_args_in.get(namespace)
        if data is None:
            data = _no_args_in[namespace] = pickle.dumps(((), {}, namespace), protocol=5)
        return data, [], [], []
    deps: list[bytes] = []
    index: dict[bytes, int] = {}

    def swap(value: Any) -> Any:
        if isinstance(value, ObjectRef):
            id = value.binary()
            if id not in index:
                index[id] = len(deps)
                deps.append(id)
            return DepPlaceholder(index[id])
        return value

    has_refs = any(isinstance(a, ObjectRef) for a in args) or any(
        isinstance(v, ObjectRef) for v in kwargs.values()
    )
    if has_refs:
        swapped_args = tuple(swap(a) for a in args)
        swapped_kwargs = {k: swap(v) for k, v in kwargs.items()}
    else:  # the common case: nothing to swap
        swapped_args, swapped_kwargs = tuple(args), kwargs
    payload = (swapped_args, swapped_kwargs) if namespace is None else (swapped_args, swapped_kwargs, namespace)
    try:
        data, buffers, contained = _dumps(payload)
    except Exception as e:  # noqa: BLE001
        raise _argument_error(swapped_args, swapped_kwargs, fn_name, e) from e
    return data, buffers, deps, contained


def _argument_error(
    args: tuple[Any, ...], kwargs: dict[str, Any], fn_name: str, error: Exception
) -> SerializationError:
    """Name the first argument that does not pickle on its own."""
    named: list[tuple[str, Any]] = [(f"argument {i}", a) for i, a in enumerate(args)]
    named += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for label, value in named:
        try:
            _dumps(value)
        except Exception as e:  # noqa: BLE001
            return SerializationError(
                f"could not serialize {label} of {fn_name}() (type {type(value).__name__}): {e}. "
                "Task arguments must be picklable (cloudpickle); create things like locks, sockets "
                "and open files inside the task instead of passing them."
            )
    return SerializationError(f"could not serialize the arguments of {fn_name}(): {error}")


def _loads(payload: Any) -> Any:
    data, buffers = _native.decode(payload)
    try:
        return pickle.loads(data, buffers=buffers)
    except Exception as e:  # noqa: BLE001
        raise SerializationError(
            f"could not deserialize a value: {type(e).__name__}: {e}. Check that the modules the "
            "value's classes come from are importable in this process."
        ) from e


def deserialize(value: tuple[int, Any]) -> Any:
    """The object of a native value tuple; raises the matching peer error for error values."""
    kind, payload = value
    if kind == _native.VALUE_ERROR:
        raise _errors.from_error_info(payload)
    return _loads(payload)


def deserialize_args(
    value: tuple[int, Any], dep_values: Sequence[tuple[int, Any]]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A task's ``(args, kwargs)`` with each placeholder replaced by its dependency's value.

    A namespace sent with them becomes this process's current namespace (see the module doc)."""
    payload = deserialize(value)
    if len(payload) == 3:
        args, kwargs, namespace = payload
        _runtime.set_task_namespace(namespace)
    else:
        args, kwargs = payload
    deps = [deserialize(v) for v in dep_values]

    def swap(v: Any) -> Any:
        return deps[v.index] if isinstance(v, DepPlaceholder) else v

    return tuple(swap(a) for a in args), {k: swap(v) for k, v in kwargs.items()}
