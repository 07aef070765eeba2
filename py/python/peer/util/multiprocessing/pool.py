"""``Pool``: the standard library's ``multiprocessing.Pool`` running on the cluster (Ray's
``ray.util.multiprocessing.Pool``).

Each process of the pool is an actor (``_process``), so it may run on any peer, and the
``initializer`` runs once in each. Calls go to the processes in chunks: ``map`` and ``starmap``
cut their input into ``chunksize`` items per call (by default about four chunks per process) and
spread the chunks over the processes in turn; ``apply`` sends one call to the next process in
turn; ``imap`` and ``imap_unordered`` read their input lazily (see ``results.IMapIterator``).

``maxtasksperchild`` counts chunks, as the standard library and Ray do: a process that has been
given that many is retired (it ends once they are done) and a new one takes its place.
``close()`` lets the work already given finish and ends the processes; ``join()`` waits for it;
``terminate()`` (and leaving a ``with`` block) kills the processes at once, failing unfinished
calls with ``ActorDiedError``. ``context`` is accepted and ignored. ``ray_remote_args`` (Ray's
name) are actor options for the processes, e.g. ``{"resources": {"b": 1}}``.

As in Ray, functions defined in ``__main__`` are sent by value, each with its own copy of the
globals it uses: an initializer from ``__main__`` cannot set a global for the pool's functions to
read. Define both in an importable module, or keep the state elsewhere (``os.environ``, a module).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from ... import _api, _native, _runtime
from ..._actor import ActorHandle, kill
from ..._object_ref import ObjectRef
from ._process import PoolProcess
from .results import AsyncResult, IMapIterator

logger = logging.getLogger("peer.util.multiprocessing")

CHUNKS_PER_PROCESS = 4


@dataclass
class _Slot:
    """One process of the pool: its actor, the chunks given to it, and the last one's ref."""

    actor: ActorHandle
    chunks: int = 0
    last: ObjectRef | None = None


@dataclass
class _Retired:
    """A process the pool holds no handle to any more: it ends once its last chunk is done."""

    actor_id: bytes
    last: ObjectRef


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


class Pool:
    """A pool of processes (actors) for ``map``/``apply`` and friends, as ``multiprocessing.Pool``.

    ``processes`` defaults to the cluster's CPUs and may not exceed them (as in Ray). If peer is
    not initialized yet, the pool initializes it (with ``address=ray_address``, and
    ``num_cpus=processes`` when it starts a node).
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        ray_address: str | None = None,
        ray_remote_args: Mapping[str, Any] | None = None,
    ) -> None:
        del context  # processes are actors: there is no start method to choose
        if processes is not None:
            _positive_int(processes, "processes")
        if maxtasksperchild is not None:
            _positive_int(maxtasksperchild, "maxtasksperchild")
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable, got {type(initializer).__name__}")
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._maxtasksperchild = maxtasksperchild
        self._actor_class = PoolProcess.options(**(ray_remote_args or {}))
        self.processes = self._count_processes(processes, ray_address)
        self._closed = False
        self._terminated = False
        self._next_slot = 0
        self._retired: list[_Retired] = []
        self._retired_kept = 16  # prune the done ones when the list grows past twice this
        self._iterators: weakref.WeakSet[IMapIterator] = weakref.WeakSet()
        self._slots = [self._new_slot() for _ in range(self.processes)]
        try:
            _api.get([slot.actor.ready.remote() for slot in self._slots])
        except Exception:
            for slot in self._slots:
                kill(slot.actor)
            self._slots = []
            raise

    @staticmethod
    def _count_processes(processes: int | None, address: str | None) -> int:
        if not _runtime.is_initialized():
            _runtime.init(address, num_cpus=processes)
        cpus = int(_api.cluster_resources().get("CPU", 0))
        if processes is None:
            processes = cpus
        if processes <= 0:
            raise ValueError("Processes in the pool must be >0.")
        if cpus < processes:
            raise ValueError(
                f"Tried to start a pool with {processes} processes on an existing cluster, but there "
                f"are only {cpus} CPUs in the cluster."
            )
        return processes

    def _new_slot(self) -> _Slot:
        return _Slot(self._actor_class.remote(self._initializer, self._initargs))

    def __reduce__(self) -> NoReturn:
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __repr__(self) -> str:
        state = "TERMINATED" if self._terminated else "CLOSED" if self._closed else "RUN"
        return f"<peer.util.multiprocessing.Pool state={state} processes={self.processes}>"

    def _check_running(self) -> None:
        if self._closed:
            raise ValueError("Pool not running")

    # -- submitting -----------------------------------------------------------------------------

    def _take_slot(self) -> int:
        index = self._next_slot
        self._next_slot = (index + 1) % self.processes
        return index

    def _submitted(self, index: int, ref: ObjectRef) -> ObjectRef:
        """Count a chunk given to process ``index``; retire the process if it has had its share."""
        slot = self._slots[index]
        slot.chunks += 1
        slot.last = ref
        if self._maxtasksperchild is not None and slot.chunks >= self._maxtasksperchild:
            self._retire(slot)
            self._slots[index] = self._new_slot()
        return ref

    def _retire(self, slot: _Slot) -> None:
        """Drop the pool's handle: with no handle left, the actor exits after its queued chunks.
        Its id stays (until they are done) for ``join`` to wait and ``terminate`` to kill."""
        if slot.last is not None:
            self._retired.append(_Retired(slot.actor._actor_id, slot.last))
        if len(self._retired) > 2 * self._retired_kept:
            refs = [r.last for r in self._retired]
            done, _ = _api.wait(refs, num_returns=len(refs), timeout=0)
            finished = set(done)
            self._retired = [r for r in self._retired if r.last not in finished]
            self._retired_kept = max(16, len(self._retired))

    def _submit_chunk(self, index: int, func: Any, items: list[Any], star: bool) -> ObjectRef:
        if self._terminated:
            raise ValueError("Pool not running: it was terminated")
        ref = self._slots[index].actor.run_chunk.remote(func, items, star)
        return self._submitted(index, ref)

    def _map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None,
        star: bool,
        callback: Callable[[Any], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> AsyncResult:
        self._check_running()
        items = iterable if isinstance(iterable, (list, tuple)) else list(iterable)
        if chunksize is None:
            chunksize = max(1, -(-len(items) // (self.processes * CHUNKS_PER_PROCESS)))
        else:
            _positive_int(chunksize, "chunksize")
        starts = range(0, len(items), chunksize)
        # The function travels once, not in every chunk (a ref argument arrives as its value).
        shared: Any = _api.put(func) if len(starts) > 1 else func
        chunks = []
        for start in starts:
            chunk = list(items[start : start + chunksize])
            chunks.append((self._submit_chunk(self._take_slot(), shared, chunk, star), len(chunk)))
        return AsyncResult(chunks, single=False, callback=callback, error_callback=error_callback)

    # -- the multiprocessing.Pool API -----------------------------------------------------------

    def apply(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        *,
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        """``func(*args, **kwds)`` in one of the processes; blocks for the result."""
        return self.apply_async(func, args, kwds, kwargs=kwargs).get()

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        kwargs: Mapping[str, Any] | None = None,
    ) -> AsyncResult:
        """``func(*args, **kwds)`` in the next process in turn; ``kwargs`` is Ray's name for ``kwds``."""
        self._check_running()
        if kwds is not None and kwargs is not None:
            raise TypeError("pass the keyword arguments as kwds or as kwargs, not both")
        index = self._take_slot()
        ref = self._slots[index].actor.run_call.remote(func, tuple(args or ()), dict(kwds or kwargs or {}))
        self._submitted(index, ref)
        return AsyncResult([(ref, 1)], single=True, callback=callback, error_callback=error_callback)

    def map(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int | None = None) -> list[Any]:
        """``[func(x) for x in iterable]``, computed by the processes; blocks for the results."""
        result: list[Any] = self._map_async(func, iterable, chunksize, False, None, None).get()
        return result

    def map_async(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult:
        """``map`` without blocking: an ``AsyncResult`` whose ``get()`` is the list of results."""
        return self._map_async(func, iterable, chunksize, False, callback, error_callback)

    def starmap(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]], chunksize: int | None = None) -> list[Any]:
        """``[func(*args) for args in iterable]``, computed by the processes."""
        result: list[Any] = self._map_async(func, iterable, chunksize, True, None, None).get()
        return result

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult:
        """``starmap`` without blocking."""
        return self._map_async(func, iterable, chunksize, True, callback, error_callback)

    def imap(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1) -> IMapIterator:
        """An iterator over ``func(x)`` for the items of ``iterable``, in order."""
        return self._imap(func, iterable, chunksize, ordered=True)

    def imap_unordered(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1) -> IMapIterator:
        """Like ``imap``, but results come in the order they finish."""
        return self._imap(func, iterable, chunksize, ordered=False)

    def _imap(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int, ordered: bool) -> IMapIterator:
        self._check_running()
        _positive_int(chunksize, "chunksize")
        iterator = IMapIterator(self, func, iterable, chunksize, ordered)
        self._iterators.add(iterator)
        return iterator

    def close(self) -> None:
        """Accept no more work; the processes end once the work already given is done."""
        if self._closed:
            return
        for iterator in list(self._iterators):
            iterator._submit_all()
        self._closed = True
        for slot in self._slots:
            self._retire(slot)
        self._slots = []

    def terminate(self) -> None:
        """Kill the processes now; calls not finished yet fail with ``ActorDiedError``."""
        self._closed = True
        self._terminated = True
        for slot in self._slots:
            kill(slot.actor)
        for retired in self._retired:
            _native.kill_actor(retired.actor_id, True)
        self._slots = []
        self._retired = []

    def join(self) -> None:
        """Wait until the work given to a closed pool is done (``ValueError`` if it is running)."""
        if not self._closed:
            raise ValueError("Pool is still running")
        refs = [retired.last for retired in self._retired]
        if refs:
            _api.wait(refs, num_returns=len(refs))
        self._retired = []

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()
