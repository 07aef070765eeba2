"""Tasks that submit tasks and block in get: no deadlock even with a single CPU."""

from __future__ import annotations

from typing import Any

import peer as ray


@ray.remote
def leaf(x: int) -> int:
    return x + 1


@ray.remote
def middle(x: int) -> int:
    return ray.get(leaf.remote(x)) * 10


@ray.remote
def top(x: int) -> int:
    return ray.get(middle.remote(x)) + ray.get(ray.put(5))


@ray.remote
class Parent:
    def spawn(self, x: int) -> int:
        return ray.get(top.remote(x))


def test_three_levels_with_one_cpu(make_cluster: Any) -> None:
    make_cluster(num_cpus=1)
    assert ray.get(top.remote(1), timeout=60) == 25
    assert ray.get([top.remote(i) for i in range(4)], timeout=60) == [(i + 1) * 10 + 5 for i in range(4)]


def test_actor_submits_nested_tasks_with_one_cpu(make_cluster: Any) -> None:
    make_cluster(num_cpus=1)
    parent = Parent.remote()
    assert ray.get(parent.spawn.remote(2), timeout=60) == 35


def test_nested_wait(make_cluster: Any) -> None:
    make_cluster(num_cpus=1)

    @ray.remote
    def waits() -> int:
        refs = [leaf.remote(i) for i in range(3)]
        ready, rest = ray.wait(refs, num_returns=3, timeout=60)
        return sum(ray.get(ready)) + len(rest)

    assert ray.get(waits.remote(), timeout=60) == 6
