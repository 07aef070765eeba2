"""The code examples of Ray's announcement post, run on a one-peer cluster with ``import peer as ray``.

Run: ``python examples/demo.py``. Each section prints what happened and how long it took.
gym is usually not installed, so the actor section uses a small stand-in with gym's interface.
"""

from __future__ import annotations

import pickle
import time
from typing import Any

import numpy as np

import peer as ray


class PongStandIn:
    """gym's ``Env`` interface; observations count the steps so their order is visible."""

    def __init__(self) -> None:
        self.t = 0

    def reset(self) -> int:
        self.t = 0
        return self.t

    def step(self, action: int) -> tuple[int, float, bool, dict[str, Any]]:
        self.t += 1
        return self.t, 0.0, False, {}


try:
    import gym  # noqa: F401
except ImportError:

    class gym:  # noqa: N801 - stands in for the module
        @staticmethod
        def make(name: str) -> PongStandIn:
            return PongStandIn()


def section(title: str) -> None:
    print(f"\n== {title}")


def main() -> None:
    start = time.perf_counter()
    ray.init(num_cpus=8)
    print(f"init: {(time.perf_counter() - start) * 1e3:.1f} ms")

    section("Simple parallelization: 8 tasks that sleep 1 s")

    @ray.remote
    def f():
        time.sleep(1)

    start = time.perf_counter()
    # Tasks executed in parallel.
    results = []
    for _ in range(8):
        result = f.remote()
        results.append(result)

    results = ray.get(results)
    print(f"8 tasks took {time.perf_counter() - start:.2f} s (serially: 8 s; includes starting 8 workers)")
    start = time.perf_counter()
    ray.get([f.remote() for _ in range(8)])
    print(f"again, workers up: {time.perf_counter() - start:.2f} s")

    section("Task dependencies: the aggregate_data tree")

    @ray.remote
    def aggregate_data(x, y):
        return x + y

    data = [np.random.normal(size=1000) for i in range(4)]
    expected = sum(data)

    while len(data) > 1:
        intermediate_result = aggregate_data.remote(data[0], data[1])
        data = data[2:] + [intermediate_result]

    result = ray.get(data[0])
    print(f"sum of 4 arrays matches: {np.allclose(result, expected)}")

    section("Actors: the Simulator")

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
    print(f"observations, in order: {[obs[0] for obs in ray.get(observations)]}")

    section("wait: the first 5 of 10 tasks, then the rest in completion order")

    @ray.remote
    def f():  # noqa: F811 - the post redefines f
        time.sleep(np.random.uniform(0, 5))

    start = time.perf_counter()
    # Launch 10 tasks with variable durations.
    results = [f.remote() for _ in range(10)]

    # Wait until either five tasks have completed or two seconds have passed and
    # return a list of the object IDs whose tasks have finished.
    ready_ids, remaining_ids = ray.wait(results, num_returns=5, timeout=2000)
    print(f"{len(ready_ids)} ready, {len(remaining_ids)} remaining after {time.perf_counter() - start:.2f} s")

    start = time.perf_counter()
    # Launch 10 tasks with variable durations.
    remaining_ids = [f.remote() for _ in range(10)]

    # Process the tasks in the order that they complete.
    results = []
    while len(remaining_ids) > 0:
        ready_ids, remaining_ids = ray.wait(remaining_ids, num_returns=1)
        results.append(ray.get(ready_ids[0]))
        print(f"  one done at {time.perf_counter() - start:.2f} s")

    section("Shared memory: 10 x 5,000,000 float64 weights")
    start = time.perf_counter()
    weights = {"Variable{}".format(i): np.random.normal(size=5000000)
               for i in range(10)}  # 2.68s
    print(f"create: {time.perf_counter() - start:.3f} s")

    start = time.perf_counter()
    # Serialize the weights with pickle. Then deserialize them.
    pickled_weights = pickle.dumps(weights)      # 0.986s
    dumps_s = time.perf_counter() - start
    start = time.perf_counter()
    new_weights = pickle.loads(pickled_weights)  # 0.241s
    print(f"pickle.dumps: {dumps_s:.3f} s, pickle.loads: {time.perf_counter() - start:.3f} s")
    del pickled_weights, new_weights

    # Serialize the weights and copy them into the object store. Then deserialize
    # them.
    start = time.perf_counter()
    weights_id = ray.put(weights)      # 0.525s
    put_s = time.perf_counter() - start
    start = time.perf_counter()
    new_weights = ray.get(weights_id)  # 0.000622s
    get_s = time.perf_counter() - start
    print(f"ray.put: {put_s:.3f} s, ray.get: {get_s * 1e3:.3f} ms")
    array = new_weights["Variable0"]
    print(f"zero-copy: read-only={not array.flags.writeable}, equal={np.array_equal(array, weights['Variable0'])}")

    start = time.perf_counter()
    ray.shutdown()
    print(f"\nshutdown: {(time.perf_counter() - start) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
