"""Concurrent actors, worker side: the calls of a threaded or async actor run off the receive loop.

Ray's rules (its "AsyncIO / Concurrency for Actors" guide), which this module follows:

- An actor with any ``async def`` method is an *async actor*: its calls run as coroutines on one
  event loop, in a thread of its own, at most ``max_concurrency`` (default 1,000) at once. A
  synchronous method of an async actor runs on the loop too (and blocks it while it runs).
- Otherwise an actor with ``max_concurrency > 1`` is a *threaded actor*: its calls run in a pool of
  ``max_concurrency`` threads inside the actor's one process.
- ``concurrency_groups={"io": 2, ...}`` gives each named group its own limit (its own semaphore on
  the loop, or its own thread pool); a method joins a group with ``@method(concurrency_group=)`` or
  a call with ``.options(concurrency_group=)``; everything else is in the default group, limited by
  ``max_concurrency``.

A call hands its outcome to ``_native.task_finished`` itself; the receive loop never waits for it.
Everything here runs in the actor's worker process only.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _native

if TYPE_CHECKING:  # imported where used: drivers import this module, and asyncio is slow to import
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

DEFAULT_ASYNC_CONCURRENCY = 1000
# The attribute @method(concurrency_group=...) leaves on a function.
GROUP_ATTR = "__peer_concurrency_group__"
# Between a method's name and a call's concurrency group in the method string sent to the worker.
GROUP_SEPARATOR = "\x00"



@dataclass(frozen=True)
class PendingCall:
    """One call of a concurrent actor: ``invoke`` starts the method (its result may be awaitable),
    ``outcome`` turns the result into the executor's ``(0, returns)``, ``failure`` an exception
    into ``(1, (message, blob))``."""

    task_id: bytes
    name: str
    group: str | None
    invoke: Callable[[], Any]
    outcome: Callable[[Any], tuple[int, Any]]
    failure: Callable[[BaseException], tuple[int, Any]]
    # Why the actor exits on purpose, once a call asked for it (exit_actor(), __ray_terminate__).
    exiting: Callable[[], str | None]


@dataclass(frozen=True)
class ActorSetup:
    """How an actor runs its calls, sent (hidden) with its constructor's arguments."""

    max_concurrency: int | None = None
    concurrency_groups: Mapping[str, int] = field(default_factory=dict)


def is_async_class(cls: type) -> bool:
    """Whether ``cls`` has any ``async def`` method (then its actor is an async actor)."""
    for name in dir(cls):
        attr = inspect.getattr_static(cls, name, None)
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if inspect.iscoroutinefunction(attr) or inspect.isasyncgenfunction(attr):
            return True
    return False


def split_method(method: str) -> tuple[str, str | None]:
    """``(method name, the call's concurrency group or None)`` of a method string."""
    name, sep, group = method.partition(GROUP_SEPARATOR)
    return name, (group if sep else None)


# How long an exiting actor waits for its other running calls to deliver their results.
EXIT_DRAIN_SECONDS = 10.0


class ActorExit(SystemExit):
    """What ``exit_actor()`` raises in a threaded or one-call-at-a-time actor (Ray raises
    ``SystemExit``); catching it does not stop the exit."""


class Runner(ABC):
    """Runs an actor's calls concurrently; :meth:`submit` returns at once.

    When a call asks the actor to exit, the calls running beside it finish and deliver their
    results (for up to ``EXIT_DRAIN_SECONDS``); the call that asked fails with ``ActorDiedError``
    (a ``__ray_terminate__`` call returns None), and then the node is told.
    """

    def __init__(self, instance: Any, setup: ActorSetup) -> None:
        self._instance = instance
        self._groups = dict(setup.concurrency_groups)
        self._lock = threading.Lock()
        self._running = 0
        self._drained = threading.Condition(self._lock)
        self._exit_started = False

    def _started(self) -> None:
        with self._lock:
            self._running += 1

    def _finished(self, call: PendingCall, result: tuple[int, Any] | None, started: float) -> None:
        """Report a call (None: it asked for the exit, and the node fails it), then start the
        exit if one was asked for."""
        if result is not None:
            _report(call, result, started)
        with self._lock:
            self._running -= 1
            self._drained.notify_all()
        reason = call.exiting()
        if reason is not None:
            self._begin_exit(reason)

    def _begin_exit(self, reason: str) -> None:
        with self._lock:
            if self._exit_started:
                return
            self._exit_started = True

        def drain_then_exit() -> None:
            deadline = time.monotonic() + EXIT_DRAIN_SECONDS
            with self._lock:
                while self._running > 0 and time.monotonic() < deadline:
                    self._drained.wait(timeout=max(0.0, deadline - time.monotonic()))
            try:
                _native.actor_exit(reason)
            except ConnectionError:
                pass  # the node is gone already

        threading.Thread(target=drain_then_exit, name="actor-exit", daemon=True).start()

    def group_of(self, method: str, group: str | None) -> str | None:
        """The concurrency group a call runs in (None: the default group)."""
        if group is None:
            attr = getattr(type(self._instance), method, None)
            group = getattr(attr, GROUP_ATTR, None)
        if group is not None and group not in self._groups:
            known = ", ".join(sorted(self._groups)) or "none"
            raise ValueError(
                f"concurrency group {group!r} is not defined for this actor (its groups: {known}); "
                "declare it with @remote(concurrency_groups={...})"
            )
        return group

    @abstractmethod
    def submit(self, call: PendingCall) -> None:
        """Start ``call``; it reports its own outcome."""

    def cancel(self, task_id: bytes) -> None:
        """The node cancelled a call: one not started yet is skipped (the caller's ``invoke``
        checks); a running one runs on, as Ray's threaded actors do (async actors override)."""

    def stop(self) -> None:
        """Stop taking calls (the process is about to exit)."""


def _report(call: PendingCall, result: tuple[int, Any], started: float) -> None:
    run_us = int((time.monotonic() - started) * 1e6)
    try:
        _native.task_finished(call.task_id, call.name, result, run_us)
    except ConnectionError:
        pass  # the node is gone; nobody is left to tell


def _is_exit(e: BaseException, call: PendingCall) -> bool:
    """Whether a call ended by asking the actor to exit (exit_actor() raised in it)."""
    from .exceptions import AsyncioActorExit

    return isinstance(e, (SystemExit, AsyncioActorExit)) and call.exiting() is not None


class ThreadedRunner(Runner):
    """A thread pool per concurrency group (Ray's threaded actors)."""

    def __init__(self, instance: Any, setup: ActorSetup) -> None:
        from concurrent.futures import ThreadPoolExecutor

        super().__init__(instance, setup)
        default = setup.max_concurrency or 1
        self._pools: dict[str | None, ThreadPoolExecutor] = {
            None: ThreadPoolExecutor(max_workers=default, thread_name_prefix="actor")
        }
        for group, limit in self._groups.items():
            self._pools[group] = ThreadPoolExecutor(max_workers=limit, thread_name_prefix=f"actor-{group}")

    def submit(self, call: PendingCall) -> None:
        started = time.monotonic()
        self._started()

        def run() -> None:
            result: tuple[int, Any] | None
            try:
                result = call.outcome(call.invoke())
            except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
                result = None if _is_exit(e, call) else call.failure(e)
            self._finished(call, result, started)

        self._pools[call.group].submit(run)

    def stop(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)


class AsyncRunner(Runner):
    """One event loop in its own thread; a semaphore per concurrency group (Ray's async actors)."""

    def __init__(self, instance: Any, setup: ActorSetup) -> None:
        import asyncio

        super().__init__(instance, setup)
        self.loop = asyncio.new_event_loop()
        limits: dict[str | None, int] = {None: setup.max_concurrency or DEFAULT_ASYNC_CONCURRENCY}
        limits.update(self._groups)
        self._limits = limits
        self._semaphores: dict[str | None, asyncio.Semaphore] = {}
        # Running calls by task id (the loop keeps only weak references to its tasks).
        self._tasks: dict[bytes, asyncio.Task[None]] = {}
        self._thread = threading.Thread(target=self._run_loop, name="actor-event-loop", daemon=True)
        self._thread.start()

    def _run_loop(self) -> None:
        import asyncio

        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _semaphore(self, group: str | None) -> asyncio.Semaphore:
        import asyncio

        # Made on the loop's thread, the first time a group is used.
        sem = self._semaphores.get(group)
        if sem is None:
            sem = self._semaphores[group] = asyncio.Semaphore(self._limits[group])
        return sem

    def submit(self, call: PendingCall) -> None:
        started = time.monotonic()
        self._started()

        async def run() -> None:
            result: tuple[int, Any] | None
            try:
                # A call cancelled while it waits for its group's turn ends here too.
                async with self._semaphore(call.group):
                    value = call.invoke()
                    if inspect.isawaitable(value):
                        value = await value
                    result = call.outcome(value)
            except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
                result = None if _is_exit(e, call) else call.failure(e)
            self._finished(call, result, started)

        def start() -> None:
            task = self.loop.create_task(run())
            self._tasks[call.task_id] = task
            task.add_done_callback(lambda _: self._tasks.pop(call.task_id, None))

        self.loop.call_soon_threadsafe(start)

    def cancel(self, task_id: bytes) -> None:
        """A running (or waiting) call is cancelled as an asyncio task, as Ray does."""

        def cancel_on_loop() -> None:
            task = self._tasks.get(task_id)
            if task is not None:
                task.cancel()

        self.loop.call_soon_threadsafe(cancel_on_loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def runner_for(instance: Any, setup: ActorSetup) -> Runner | None:
    """The runner an actor needs, or None when it runs one call at a time on the receive loop."""
    if is_async_class(type(instance)):
        return AsyncRunner(instance, setup)
    if (setup.max_concurrency or 1) > 1 or setup.concurrency_groups:
        return ThreadedRunner(instance, setup)
    return None
