"""``ActorPool``: Ray's ``ray.util.ActorPool``, work spread over a fixed set of actors.

``fn(actor, value)`` makes one call on an idle actor and returns its ObjectRef (or a list of refs);
the actor counts as busy until that call's result has been taken with ``get_next`` /
``get_next_unordered``. Values submitted while every actor is busy wait in the pool and go to the
next actor that comes back. ``map`` and ``map_unordered`` submit everything at once and return
iterators over the results. The errors are Ray's: ``StopIteration`` when nothing is pending, the
builtin ``TimeoutError`` on a timeout, ``ValueError`` for ``get_next`` after ``get_next_unordered``
and for ``push`` of an actor the pool already has. An actor whose call raised ``ActorDiedError``
leaves the pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar, Union

from .. import _api
from .._actor import ActorHandle
from .._object_ref import ObjectRef
from ..exceptions import ActorDiedError

V = TypeVar("V")

Future = Union[ObjectRef, list[ObjectRef]]
Submit = Callable[[ActorHandle, V], Any]
# A list of refs (num_returns > 1) is keyed by the tuple of its refs.
_Key = Union[ObjectRef, tuple[ObjectRef, ...]]

TIMEOUT_MESSAGE = "Timed out waiting for result"


def _key(future: Future) -> _Key:
    return tuple(future) if isinstance(future, list) else future


def _refs(future: Future) -> list[ObjectRef]:
    return list(future) if isinstance(future, list) else [future]


def _check_future(future: Any, fn: Any) -> Future:
    if isinstance(future, ObjectRef):
        return future
    if isinstance(future, list) and future and all(isinstance(r, ObjectRef) for r in future):
        return future
    raise TypeError(
        f"the function given to ActorPool must return the ObjectRef of an actor call, e.g. "
        f"`lambda a, v: a.method.remote(v)`; {getattr(fn, '__name__', fn)!r} returned "
        f"{type(future).__name__}: {future!r:.80}"
    )


class ActorPool(Generic[V]):
    """Spreads calls over ``actors``; each actor runs one pending call of the pool at a time.

    >>> pool = ActorPool([Doubler.remote(), Doubler.remote()])
    >>> list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4]))
    [2, 4, 6, 8]
    """

    def __init__(self, actors: Iterable[ActorHandle]) -> None:
        self._idle_actors: list[ActorHandle] = list(actors)
        self._future_to_actor: dict[_Key, tuple[int, ActorHandle]] = {}
        self._index_to_future: dict[int, Future] = {}
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending_submits: list[tuple[Submit[V], V]] = []

    def map(self, fn: Submit[V], values: Iterable[V]) -> Iterator[Any]:
        """Submit ``fn(actor, v)`` for every value now; iterate over the results in order.

        Results of earlier submissions that were not taken yet are dropped first.
        """
        while self.has_next():
            try:
                self.get_next(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass
        for v in values:
            self.submit(fn, v)
        return self._results(ordered=True)

    def map_unordered(self, fn: Submit[V], values: Iterable[V]) -> Iterator[Any]:
        """Like ``map``, but the results come in the order they finish."""
        while self.has_next():
            try:
                self.get_next_unordered(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass
        for v in values:
            self.submit(fn, v)
        return self._results(ordered=False)

    def _results(self, ordered: bool) -> Iterator[Any]:
        while self.has_next():
            yield self.get_next() if ordered else self.get_next_unordered()

    def submit(self, fn: Submit[V], value: V) -> None:
        """Call ``fn(actor, value)`` on an idle actor, or queue it until one is free."""
        if not self._idle_actors:
            self._pending_submits.append((fn, value))
            return
        actor = self._idle_actors.pop()
        future = _check_future(fn(actor, value), fn)
        self._future_to_actor[_key(future)] = (self._next_task_index, actor)
        self._index_to_future[self._next_task_index] = future
        self._next_task_index += 1

    def has_next(self) -> bool:
        """Whether some submitted call's result has not been taken yet."""
        return bool(self._future_to_actor)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The result of the next submitted call, in submission order.

        Waits up to ``timeout`` seconds (None: for ever), then raises ``TimeoutError``; with
        ``ignore_if_timedout`` the late call is dropped (its actor goes back to the pool) before
        raising, so the next ``get_next`` moves on to the call after it.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        future = self._index_to_future[self._next_return_index]
        timed_out = timeout is not None and not _all_ready(_refs(future), timeout)
        if timed_out and not ignore_if_timedout:
            raise TimeoutError(TIMEOUT_MESSAGE)
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        _, actor = self._future_to_actor.pop(_key(future))
        if timed_out:
            self._return_actor(actor)
            raise TimeoutError(f"{TIMEOUT_MESSAGE}. The task {future} has been ignored.")
        return self._get_result(future, actor)

    def get_next_unordered(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The result of any submitted call that has finished (the first to finish).

        ``timeout`` and ``ignore_if_timedout`` work as in ``get_next``; an ignored call is the
        oldest one still pending.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        future = self._first_ready(timeout)
        timed_out = future is None
        if future is None:
            if not ignore_if_timedout:
                raise TimeoutError(TIMEOUT_MESSAGE)
            future = self._index_to_future[min(self._index_to_future)]
        index, actor = self._future_to_actor.pop(_key(future))
        del self._index_to_future[index]
        self._next_return_index = max(self._next_return_index, index + 1)
        if timed_out:
            self._return_actor(actor)
            raise TimeoutError(f"{TIMEOUT_MESSAGE}. The task {future} has been ignored.")
        return self._get_result(future, actor)

    def _first_ready(self, timeout: float | None) -> Future | None:
        """The oldest pending future whose refs are all ready, waiting up to ``timeout``; or None."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = list(self._index_to_future.values())
        refs = list(dict.fromkeys(r for f in pending for r in _refs(f)))
        ready: set[ObjectRef] = set()
        while True:
            for future in pending:
                if all(r in ready for r in _refs(future)):
                    return future
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            unready = [r for r in refs if r not in ready]
            newly, _ = _api.wait(unready, num_returns=1, timeout=left)
            if not newly:
                return None
            # Take every other ref that is ready by now too, without waiting.
            more, _ = _api.wait(unready, num_returns=len(unready), timeout=0)
            ready.update(newly, more)

    def _get_result(self, future: Future, actor: ActorHandle) -> Any:
        alive = True
        try:
            return _api.get(future)
        except ActorDiedError:
            alive = False
            raise
        finally:
            self._return_actor(actor, alive)

    def _return_actor(self, actor: ActorHandle, alive: bool = True) -> None:
        # A dead actor stays out: submit() would keep picking it and nothing would progress.
        if alive:
            self._idle_actors.append(actor)
        if self._pending_submits and self._idle_actors:
            self.submit(*self._pending_submits.pop(0))

    def has_free(self) -> bool:
        """Whether an actor is idle and no submitted value is waiting for one."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self) -> ActorHandle | None:
        """Take an idle actor out of the pool (None if no actor is free)."""
        return self._idle_actors.pop() if self.has_free() else None

    def push(self, actor: ActorHandle) -> None:
        """Add an actor to the pool (it picks up a waiting value at once, if there is one)."""
        busy = [a for _, a in self._future_to_actor.values()]
        if actor in self._idle_actors or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)


def _all_ready(refs: list[ObjectRef], timeout: float) -> bool:
    unique = list(dict.fromkeys(refs))
    ready, _ = _api.wait(unique, num_returns=len(unique), timeout=timeout)
    return len(ready) == len(unique)
