"""``Queue``: Ray's ``ray.util.queue.Queue``, a FIFO queue held by an actor.

The queue object only holds the actor's handle, so it pickles and can be passed to tasks and
actors on any peer; every copy uses the same queue. The actor runs one call at a time and never
blocks: a blocking ``put``/``get`` calls its non-blocking methods and, while the queue is full or
empty, polls again after a short pause (1 ms, doubling up to 50 ms) until it succeeds or its
``timeout`` passes. The actor keeps the items in FIFO order whoever puts and gets them; which of
several waiting callers gets the next item is not defined (as in Ray). A call already sent to the
actor is always waited for, so an item is never lost, and a timed-out ``get`` or ``put`` may return
up to one actor round trip after its timeout.

Items are stored as they were put: an ObjectRef put in the queue comes out as that ObjectRef.
"""

from __future__ import annotations

import asyncio
import queue as _stdlib_queue
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from .. import _actor, _api
from .._actor import ActorClass, ActorHandle
from .._options import Options

__all__ = ["Empty", "Full", "Queue"]

FIRST_PAUSE_S = 0.001
LONGEST_PAUSE_S = 0.05


class Empty(_stdlib_queue.Empty):
    """Raised by a get from an empty Queue: at once when not blocking, else when the timeout passes."""


class Full(_stdlib_queue.Full):
    """Raised by a put into a full Queue: at once when not blocking, else when the timeout passes."""


class _QueueActor:
    """The actor that holds the items. Its methods never block; they say whether they could act."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.items: deque[Any] = deque()

    def qsize(self) -> int:
        return len(self.items)

    def empty(self) -> bool:
        return not self.items

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self.items)

    def try_put(self, boxed: tuple[Any]) -> bool:
        if self.full():
            return False
        self.items.append(boxed[0])
        return True

    def try_put_batch(self, items: list[Any]) -> int | None:
        """Adds all of ``items``, or none of them and returns the queue's size."""
        if self.maxsize > 0 and len(items) + len(self.items) > self.maxsize:
            return len(self.items)
        self.items.extend(items)
        return None

    def try_get(self) -> tuple[bool, Any]:
        if not self.items:
            return False, None
        return True, self.items.popleft()

    def try_get_batch(self, num_items: int) -> list[Any] | int:
        """The first ``num_items`` items, or (taking none) the queue's size if it has fewer."""
        if num_items > len(self.items):
            return len(self.items)
        return [self.items.popleft() for _ in range(num_items)]

    def peek(self) -> tuple[bool, Any]:
        return (True, self.items[0]) if self.items else (False, None)

    def clear(self) -> None:
        self.items.clear()


_RemoteQueueActor = ActorClass(_QueueActor, Options())


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


class _Backoff:
    """The pauses between polls of a blocking put/get, bounded by its deadline."""

    def __init__(self, timeout: float | None) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.pause = FIRST_PAUSE_S

    def next_pause(self) -> float | None:
        """Seconds to sleep before the next try; None once the deadline has passed."""
        pause = self.pause
        self.pause = min(self.pause * 2, LONGEST_PAUSE_S)
        if self.deadline is None:
            return pause
        left = self.deadline - time.monotonic()
        return None if left <= 0 else min(pause, left)


class Queue:
    """A first-in, first-out queue that tasks and actors on any peer can share.

    ``maxsize`` <= 0 would be unbounded in the standard library; here, as in Ray, 0 means unbounded
    and a negative size is an error. ``actor_options`` go to the queue actor's ``.options()``
    (e.g. ``{"resources": {"b": 1}}`` to place it on a given peer).

    >>> q = Queue()
    >>> for i in range(3):
    ...     q.put(i)
    >>> [q.get() for _ in range(3)]
    [0, 1, 2]
    """

    def __init__(self, maxsize: int = 0, actor_options: Mapping[str, Any] | None = None) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, got {type(maxsize).__name__}")
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0 (0: unbounded), got {maxsize}")
        if actor_options is not None and not isinstance(actor_options, Mapping):
            raise TypeError(f"actor_options must be a dict of actor options, got {type(actor_options).__name__}")
        self.maxsize = maxsize
        self.actor: ActorHandle | None = _RemoteQueueActor.options(**(actor_options or {})).remote(maxsize)

    def _handle(self) -> ActorHandle:
        if self.actor is None:
            raise RuntimeError("this Queue was shut down; create a new Queue")
        return self.actor

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """The number of items in the queue."""
        n: int = _api.get(self._handle().qsize.remote())
        return n

    def qsize(self) -> int:
        """The number of items in the queue."""
        return self.size()

    def empty(self) -> bool:
        """Whether the queue is empty."""
        empty: bool = _api.get(self._handle().empty.remote())
        return empty

    def full(self) -> bool:
        """Whether the queue holds ``maxsize`` items (never, when unbounded)."""
        full: bool = _api.get(self._handle().full.remote())
        return full

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item`` at the end.

        While the queue is full, waits (``block``) for up to ``timeout`` seconds (None: for ever).
        Raises ``Full`` if the queue is full and ``block`` is False or the timeout passed, and
        ``ValueError`` for a negative timeout.
        """
        handle = self._handle()
        if block:
            _check_timeout(timeout)
        # A 1-tuple, so that an ObjectRef item is stored as a ref (a top-level ref argument
        # would be replaced by its value).
        boxed = (item,)
        if _api.get(handle.try_put.remote(boxed)):
            return
        if not block:
            raise Full
        backoff = _Backoff(timeout)
        stored = _api.put(boxed)  # serialized once for all the tries that follow
        while (pause := backoff.next_pause()) is not None:
            time.sleep(pause)
            if _api.get(handle.try_put.remote(stored)):
                return
        raise Full

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the first item.

        While the queue is empty, waits (``block``) for up to ``timeout`` seconds (None: for ever).
        Raises ``Empty`` if the queue is empty and ``block`` is False or the timeout passed, and
        ``ValueError`` for a negative timeout.
        """
        handle = self._handle()
        if block:
            _check_timeout(timeout)
        found, item = _api.get(handle.try_get.remote())
        if found:
            return item
        if not block:
            raise Empty
        backoff = _Backoff(timeout)
        while (pause := backoff.next_pause()) is not None:
            time.sleep(pause)
            found, item = _api.get(handle.try_get.remote())
            if found:
                return item
        raise Empty

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """``put`` for coroutines: awaits instead of blocking the event loop."""
        handle = self._handle()
        if block:
            _check_timeout(timeout)
        boxed = (item,)
        if await handle.try_put.remote(boxed):
            return
        if not block:
            raise Full
        backoff = _Backoff(timeout)
        stored = _api.put(boxed)
        while (pause := backoff.next_pause()) is not None:
            await asyncio.sleep(pause)
            if await handle.try_put.remote(stored):
                return
        raise Full

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """``get`` for coroutines: awaits instead of blocking the event loop."""
        handle = self._handle()
        if block:
            _check_timeout(timeout)
        found, item = await handle.try_get.remote()
        if found:
            return item
        if not block:
            raise Empty
        backoff = _Backoff(timeout)
        while (pause := backoff.next_pause()) is not None:
            await asyncio.sleep(pause)
            found, item = await handle.try_get.remote()
            if found:
                return item
        raise Empty

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``: raises ``Full`` if the queue is full."""
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        """``get(block=False)``: raises ``Empty`` if the queue is empty."""
        return self.get(block=False)

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Add all ``items`` in order, or none: raises ``Full`` if they do not all fit."""
        if not isinstance(items, Iterable):
            raise TypeError(f"items must be an iterable, got {type(items).__name__}")
        batch = list(items)
        size = _api.get(self._handle().try_put_batch.remote(batch))
        if size is not None:
            raise Full(f"Cannot add {len(batch)} items to queue of size {size} and maxsize {self.maxsize}.")

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Remove and return the first ``num_items`` items; raises ``Empty`` (taking none) if the
        queue holds fewer."""
        if isinstance(num_items, bool) or not isinstance(num_items, int):
            raise TypeError(f"num_items must be an int, got {type(num_items).__name__}")
        if num_items < 0:
            raise ValueError(f"num_items must be >= 0, got {num_items}")
        got = _api.get(self._handle().try_get_batch.remote(num_items))
        if isinstance(got, int):
            raise Empty(f"Cannot get {num_items} items from queue of size {got}.")
        items: list[Any] = got
        return items

    def peek(self) -> Any:
        """The first item, left in the queue; raises ``Empty`` if there is none."""
        found, item = _api.get(self._handle().peek.remote())
        if not found:
            raise Empty
        return item

    def clear(self) -> None:
        """Remove every item."""
        _api.get(self._handle().clear.remote())

    def shutdown(self, force: bool = False, grace_period_s: float = 5) -> None:
        """Stop the queue actor, for every holder of the queue; its items are dropped.

        Without ``force``, the calls already sent to it from here finish first (for up to
        ``grace_period_s`` seconds); then the actor is killed. Calling it again does nothing.
        """
        handle, self.actor = self.actor, None
        if handle is None:
            return
        if not force:
            # Calls run in submission order: once this one is done, the earlier ones are too.
            _api.wait([handle.qsize.remote()], timeout=grace_period_s)
        _actor.kill(handle)
