"""``get`` of several refs raises as soon as one of them failed, as Ray's does, even while others
are still pending (a task that hangs cannot hide another one's error); ``wait`` still counts an
error as just "ready". Embedded driver, attached driver and a driver on a two-peer cluster."""

from __future__ import annotations

import time
from typing import Any

import pytest

import peer as ray
from peer import exceptions
from peers import Launcher, cluster, run_driver
from signals import Signal

pytestmark = pytest.mark.usefixtures("cluster")


@ray.remote
def blocked_on(refs: list[Any]) -> str:
    ray.get(refs[0])
    return "released"


@ray.remote
def fails(after: float = 0.0) -> None:
    time.sleep(after)
    raise ValueError("boom")


@ray.remote
def value(x: int) -> int:
    return x


def raises_within(refs: list[Any], seconds: float) -> float:
    """Seconds until ``get(refs)`` raised the task's ValueError (the get's own timeout is long)."""
    start = time.monotonic()
    with pytest.raises(ValueError, match="boom"):
        ray.get(refs, timeout=60)
    took = time.monotonic() - start
    assert took < seconds, f"get raised after {took:.2f} s"
    return took


def test_a_failed_task_raises_while_another_hangs() -> None:
    sig = Signal.remote()
    hanging = blocked_on.remote([sig.wait.remote()])
    failing = fails.remote(0.2)
    raises_within([hanging, failing], 2.0)
    # The hanging task is still pending; releasing it later has no effect on the failed get.
    assert ray.wait([hanging], timeout=0.1) == ([], [hanging])
    ray.get(sig.send.remote())
    assert ray.get(hanging, timeout=10) == "released"


def test_the_first_failure_in_list_order_is_raised_and_values_before_it_do_not_matter() -> None:
    sig = Signal.remote()
    hanging = blocked_on.remote([sig.wait.remote()])
    ok = value.remote(1)
    failing = fails.remote()
    raises_within([ok, hanging, failing], 2.0)
    # Both failed already: the first of the list is the one raised (its error is a RayTaskError
    # that is also a ValueError).
    first = fails.remote()
    ray.wait([first], timeout=10)
    with pytest.raises(exceptions.RayTaskError):
        ray.get([ok, first, failing], timeout=10)
    ray.get(sig.send.remote())
    assert ray.get([hanging, ok], timeout=10) == ["released", 1]


def test_wait_still_counts_an_error_as_ready() -> None:
    sig = Signal.remote()
    hanging = blocked_on.remote([sig.wait.remote()])
    failing = fails.remote()
    ready, rest = ray.wait([hanging, failing], num_returns=1, timeout=10)
    assert ready == [failing] and rest == [hanging]
    ready, rest = ray.wait([hanging, failing], num_returns=2, timeout=0.3)
    assert ready == [failing] and rest == [hanging]
    ray.get(sig.send.remote())


def test_a_task_blocked_in_a_get_that_fails_raises_inside_it() -> None:
    @ray.remote
    def outer(refs: list[Any]) -> str:
        try:
            ray.get(refs)
        except ValueError:
            return "raised"
        return "returned"

    sig = Signal.remote()
    hanging = blocked_on.remote([sig.wait.remote()])
    start = time.monotonic()
    assert ray.get(outer.remote([hanging, fails.remote(0.2)]), timeout=10) == "raised"
    assert time.monotonic() - start < 5
    ray.get(sig.send.remote())


def test_an_attached_driver_and_a_two_peer_cluster_fail_fast(launcher: Launcher) -> None:
    """The failing task runs on the other peer (only it has the resource); the get is answered by
    the driver's node as soon as the failure comes back."""
    a, _ = cluster(launcher, [("a", ["--num-cpus", "2"]), ("b", ["--num-cpus", "1", "--resource", "far=1"])])
    out = run_driver(
        a,
        """
        import asyncio

        @ray.remote(num_cpus=0)
        class Signal:
            def __init__(self):
                self.event = asyncio.Event()
            async def wait(self):
                await self.event.wait()
            async def send(self):
                self.event.set()

        @ray.remote
        def blocked_on(refs):
            ray.get(refs[0])
            return "released"

        @ray.remote(resources={"far": 1})
        def fails():
            time.sleep(0.2)
            raise ValueError("boom")

        sig = Signal.remote()
        hanging = blocked_on.remote([sig.wait.remote()])
        start = time.monotonic()
        try:
            ray.get([hanging, fails.remote()], timeout=30)
            raised = None
        except ValueError as e:
            raised = str(e)
        took = time.monotonic() - start
        ray.get(sig.send.remote())
        print(json.dumps({"raised": raised, "took": took, "later": ray.get(hanging, timeout=10)}))
        """,
    )
    assert out["raised"] and "boom" in out["raised"], out
    assert out["took"] < 5, out
    assert out["later"] == "released"
