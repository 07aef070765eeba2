"""Task and actor options whose semantics live in the worker and the node, from Ray's docs:
``max_calls`` (a worker exits after that many tasks of the function; 1 by default for tasks that
use GPUs, so a GPU task's worker never serves a CPU task), ``retry_exceptions`` given as a list of
exception types, and ``max_task_retries`` (an actor's call runs again on the restarted actor)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import peer as ray
from peer import exceptions


@pytest.fixture(scope="module", autouse=True)
def gpu_cluster(state_dir: str) -> Any:
    from conftest import _start, _stop

    record = _start(state_dir, num_cpus=2, num_gpus=1)
    yield record.info
    _stop(record)


@ray.remote(max_calls=2)
def pid_of_worker() -> int:
    return os.getpid()


def test_max_calls_retires_a_worker_after_that_many_tasks() -> None:
    one_by_one = [ray.get(pid_of_worker.remote(), timeout=30) for _ in range(6)]
    assert max(Counter(one_by_one).values()) <= 2
    assert len(set(one_by_one)) >= 3
    # A burst (tasks pipelined to workers that retire go to others): all run, none twice on one.
    burst = ray.get([pid_of_worker.remote() for _ in range(20)], timeout=60)
    assert max(Counter(burst).values()) <= 2
    with pytest.raises(ValueError, match="max_calls"):
        pid_of_worker.options(max_calls=-1)


@ray.remote(num_gpus=1)
def gpu_task() -> int:
    return os.getpid()


@ray.remote
def cpu_task() -> int:
    return os.getpid()


def test_a_gpu_tasks_worker_serves_no_other_task() -> None:
    gpu_pids = {ray.get(gpu_task.remote(), timeout=30) for _ in range(3)}
    assert len(gpu_pids) == 3, "max_calls is 1 for GPU tasks (Ray's default)"
    cpu_pids = set(ray.get([cpu_task.remote() for _ in range(10)], timeout=30))
    assert not gpu_pids & cpu_pids


class Flaky(Exception):
    pass


@ray.remote(max_retries=3, retry_exceptions=[Flaky])
def fails(path: str, exc: str) -> None:
    runs = int(Path(path).read_text()) if os.path.exists(path) else 0
    Path(path).write_text(str(runs + 1))
    raise Flaky("again") if exc == "flaky" else ValueError("not listed")


def test_retry_exceptions_as_a_list_retries_only_those(tmp_path: Path) -> None:
    listed, other = tmp_path / "listed", tmp_path / "other"
    with pytest.raises(Flaky):
        ray.get(fails.remote(str(listed), "flaky"), timeout=30)
    assert listed.read_text() == "4", "run once and retried 3 times"
    with pytest.raises(ValueError, match="not listed"):
        ray.get(fails.remote(str(other), "value"), timeout=30)
    assert other.read_text() == "1", "an exception the list does not name is not retried"
    with pytest.raises(TypeError, match="retry_exceptions"):
        fails.options(retry_exceptions=["not a type"])


@ray.remote(max_restarts=1, max_task_retries=1)
class DiesOnce:
    def pid(self) -> int:
        return os.getpid()

    def die_once(self, marker: str) -> str:
        if not os.path.exists(marker):
            Path(marker).touch()
            os._exit(1)
        return "ran again on the restarted actor"


def test_max_task_retries_runs_a_call_again_on_the_restarted_actor(tmp_path: Path) -> None:
    a = DiesOnce.remote()
    first_pid = ray.get(a.pid.remote(), timeout=30)
    assert ray.get(a.die_once.remote(str(tmp_path / "m")), timeout=30) == "ran again on the restarted actor"
    assert ray.get(a.pid.remote(), timeout=30) != first_pid
    # Handles passed on keep the option.
    @ray.remote
    def through(h: Any, marker: str) -> str:
        return str(ray.get(h.die_once.remote(marker)))

    b = DiesOnce.remote()
    assert ray.get(through.remote(b, str(tmp_path / "n")), timeout=60) == "ran again on the restarted actor"


def test_without_task_retries_a_call_fails_when_its_actor_dies(tmp_path: Path) -> None:
    a = DiesOnce.options(max_task_retries=0).remote()
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(a.die_once.remote(str(tmp_path / "m")), timeout=30)
    # The actor itself restarted (max_restarts=1).
    assert isinstance(ray.get(a.pid.remote(), timeout=30), int)
