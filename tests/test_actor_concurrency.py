"""Concurrent actors and actor life, written from Ray's docs ("AsyncIO / Concurrency for Actors",
"Terminating Actors") and its tests: async actors whose calls await each other, 1,000 calls in
flight at once, threaded actors, concurrency groups, ``__ray_ready__``, ``exit_actor()`` from each
kind of method and from a constructor, ``__ray_terminate__``, the hooks that run when an actor
ends gracefully, and ``kill(no_restart=...)``."""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import peer as ray
from peer import exceptions
from peer.actor import exit_actor

pytestmark = pytest.mark.usefixtures("cluster")


def wait_until(cond: Any, timeout: float = 10.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# ---- async actors ------------------------------------------------------------------------------


@ray.remote
class EventActor:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def wait(self) -> str:
        await self.event.wait()
        return "released"

    async def set(self) -> str:
        self.event.set()
        return "set"

    async def nap(self, seconds: float) -> int:
        await asyncio.sleep(seconds)
        return 1

    async def task_id(self) -> str | None:
        await asyncio.sleep(0.01)
        return ray.get_runtime_context().get_task_id()

    def sync_method(self) -> str:
        return "sync in an async actor"


def test_an_async_call_awaits_an_event_another_call_sets() -> None:
    a = EventActor.remote()
    waiting = a.wait.remote()
    with pytest.raises(exceptions.GetTimeoutError):
        ray.get(waiting, timeout=0.2)
    assert ray.get(a.set.remote(), timeout=10) == "set"
    assert ray.get(waiting, timeout=10) == "released"
    assert ray.get(a.sync_method.remote(), timeout=10) == "sync in an async actor"


def test_a_thousand_async_calls_run_at_once() -> None:
    a = EventActor.remote()
    ray.get(a.__ray_ready__.remote(), timeout=30)
    start = time.monotonic()
    refs = [a.nap.remote(0.1) for _ in range(1000)]
    assert sum(ray.get(refs, timeout=30)) == 1000
    took = time.monotonic() - start
    print(f"1,000 concurrent asyncio.sleep(0.1) calls took {took:.2f} s")
    assert took < 2.0


def test_each_async_call_sees_its_own_task_id() -> None:
    a = EventActor.remote()
    refs = [a.task_id.remote() for _ in range(5)]
    ids = ray.get(refs, timeout=10)
    assert len(set(ids)) == 5
    assert all(isinstance(i, str) for i in ids)


def test_max_concurrency_limits_an_async_actor() -> None:
    a = EventActor.options(max_concurrency=2).remote()
    ray.get(a.__ray_ready__.remote(), timeout=30)
    start = time.monotonic()
    ray.get([a.nap.remote(0.3) for _ in range(4)], timeout=10)
    took = time.monotonic() - start
    assert 0.55 < took < 2.0, took  # two rounds of two


# ---- threaded actors ---------------------------------------------------------------------------


@ray.remote(max_concurrency=8)
class Blocking:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def block(self, seconds: float) -> int:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(seconds)
        with self.lock:
            self.running -= 1
        return threading.get_ident()

    def peak_seen(self) -> int:
        return self.peak


def test_a_threaded_actor_runs_eight_blocking_calls_at_once() -> None:
    b = Blocking.remote()
    ray.get(b.__ray_ready__.remote(), timeout=30)
    start = time.monotonic()
    threads = ray.get([b.block.remote(0.5) for _ in range(8)], timeout=10)
    took = time.monotonic() - start
    assert len(set(threads)) == 8
    assert ray.get(b.peak_seen.remote(), timeout=10) == 8
    assert took < 1.4, took


def test_a_plain_actor_still_runs_one_call_at_a_time_in_order() -> None:
    b = Blocking.options(max_concurrency=1).remote()
    ray.get([b.block.remote(0.05) for _ in range(4)], timeout=10)
    assert ray.get(b.peak_seen.remote(), timeout=10) == 1


@ray.remote(concurrency_groups={"io": 2, "compute": 1})
class Grouped:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    def _enter(self, group: str) -> None:
        with self.lock:
            self.running[group] = self.running.get(group, 0) + 1
            self.peak[group] = max(self.peak.get(group, 0), self.running[group])

    def _leave(self, group: str) -> None:
        with self.lock:
            self.running[group] -= 1

    @ray.method(concurrency_group="io")
    def io(self) -> str:
        self._enter("io")
        time.sleep(0.2)
        self._leave("io")
        return "io"

    @ray.method(concurrency_group="compute")
    def compute(self) -> str:
        self._enter("compute")
        time.sleep(0.2)
        self._leave("compute")
        return "compute"

    def anywhere(self, group: str) -> str:
        self._enter(group)
        time.sleep(0.2)
        self._leave(group)
        return group

    def peaks(self) -> dict[str, int]:
        return dict(self.peak)


def test_concurrency_groups_limit_each_group_on_its_own() -> None:
    g = Grouped.remote()
    refs = [g.io.remote() for _ in range(4)] + [g.compute.remote() for _ in range(3)]
    # A call's own group, chosen at the call.
    refs += [g.anywhere.options(concurrency_group="io").remote("io") for _ in range(2)]
    assert sorted(set(ray.get(refs, timeout=20))) == ["compute", "io"]
    peaks = ray.get(g.peaks.remote(), timeout=10)
    assert peaks == {"io": 2, "compute": 1}, peaks
    with pytest.raises(exceptions.TaskError, match="concurrency group 'nope' is not defined"):
        ray.get(g.anywhere.options(concurrency_group="nope").remote("x"), timeout=10)


def test_bad_concurrency_options_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        Blocking.options(max_concurrency=0)
    with pytest.raises(ValueError, match="concurrency_groups"):
        Grouped.options(concurrency_groups={"io": 0})


# ---- actor life --------------------------------------------------------------------------------


@ray.remote(max_restarts=2)
class Exiting:
    def __init__(self, marker_dir: str, tag: str) -> None:
        self.dir = marker_dir
        self.tag = tag
        atexit.register(self._touch, "atexit")

    def _touch(self, what: str) -> None:
        Path(self.dir, f"{self.tag}.{what}").touch()

    def __ray_shutdown__(self) -> None:
        self._touch("shutdown")

    def exit(self) -> None:
        exit_actor()
        self._touch("after_exit")  # never runs

    def exit_but_catch(self) -> None:
        try:
            exit_actor()
        except SystemExit:
            pass

    def ping(self) -> str:
        return "pong"

    def pid(self) -> int:
        return os.getpid()


def markers(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def test_exit_actor_outside_an_actor_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="exit_actor API is called on a non-actor worker"):
        exit_actor()

    @ray.remote
    def task() -> None:
        exit_actor()

    with pytest.raises(TypeError, match="non-actor worker"):
        ray.get(task.remote(), timeout=10)


@pytest.mark.parametrize("method", ["exit", "exit_but_catch"])
def test_exit_actor_from_a_method_ends_the_actor_for_good(tmp_path: Path, method: str) -> None:
    a = Exiting.remote(str(tmp_path), "a")
    assert ray.get(a.__ray_ready__.remote(), timeout=30) is True
    exiting = getattr(a, method).remote()
    queued = a.ping.remote()
    for ref in (exiting, queued):
        with pytest.raises(exceptions.ActorDiedError, match=r"exit_actor\(\)"):
            ray.get(ref, timeout=10)
    # Its hooks ran; it is not restarted (max_restarts=2), so later calls fail too.
    wait_until(lambda: {"a.atexit", "a.shutdown"} <= markers(tmp_path), what="the exit hooks")
    assert "a.after_exit" not in markers(tmp_path)
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(a.ping.remote(), timeout=10)


def test_exit_actor_from_a_constructor(tmp_path: Path) -> None:
    @ray.remote
    class Quits:
        def __init__(self, d: str) -> None:
            atexit.register(lambda: Path(d, "ctor.atexit").touch())
            exit_actor()

        def ping(self) -> str:
            return "pong"

    q = Quits.remote(str(tmp_path))
    with pytest.raises(exceptions.ActorDiedError, match=r"exit_actor\(\)"):
        ray.get(q.ping.remote(), timeout=10)
    wait_until(lambda: "ctor.atexit" in markers(tmp_path), what="the atexit hook")


def test_exit_actor_from_an_async_method(tmp_path: Path) -> None:
    @ray.remote
    class AsyncQuits:
        def __init__(self, d: str) -> None:
            atexit.register(lambda: Path(d, "async.atexit").touch())

        async def exit(self) -> None:
            await asyncio.sleep(0.01)
            exit_actor()

        async def ping(self) -> str:
            return "pong"

    a = AsyncQuits.remote(str(tmp_path))
    assert ray.get(a.ping.remote(), timeout=30) == "pong"
    with pytest.raises(exceptions.ActorDiedError, match=r"exit_actor\(\)"):
        ray.get(a.exit.remote(), timeout=10)
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(a.ping.remote(), timeout=10)
    wait_until(lambda: "async.atexit" in markers(tmp_path), what="the atexit hook")


def test_exit_actor_in_a_threaded_actor_lets_running_calls_deliver() -> None:
    @ray.remote(max_concurrency=4)
    class Busy:
        def work(self, v: int) -> int:
            time.sleep(0.5)
            return v

        def exit(self) -> None:
            exit_actor()

    b = Busy.remote()
    ray.get(b.__ray_ready__.remote(), timeout=30)
    running = [b.work.remote(i) for i in range(3)]
    time.sleep(0.1)
    exiting = b.exit.remote()
    assert ray.get(running, timeout=10) == [0, 1, 2]
    with pytest.raises(exceptions.ActorDiedError, match=r"exit_actor\(\)"):
        ray.get(exiting, timeout=10)


def test_ray_terminate_runs_after_earlier_calls_and_ends_the_actor(tmp_path: Path) -> None:
    a = Exiting.remote(str(tmp_path), "t")
    first = a.ping.remote()
    a.__ray_terminate__.remote()
    assert ray.get(first, timeout=30) == "pong"
    wait_until(lambda: {"t.atexit", "t.shutdown"} <= markers(tmp_path), what="the exit hooks")
    with pytest.raises(exceptions.ActorDiedError, match="__ray_terminate__"):
        ray.get(a.ping.remote(), timeout=10)


def test_kill_runs_no_hooks_and_no_restart_decides_whether_it_comes_back(tmp_path: Path) -> None:
    a = Exiting.remote(str(tmp_path), "k")
    pid = ray.get(a.pid.remote(), timeout=30)
    ray.kill(a, no_restart=False)
    # It comes back (max_restarts=2) in a new process, constructor run again.
    wait_until(lambda: _answers(a), what="the restarted actor")
    assert ray.get(a.pid.remote(), timeout=10) != pid
    ray.kill(a)  # no_restart=True by default
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(a.ping.remote(), timeout=10)
    time.sleep(0.3)
    assert not markers(tmp_path), "kill() runs neither __ray_shutdown__ nor atexit hooks"


def _answers(a: Any) -> bool:
    try:
        return bool(ray.get(a.ping.remote(), timeout=2) == "pong")
    except exceptions.ActorDiedError:
        return False
