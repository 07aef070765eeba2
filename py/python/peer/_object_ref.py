"""``ObjectRef``: a future for a value in the cluster — hashable, picklable and awaitable.

The id and its reference counting live in the native base class; this module adds the Python
protocols. Pickling a ref tells the node it escaped (it may outlive every local handle), and
unpickling rebuilds an ``ObjectRef`` that registers a handle in the receiving process.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio
    import concurrent.futures

from . import _native

_collecting = threading.local()


class collect_refs:
    """Context manager: refs pickled inside it are recorded (they will live inside the value
    being serialized, which holds them) instead of being marked as escaped."""

    __slots__ = ("ids", "_outer")

    def __enter__(self) -> list[bytes]:
        self._outer = getattr(_collecting, "ids", None)
        self.ids: list[bytes] = []
        _collecting.ids = self.ids
        return self.ids

    def __exit__(self, *exc: object) -> None:
        _collecting.ids = self._outer


class ObjectRef(_native.ObjectRefBase):
    """A reference to a (possibly not yet computed) value; pass it to ``peer.get`` or to tasks."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"ObjectRef({self.hex()})"

    def __reduce__(self) -> tuple[Any, ...]:
        id = self.binary()
        ids = getattr(_collecting, "ids", None)
        if ids is not None:
            ids.append(id)
        else:
            # Pickled outside peer's serializer: it may outlive every handle we can count.
            _native.ref_escaped(id)
        return (ObjectRef, (id,))

    def __await__(self) -> Generator[Any, None, Any]:
        import asyncio  # imported on first await: workers and most drivers never need it

        from ._api import get

        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        try:
            ready = bool(_native.wait([self.binary()], 1, 0.0, True))
            if ready:  # already there (the common case for results awaited late): no thread
                fut.set_result(get(self))
        except Exception as e:  # noqa: BLE001 - the awaiting coroutine gets it
            ready = True
            fut.set_exception(e)
        if not ready:
            # A daemon thread, not the loop's default executor: executor threads are joined at
            # interpreter exit, so a ref that never resolves would keep the program from exiting.
            threading.Thread(
                target=_resolve_for_loop, args=(self, loop, fut), name=f"peer-await-{self.hex()[:8]}", daemon=True
            ).start()
        return fut.__await__()

    def future(self) -> concurrent.futures.Future[Any]:
        """A ``concurrent.futures.Future`` that completes with the value (or its error)."""
        from ._api import get

        import concurrent.futures

        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def resolve() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(get(self))
            except BaseException as e:  # noqa: BLE001 - handed to the future's waiter
                fut.set_exception(e)

        threading.Thread(target=resolve, name=f"peer-future-{self.hex()[:8]}", daemon=True).start()
        return fut


_AWAIT_POLL_S = 0.5


def _resolve_for_loop(ref: ObjectRef, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any]) -> None:
    """Wait (in slices, so a cancelled await frees this thread) for ``ref``, then hand its value or
    error to ``fut`` on its event loop."""
    from ._api import get

    ok = False
    result: Any = None
    try:
        id = ref.binary()
        while not _native.wait([id], 1, _AWAIT_POLL_S, True):
            if fut.done() or loop.is_closed():
                return  # the await was cancelled (e.g. by a timeout) or its loop is gone
        result = get(ref)
        ok = True
    except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
        result = e

    def deliver() -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(result)
        else:
            fut.set_exception(result)

    try:
        loop.call_soon_threadsafe(deliver)
    except RuntimeError:
        pass  # the loop was closed meanwhile: nobody awaits the value any more
