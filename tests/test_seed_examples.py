"""Every code example of the Ray announcement post, unchanged, with ``import peer as ray``.

Each test runs the post's code as written, then checks the behaviour the post describes. Only the
``gym`` import of the actor example is replaced: gym is not installed here, so ``gym`` is a small
stand-in with the same interface whose environment records when each step ran.
"""

from __future__ import annotations

import pickle
import time
from typing import Any

import numpy as np

import peer as ray
from peer import _native


class PongStandIn:
    """gym's ``Env`` interface: ``reset()`` and ``step(action) -> (obs, reward, done, info)``."""

    def __init__(self) -> None:
        self.t = 0

    def reset(self) -> int:
        self.t = 0
        return self.t

    def step(self, action: int) -> tuple[int, float, bool, dict[str, Any]]:
        start = time.monotonic()
        self.t += 1
        time.sleep(0.05)  # long enough that overlapping calls would show in the timestamps
        return self.t, float(action), False, {"start": start, "end": time.monotonic()}


class GymStandIn:
    @staticmethod
    def make(name: str) -> PongStandIn:
        assert name == "Pong-v0"
        return PongStandIn()


gym = GymStandIn()


def test_serial_f_takes_8_seconds() -> None:
    def f():
        time.sleep(1)

    start = time.monotonic()
    # Calls to f executed serially.
    results = []
    for _ in range(8):
        result = f()
        results.append(result)
    elapsed = time.monotonic() - start
    print(f"serial: {elapsed:.2f} s")
    assert elapsed >= 8


def test_parallel_f_takes_1_second(cluster8: dict[str, Any]) -> None:
    @ray.remote
    def f():
        time.sleep(1)

    start = time.monotonic()
    # Tasks executed in parallel.
    results = []
    for _ in range(8):
        result = f.remote()
        results.append(result)

    results = ray.get(results)
    elapsed = time.monotonic() - start
    assert results == [None] * 8
    assert elapsed < 3.0, "8 one-second tasks on 8 CPUs should take about 1 s, not 8"

    start = time.monotonic()
    ray.get([f.remote() for _ in range(8)])
    warm = time.monotonic() - start
    print(f"8 parallel 1 s tasks: {elapsed:.2f} s (workers starting), {warm:.2f} s (workers up)")
    assert warm < 2.0


def test_aggregate_data_tree(cluster8: dict[str, Any]) -> None:
    @ray.remote
    def aggregate_data(x, y):
        return x + y

    data = [np.random.normal(size=1000) for i in range(4)]
    original = list(data)

    while len(data) > 1:
      intermediate_result = aggregate_data.remote(data[0], data[1])
      data = data[2:] + [intermediate_result]

    result = ray.get(data[0])
    assert isinstance(result, np.ndarray)
    np.testing.assert_allclose(result, sum(original))


def test_simulator_actor_steps_in_order(cluster8: dict[str, Any]) -> None:
    @ray.remote
    class Simulator(object):
        def __init__(self):
            self.env = gym.make("Pong-v0")
            self.env.reset()

        def step(self, action):
            return self.env.step(action)

    # Create a simulator, this will start a new worker that will run all
    # methods for this actor.
    simulator = Simulator.remote()

    observations = []
    for _ in range(4):
        # Take action 0 in the simulator.
        observations.append(simulator.step.remote(0))

    steps = ray.get(observations)
    assert [obs for obs, _, _, _ in steps] == [1, 2, 3, 4], "steps must run in submission order"
    spans = [(info["start"], info["end"]) for _, _, _, info in steps]
    for (_, prev_end), (next_start, _) in zip(spans, spans[1:]):
        assert next_start >= prev_end, "steps of one actor must run one at a time"
    ray.kill(simulator)


def test_wait_for_a_subset_then_in_completion_order(cluster8: dict[str, Any]) -> None:
    @ray.remote
    def f():
        time.sleep(np.random.uniform(0, 5))

    start = time.monotonic()
    # Launch 10 tasks with variable durations.
    results = [f.remote() for _ in range(10)]

    # Wait until either five tasks have completed or two seconds have passed and
    # return a list of the object IDs whose tasks have finished.
    ready_ids, remaining_ids = ray.wait(results, num_returns=5, timeout=2000)
    elapsed = time.monotonic() - start
    print(f"wait(num_returns=5) returned after {elapsed:.2f} s")
    assert len(ready_ids) == 5 and len(remaining_ids) == 5
    assert set(ready_ids) | set(remaining_ids) == set(results)
    assert remaining_ids == [r for r in results if r not in set(ready_ids)], "remaining keeps input order"
    assert elapsed < 10.5
    ray.get(results)

    # Launch 10 tasks with variable durations.
    remaining_ids = [f.remote() for _ in range(10)]

    # Process the tasks in the order that they complete.
    results = []
    while len(remaining_ids) > 0:
        ready_ids, remaining_ids = ray.wait(remaining_ids, num_returns=1)
        results.append(ray.get(ready_ids[0]))
    assert results == [None] * 10


def test_wait_returns_in_completion_order(cluster8: dict[str, Any]) -> None:
    """The post's loop, with tasks that report when they finished."""

    @ray.remote
    def g(delay: float) -> float:
        time.sleep(delay)
        return time.time()

    remaining_ids = [g.remote(d) for d in (0.8, 0.2, 0.6, 0.0, 0.4)]
    finished = []
    while len(remaining_ids) > 0:
        ready_ids, remaining_ids = ray.wait(remaining_ids, num_returns=1)
        finished.append(ray.get(ready_ids[0]))
    assert finished == sorted(finished)


def _pinned_base(array: np.ndarray) -> object:
    """Follow ``.base`` / ``memoryview.obj`` down to the object that owns the memory."""
    obj: object = array
    for _ in range(16):
        if isinstance(obj, np.ndarray) and obj.base is not None:
            obj = obj.base
        elif isinstance(obj, memoryview):
            obj = obj.obj
        else:
            break
    return obj


def test_weights_put_get_zero_copy(cluster8: dict[str, Any]) -> None:
    start = time.monotonic()
    weights = {"Variable{}".format(i): np.random.normal(size=5000000)
               for i in range(10)}  # 2.68s
    print(f"create weights: {time.monotonic() - start:.3f} s")

    start = time.monotonic()
    # Serialize the weights with pickle. Then deserialize them.
    pickled_weights = pickle.dumps(weights)      # 0.986s
    new_weights = pickle.loads(pickled_weights)  # 0.241s
    print(f"pickle dumps+loads: {time.monotonic() - start:.3f} s")
    del pickled_weights, new_weights

    # Serialize the weights and copy them into the object store. Then deserialize
    # them.
    start = time.perf_counter()
    weights_id = ray.put(weights)      # 0.525s
    put_s = time.perf_counter() - start
    start = time.perf_counter()
    new_weights = ray.get(weights_id)  # 0.000622s
    get_s = time.perf_counter() - start
    print(f"ray.put: {put_s * 1e3:.1f} ms, ray.get: {get_s * 1e3:.3f} ms")

    assert sorted(new_weights) == sorted(weights)
    for key in ("Variable0", "Variable9"):
        np.testing.assert_array_equal(new_weights[key], weights[key])
    for array in new_weights.values():
        assert not array.flags.writeable, "arrays from get must be read-only views of the store"
        assert isinstance(_pinned_base(array), _native.PinnedBuffer), "array memory must be the store's"
    again = ray.get(weights_id)
    assert np.shares_memory(again["Variable3"], new_weights["Variable3"]), "two gets must not copy"
    assert get_s < 0.05, f"get of 400 MB took {get_s * 1e3:.1f} ms: it must not copy"
