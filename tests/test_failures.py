"""Worker and actor processes that die: retries, WorkerCrashedError, ActorDiedError, recovery."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import peer as ray
from peer import exceptions

pytestmark = pytest.mark.usefixtures("cluster")


@ray.remote
def crash() -> None:
    os._exit(1)


@ray.remote
def crash_first_time(marker: str) -> str:
    path = Path(marker)
    if not path.exists():
        path.write_text("crashed once")
        os._exit(1)
    return f"ran in pid {os.getpid()}"


@ray.remote
def ok(x: int) -> int:
    return x


@ray.remote
class Fragile:
    def ping(self) -> str:
        return "pong"

    def die(self) -> None:
        os._exit(1)


def test_crash_without_retries_raises_worker_crashed() -> None:
    with pytest.raises(exceptions.WorkerCrashedError):
        ray.get(crash.options(max_retries=0).remote(), timeout=60)
    assert ray.get([ok.remote(i) for i in range(8)]) == list(range(8))


def test_crash_with_retries_succeeds_on_next_attempt(tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    result = ray.get(crash_first_time.options(max_retries=1).remote(str(marker)), timeout=60)
    assert marker.read_text() == "crashed once"
    assert result.startswith("ran in pid")


def test_crash_uses_up_default_retries() -> None:
    with pytest.raises(exceptions.WorkerCrashedError):
        ray.get(crash.remote(), timeout=60)
    assert ray.get(ok.remote(1)) == 1


def test_actor_process_death_raises_actor_died() -> None:
    actor = Fragile.remote()
    assert ray.get(actor.ping.remote()) == "pong"
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(actor.die.remote(), timeout=60)
    with pytest.raises(exceptions.ActorDiedError) as info:
        ray.get(actor.ping.remote(), timeout=60)
    assert isinstance(info.value, ray.exceptions.RayActorError)
    assert ray.get(ok.remote(2)) == 2


def test_killed_actor_raises_actor_died() -> None:
    actor = Fragile.remote()
    assert ray.get(actor.ping.remote()) == "pong"
    ray.kill(actor)
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(actor.ping.remote(), timeout=60)


def test_failing_constructor_makes_calls_raise() -> None:
    @ray.remote
    class Broken:
        def __init__(self) -> None:
            raise ValueError("cannot construct")

        def ping(self) -> str:
            return "pong"

    actor: Any = Broken.remote()
    with pytest.raises(exceptions.PeerError) as info:
        ray.get(actor.ping.remote(), timeout=60)
    assert isinstance(info.value, (exceptions.ActorDiedError, ValueError))
    assert ray.get(ok.remote(3)) == 3
