"""What the pool's asynchronous calls return: ``AsyncResult`` (``apply_async``, ``map_async``,
``starmap_async``) and ``IMapIterator`` (``imap``, ``imap_unordered``).

Both follow the standard library: ``get(timeout)`` and ``next(timeout)`` raise
``multiprocessing.TimeoutError`` when the timeout passes, and a call that raised re-raises its
exception (with the remote traceback as ``__cause__``). A chunk whose process died fails every call
in it with the error ``peer.get`` gave (e.g. ``ActorDiedError`` after ``terminate()``).
``AsyncResult`` needs no thread unless it has a callback: then one thread waits for the results,
runs ``callback(value)`` or ``error_callback(exception)`` once, and only after that does the result
count as ready.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ... import _api
from ..._object_ref import ObjectRef
from ._process import Failure, Outcome, raise_outcome

if TYPE_CHECKING:
    from .pool import Pool

logger = logging.getLogger("peer.util.multiprocessing")


def fetch(ref: ObjectRef, calls: int) -> list[Outcome]:
    """The outcomes of a chunk of ``calls`` calls; if the chunk itself failed, that error for each."""
    try:
        outcomes: list[Outcome] = _api.get(ref)
        return outcomes
    except Exception as e:  # noqa: BLE001 - the chunk's error becomes each call's outcome
        failure: Failure = (e, None)
        return [(False, failure)] * calls


class AsyncResult:
    """The result of ``apply_async``/``map_async``/``starmap_async``: ``get``, ``wait``, ``ready``,
    ``successful``, as in the standard library."""

    def __init__(
        self,
        chunks: list[tuple[ObjectRef, int]],
        single: bool,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> None:
        self._chunks = chunks  # (ref, number of calls in it), in input order
        self._single = single
        self._callback = callback
        self._error_callback = error_callback
        self._outcomes: list[Outcome] | None = None
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        if callback is not None or error_callback is not None:
            self._watcher = threading.Thread(target=self._watch, name="peer-pool-callback", daemon=True)
            self._watcher.start()

    def _all_ready(self, timeout: float | None) -> bool:
        refs = [ref for ref, _ in self._chunks]
        if not refs:
            return True
        ready, _ = _api.wait(refs, num_returns=len(refs), timeout=timeout)
        return len(ready) == len(refs)

    def _collect(self) -> list[Outcome]:
        """Every call's outcome, in input order (the chunks must be ready)."""
        with self._lock:
            if self._outcomes is None:
                self._outcomes = [o for ref, n in self._chunks for o in fetch(ref, n)]
            return self._outcomes

    def _first_failure(self) -> Failure | None:
        return next((value for ok, value in self._collect() if not ok), None)

    def _value(self) -> Any:
        values = [value for _, value in self._collect()]
        return values[0] if self._single else values

    def _watch(self) -> None:
        try:
            self._all_ready(None)
            failure = self._first_failure()
            if failure is None:
                if self._callback is not None:
                    self._callback(self._value())
            elif self._error_callback is not None:
                self._error_callback(failure[0])
        except Exception:  # noqa: BLE001 - a callback's error must not pass silently, nor kill us
            logger.exception("a callback of a peer.util.multiprocessing.Pool result raised")

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is ready, or ``timeout`` seconds pass (no error then)."""
        if self._watcher is not None:
            self._watcher.join(timeout)
        else:
            self._all_ready(timeout)

    def ready(self) -> bool:
        """Whether every call has finished (and its callback, if any, has run)."""
        if self._watcher is not None:
            return not self._watcher.is_alive()
        return self._all_ready(0)

    def successful(self) -> bool:
        """Whether no call raised; ``ValueError`` if the result is not ready yet."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._first_failure() is None

    def get(self, timeout: float | None = None) -> Any:
        """The value (a list for the map functions); re-raises the first call's exception, in
        input order, if one raised; ``multiprocessing.TimeoutError`` if not ready in time."""
        self.wait(timeout)
        if not self.ready():
            raise multiprocessing.TimeoutError(f"the pool's result was not ready within {timeout} s")
        failure = self._first_failure()
        if failure is not None:
            raise_outcome(failure)
        return self._value()


class IMapIterator(Iterator[Any]):
    """The results of ``imap`` (in input order) or ``imap_unordered`` (in the order they finish).

    Input is read lazily, ``chunksize`` items per call, keeping about two chunks per process in
    flight; each chunk goes to the process with the fewest of this iterator's chunks. ``close()``
    of the pool submits the rest of the input at once, as the standard library has by then.
    """

    def __init__(self, pool: Pool, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int, ordered: bool) -> None:
        self._pool: Pool | None = pool
        self._func = func
        self._input = iter(iterable)
        self._chunksize = chunksize
        self._ordered = ordered
        self._window = 2 * pool.processes
        self._inflight: dict[ObjectRef, tuple[int, int, int]] = {}  # ref -> (chunk index, slot, calls)
        self._finished: dict[int, list[Outcome]] = {}  # ordered: chunks done, not reached yet
        self._ready: deque[Outcome] = deque()
        self._next_chunk = 0
        self._submitted = 0
        self._exhausted = False
        self._fill()

    def _fill(self, limit: float | None = None) -> None:
        """Submit chunks until ``limit`` (default: the window) are in flight or the input ends."""
        window = self._window if limit is None else limit
        while not self._exhausted and len(self._inflight) < window:
            pool = self._pool
            assert pool is not None
            chunk = list(itertools.islice(self._input, self._chunksize))
            if not chunk:
                self._exhausted = True
                break
            load = [0] * pool.processes
            for _, slot, _ in self._inflight.values():
                load[slot] += 1
            slot = load.index(min(load))
            ref = pool._submit_chunk(slot, self._func, chunk, star=False)
            self._inflight[ref] = (self._submitted, slot, len(chunk))
            self._submitted += 1

    def _submit_all(self) -> None:
        """Submit the whole rest of the input (the pool is being closed)."""
        if self._pool is not None:
            self._fill(limit=float("inf"))

    def __iter__(self) -> IMapIterator:
        return self

    def __next__(self) -> Any:
        return self.next()

    def next(self, timeout: float | None = None) -> Any:
        """The next result; ``multiprocessing.TimeoutError`` if none comes within ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._ready:
                ok, value = self._ready.popleft()
                if not ok:
                    raise_outcome(value)
                return value
            if self._ordered and self._next_chunk in self._finished:
                self._ready.extend(self._finished.pop(self._next_chunk))
                self._next_chunk += 1
                continue
            if not self._inflight:
                if self._exhausted or self._pool is None:
                    self._release()
                    raise StopIteration
                self._fill()
                continue
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _ = _api.wait(list(self._inflight), num_returns=1, timeout=left)
            if not ready:
                raise multiprocessing.TimeoutError(f"no result of the pool came within {timeout} s")
            for ref in ready:
                index, _, calls = self._inflight.pop(ref)
                outcomes = fetch(ref, calls)
                if self._ordered:
                    self._finished[index] = outcomes
                else:
                    self._ready.extend(outcomes)
            if self._pool is not None:
                self._fill()

    def _release(self) -> None:
        if self._pool is not None:
            self._pool._iterators.discard(self)
            self._pool = None
