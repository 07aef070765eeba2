"""Exceptions raised in tasks come back as the original type, as TaskError, with the remote traceback."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import peer as ray
from peer import exceptions

pytestmark = pytest.mark.usefixtures("cluster")


class InventoryError(Exception):
    def __init__(self, item: str, missing: int) -> None:
        super().__init__(item, missing)
        self.item = item
        self.missing = missing


class LockedError(Exception):
    """Cannot be pickled: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


@ray.remote
def fail_with_value_error(x: int) -> int:
    raise ValueError(f"bad value {x}")


@ray.remote
def fail_with_custom_error() -> None:
    raise InventoryError("apples", 3)


@ray.remote
def fail_with_unpicklable_error() -> None:
    raise LockedError("locked out")


@ray.remote
def plus_one(x: int) -> int:
    return x + 1


def test_exception_is_original_type_and_task_error() -> None:
    with pytest.raises(ValueError) as info:
        ray.get(fail_with_value_error.remote(7))
    err = info.value
    assert isinstance(err, exceptions.TaskError)
    assert isinstance(err, ray.exceptions.RayTaskError)
    assert isinstance(err, exceptions.PeerError)
    assert isinstance(err.cause, ValueError) and err.cause.args == ("bad value 7",)
    assert err.args == ("bad value 7",)
    text = str(err)
    assert "fail_with_value_error" in text
    assert "Traceback" in text and 'raise ValueError(f"bad value {x}")' in text
    assert err.pid is not None


def test_custom_exception_keeps_its_fields() -> None:
    with pytest.raises(InventoryError) as info:
        ray.get(fail_with_custom_error.remote())
    assert info.value.item == "apples" and info.value.missing == 3
    assert isinstance(info.value, exceptions.TaskError)


def test_unpicklable_exception_still_has_its_type() -> None:
    with pytest.raises(exceptions.TaskError) as info:
        ray.get(fail_with_unpicklable_error.remote())
    assert isinstance(info.value, LockedError)
    assert "locked out" in str(info.value)


def test_exception_flows_through_dependent_tasks() -> None:
    failed = fail_with_value_error.remote(1)
    downstream = plus_one.remote(plus_one.remote(failed))
    with pytest.raises(ValueError, match="bad value 1") as info:
        ray.get(downstream)
    assert "fail_with_value_error" in str(info.value)


def test_error_raised_by_nested_get_keeps_original_type() -> None:
    @ray.remote
    def calls_failing() -> Any:
        return ray.get(fail_with_value_error.remote(5))

    with pytest.raises(ValueError, match="bad value 5") as info:
        ray.get(calls_failing.remote())
    assert isinstance(info.value, exceptions.TaskError)


def test_list_get_raises_first_error_and_cluster_keeps_working() -> None:
    refs = [plus_one.remote(1), fail_with_value_error.remote(2), plus_one.remote(3)]
    with pytest.raises(ValueError):
        ray.get(refs)
    assert ray.get([refs[0], refs[2]]) == [2, 4]


def test_error_pickles_round_trip() -> None:
    import pickle

    with pytest.raises(ValueError) as info:
        ray.get(fail_with_value_error.remote(3))
    again = pickle.loads(pickle.dumps(info.value))
    assert isinstance(again, ValueError) and isinstance(again, exceptions.TaskError)
    assert str(again) == str(info.value)


def test_ray_aliases_are_the_same_classes() -> None:
    assert ray.exceptions.RayError is exceptions.PeerError
    assert ray.exceptions.RayActorError is exceptions.ActorError
    assert issubclass(exceptions.ActorDiedError, ray.exceptions.RayActorError)
    assert issubclass(exceptions.GetTimeoutError, TimeoutError)
    for name in (
        "TaskError", "GetTimeoutError", "WorkerCrashedError", "ActorDiedError",
        "ObjectStoreFullError", "ObjectLostError", "OwnerDiedError", "TaskCancelledError",
    ):
        assert issubclass(getattr(exceptions, name), exceptions.PeerError), name
