"""``cancel`` with Ray's semantics (its ``ray.cancel`` docs and ``test_cancel.py``): a task not
started never runs, a running one gets ``KeyboardInterrupt`` (``force=True``: its worker is
killed), ``recursive`` reaches the tasks it submitted, dependents fail instead of waiting, actor
calls follow the actor's execution model, and a cancel reaches a task on another peer. Every test
finishes within seconds; none can hang (each ``get`` has a timeout)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import peer as ray
from peer import exceptions
from peers import Launcher, cluster, run_driver
from signals import Signal

pytestmark = pytest.mark.usefixtures("cluster")


@ray.remote
def wait_for(refs: list[Any]) -> Any:
    return ray.get(refs[0])


@ray.remote
def ident(x: Any) -> Any:
    return x


def cancelled_within(ref: Any, seconds: float) -> float:
    start = time.monotonic()
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=seconds)
    return time.monotonic() - start


def test_cancelling_the_head_of_a_100_step_chain_fails_every_step() -> None:
    sig = Signal.remote()
    head = wait_for.remote([sig.wait.remote()])
    chain = [head]
    for _ in range(99):
        chain.append(ident.remote(chain[-1]))
    ready, _ = ray.wait([head], timeout=0.2)
    assert not ready
    start = time.monotonic()
    ray.cancel(head)
    for ref in chain:
        cancelled_within(ref, 5)
    took = time.monotonic() - start
    print(f"a 100-step chain failed with TaskCancelledError {took:.3f} s after the cancel")
    assert took < 5
    ray.get(sig.send.remote(), timeout=10)


def test_cancelling_a_task_fails_its_ten_dependents() -> None:
    sig = Signal.remote()
    head = wait_for.remote([sig.wait.remote()])
    dependents = [ident.remote(head) for _ in range(10)]
    ray.cancel(head)
    for d in dependents:
        cancelled_within(d, 5)
    ray.get(sig.send.remote(), timeout=10)


def test_cancelling_the_tail_leaves_the_head_running() -> None:
    sig = Signal.remote()
    head = wait_for.remote([sig.wait.remote()])
    tail = ident.remote(ident.remote(head))
    ray.cancel(tail)
    cancelled_within(tail, 5)
    with pytest.raises(exceptions.GetTimeoutError):
        ray.get(head, timeout=0.2)
    ray.get(sig.send.remote(), timeout=10)
    assert ray.get(head, timeout=10) is None


@ray.remote
def tree(depth: int) -> int:
    if depth == 0:
        time.sleep(60)
        return 1
    return sum(ray.get([tree.remote(depth - 1) for _ in range(2)]))


def all_cpus_free() -> bool:
    return ray.available_resources().get("CPU") == ray.cluster_resources().get("CPU")


def test_a_recursive_cancel_of_a_tree_ends_every_task_in_it() -> None:
    root = tree.remote(2)  # 7 tasks; the 4 leaves sleep
    time.sleep(1.0)
    took = cancelled_within_after(root, lambda: ray.cancel(root, recursive=True), 5)
    print(f"the tree's root failed with TaskCancelledError {took:.3f} s after a recursive cancel")
    deadline = time.monotonic() + 5
    while not all_cpus_free():
        assert time.monotonic() < deadline, f"the tree's tasks still run: {ray.available_resources()}"
        time.sleep(0.05)


def cancelled_within_after(ref: Any, cancel: Any, seconds: float) -> float:
    start = time.monotonic()
    cancel()
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=seconds)
    return time.monotonic() - start


@ray.remote
def spin_until_interrupted() -> str:
    try:
        while True:
            pass
    except KeyboardInterrupt:
        return "caught and returned"  # the caller still sees the cancel


def test_a_running_task_is_interrupted_and_a_forced_one_killed() -> None:
    for force in (False, True):
        ref = spin_until_interrupted.remote()
        time.sleep(0.5)
        took = cancelled_within_after(ref, lambda r=ref, f=force: ray.cancel(r, force=f), 5)
        print(f"force={force}: a spinning task failed with TaskCancelledError after {took:.3f} s")
    # The pool is whole again: a new task runs.
    assert ray.get(ident.remote(7), timeout=30) == 7


def test_a_finished_task_is_left_as_it_is_and_a_queued_one_never_runs() -> None:
    done = ident.remote("kept")
    assert ray.get(done, timeout=10) == "kept"
    ray.cancel(done)
    assert ray.get(done, timeout=10) == "kept"

    @ray.remote(resources={"widget": 2})
    def hog(sig: list[Any]) -> None:
        ray.get(sig[0])

    @ray.remote(resources={"widget": 1})
    def must_not_run() -> str:
        return "ran"

    sig = Signal.remote()
    blocker = hog.remote([sig.wait.remote()])
    queued = must_not_run.remote()
    ray.cancel(queued)
    cancelled_within(queued, 5)
    ray.get(sig.send.remote(), timeout=10)
    ray.get(blocker, timeout=10)


def test_actor_calls_follow_the_actors_execution_model() -> None:
    @ray.remote
    class Slow:
        def work(self, seconds: float) -> str:
            time.sleep(seconds)
            return "finished"

    @ray.remote
    class AsyncSlow:
        async def work(self, seconds: float) -> str:
            await asyncio.sleep(seconds)
            return "finished"

    # A running call of a regular actor runs on; the one queued behind it never starts.
    s = Slow.remote()
    ray.get(s.__ray_ready__.remote(), timeout=30)
    running = s.work.remote(0.5)
    queued = s.work.remote(0)
    time.sleep(0.1)
    ray.cancel(running)
    ray.cancel(queued)
    assert ray.get(running, timeout=10) == "finished"
    cancelled_within(queued, 5)
    # A running call of an async actor is cancelled as an asyncio task.
    a = AsyncSlow.remote()
    ray.get(a.__ray_ready__.remote(), timeout=30)
    ref = a.work.remote(60)
    time.sleep(0.2)
    cancelled_within_after(ref, lambda: ray.cancel(ref), 5)
    assert ray.get(a.work.remote(0), timeout=10) == "finished"


def test_cancel_rejects_what_is_not_a_ref() -> None:
    with pytest.raises(TypeError, match="ObjectRef"):
        ray.cancel("not a ref")  # type: ignore[arg-type]


CROSS_PEER = """
@ray.remote(resources={"b": 1})
def spin():
    while True:
        pass

@ray.remote(resources={"b": 1})
def outer():
    return [spin.remote()]  # a ref owned by b, running on b

out = {}
ref = spin.remote()
time.sleep(1.0)
start = time.monotonic()
ray.cancel(ref)
try:
    ray.get(ref, timeout=10)
except ray.exceptions.TaskCancelledError:
    out["sent"] = time.monotonic() - start
[inner] = ray.get(outer.remote(), timeout=30)
time.sleep(1.0)
start = time.monotonic()
ray.cancel(inner)
try:
    ray.get(inner, timeout=10)
except ray.exceptions.TaskCancelledError:
    out["borrowed"] = time.monotonic() - start
print(json.dumps(out))
"""


def test_a_cancel_reaches_a_task_on_another_peer_and_a_borrowed_refs_owner(launcher: Launcher) -> None:
    a, _ = cluster(launcher, [("a", ["--num-cpus", "1"]), ("b", ["--num-cpus", "2", "--resource", "b=2"])])
    out = run_driver(a, CROSS_PEER, timeout=90)
    print(f"cancels across peers: {out}")
    assert out.get("sent", 99) < 5, out
    assert out.get("borrowed", 99) < 5, out


def test_a_running_actor_call_sees_its_cancel_with_is_canceled() -> None:
    @ray.remote
    class Polite:
        def work(self) -> str:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if ray.get_runtime_context().is_canceled():
                    return "stopped when asked"
                time.sleep(0.01)
            return "never asked"

    p = Polite.remote()
    ray.get(p.__ray_ready__.remote(), timeout=30)
    ref = p.work.remote()
    time.sleep(0.3)
    start = time.monotonic()
    ray.cancel(ref)
    assert ray.get(ref, timeout=10) == "stopped when asked"
    assert time.monotonic() - start < 5
    with pytest.raises(RuntimeError, match="driver"):
        ray.get_runtime_context().is_canceled()
