"""Actors: ordering, state, errors, num_returns, named actors, handles passed around, kill."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

import peer as ray
from peer import exceptions

pytestmark = pytest.mark.usefixtures("cluster")


@ray.remote
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start

    def incr(self, by: int = 1) -> int:
        self.n += by
        return self.n

    def value(self) -> int:
        return self.n

    def fail(self) -> None:
        raise RuntimeError("method failed")

    @ray.method(num_returns=2)
    def pair(self) -> tuple[int, int]:
        return self.n, -self.n

    def pid(self) -> int:
        return os.getpid()

    def context(self) -> dict[str, Any]:
        return ray.get_runtime_context().get()


@ray.remote
def incr_through(counter: Any, times: int) -> int:
    last = 0
    for _ in range(times):
        last = ray.get(counter.incr.remote())
    return last


def test_calls_run_in_submission_order() -> None:
    counter = Counter.remote()
    refs = [counter.incr.remote() for _ in range(200)]
    assert ray.get(refs) == list(range(1, 201))
    ray.kill(counter)


def test_constructor_arguments_including_refs() -> None:
    counter = Counter.remote(ray.put(40))
    assert ray.get(counter.incr.remote(2)) == 42
    ray.kill(counter)


def test_exception_in_method_does_not_kill_actor() -> None:
    counter = Counter.remote()
    ray.get(counter.incr.remote())
    with pytest.raises(RuntimeError, match="method failed") as info:
        ray.get(counter.fail.remote())
    assert isinstance(info.value, exceptions.TaskError)
    assert ray.get(counter.incr.remote()) == 2
    ray.kill(counter)


def test_method_num_returns() -> None:
    counter = Counter.remote(5)
    a, b = counter.pair.remote()
    assert ray.get([a, b]) == [5, -5]
    one = counter.pair.options(num_returns=1).remote()
    assert ray.get(one) == (5, -5)
    ray.kill(counter)


def test_actor_runs_in_its_own_process() -> None:
    first, second = Counter.remote(), Counter.remote()
    pids = ray.get([first.pid.remote(), second.pid.remote()])
    assert pids[0] != pids[1] and os.getpid() not in pids
    ray.kill(first)
    ray.kill(second)


def test_direct_calls_raise() -> None:
    with pytest.raises(TypeError, match=r"Counter\.remote\(\)"):
        Counter()
    counter = Counter.remote()
    with pytest.raises(TypeError, match=r"incr\.remote\(\)"):
        counter.incr()
    with pytest.raises(AttributeError, match="no method"):
        counter.nonexistent  # noqa: B018
    ray.kill(counter)


def test_actor_options() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        Counter.options(max_concurrency=0)
    with pytest.raises(ValueError, match="invalid option"):
        Counter.options(num_returns=2)
    counter = Counter.options(num_cpus=0, max_restarts=0).remote(1)
    assert ray.get(counter.value.remote()) == 1
    ray.kill(counter)


def test_handle_passed_to_tasks() -> None:
    counter = Counter.remote()
    results = ray.get([incr_through.remote(counter, 10) for _ in range(3)])
    assert max(results) == 30
    assert ray.get(counter.value.remote()) == 30
    ray.kill(counter)


def test_handle_returned_from_task() -> None:
    @ray.remote
    def make_counter() -> Any:
        counter = Counter.remote(100)
        ray.get(counter.incr.remote())
        return counter

    counter = ray.get(make_counter.remote())
    assert ray.get(counter.incr.remote()) == 102
    ray.kill(counter)


def test_named_actor_get_actor_and_kill() -> None:
    counter = Counter.options(name="test-named-counter").remote()
    ray.get(counter.incr.remote(5))
    same = ray.get_actor("test-named-counter")
    assert same == counter
    assert ray.get(same.incr.remote()) == 6
    with pytest.raises(ValueError):
        Counter.options(name="test-named-counter").remote()
    existing = Counter.options(name="test-named-counter", get_if_exists=True).remote()
    assert ray.get(existing.value.remote()) == 6

    ray.kill(counter)
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(counter.incr.remote(), timeout=30)
    with pytest.raises(ValueError, match="test-named-counter"):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the name is freed once the node sees the death
            ray.get_actor("test-named-counter")
            time.sleep(0.05)
    with pytest.raises(ValueError, match="no live actor"):
        ray.get_actor("never-created")


def test_kill_argument_check() -> None:
    with pytest.raises(ValueError, match="actor handle"):
        ray.kill("not an actor")  # type: ignore[arg-type]


def test_runtime_context() -> None:
    @ray.remote
    def task_context() -> dict[str, Any]:
        return ray.get_runtime_context().get()

    driver = ray.get_runtime_context()
    assert driver.get_node_id() and driver.get_task_id() is None and driver.get_actor_id() is None
    a, b = ray.get([task_context.remote(), task_context.remote()])
    assert a["task_id"] and b["task_id"] and a["task_id"] != b["task_id"]
    assert a["actor_id"] is None and a["node_id"] == driver.node_id

    counter = Counter.remote()
    inside = ray.get(counter.context.remote())
    assert inside["actor_id"] == counter._actor_id.hex()
    ray.kill(counter)
