"""Remote functions: arguments, refs, num_returns, options, timeouts, asyncio, scale and big data."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import Any

import numpy as np
import pytest

import peer as ray
from peer.exceptions import GetTimeoutError, PeerError, SerializationError

pytestmark = pytest.mark.usefixtures("cluster")


@ray.remote
def add(x: Any, y: Any = 0) -> Any:
    return x + y


@ray.remote
def identity(x: Any) -> Any:
    return x


@ray.remote
def sleep_then(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def test_task_returns_value() -> None:
    assert ray.get(add.remote(1, 2)) == 3
    assert ray.get(add.remote("a", y="b")) == "ab"


def test_get_list_keeps_order() -> None:
    refs = [add.remote(i, i) for i in range(20)]
    assert ray.get(refs) == [2 * i for i in range(20)]
    assert ray.get(tuple(refs[:3])) == [0, 2, 4]


def test_calling_remote_function_directly_raises() -> None:
    with pytest.raises(TypeError, match=r"add\.remote\(\)"):
        add(1, 2)


def test_top_level_ref_arguments_are_resolved() -> None:
    x = ray.put(10)
    y = add.remote(1, 2)
    assert ray.get(add.remote(x, y)) == 13
    assert ray.get(add.remote(x, y=x)) == 20


def test_nested_refs_stay_refs() -> None:
    @ray.remote
    def inspect_nested(items: list[Any]) -> tuple[bool, Any]:
        return isinstance(items[0], ray.ObjectRef), ray.get(items[0])

    inner = ray.put("inner value")
    is_ref, value = ray.get(inspect_nested.remote([inner]))
    assert is_ref and value == "inner value"


def test_ref_returned_from_task() -> None:
    @ray.remote
    def make_ref() -> Any:
        return ray.put(np.arange(5))

    ref = ray.get(make_ref.remote())
    assert isinstance(ref, ray.ObjectRef)
    np.testing.assert_array_equal(ray.get(ref), np.arange(5))


def test_object_ref_protocols() -> None:
    ref = ray.put(1)
    assert ref == ref and hash(ref) == hash(ray.ObjectRef(ref.binary()))
    assert {ref: 1}[ray.ObjectRef(ref.binary())] == 1
    assert ref.hex() in repr(ref) and repr(ref).startswith("ObjectRef(")


def test_num_returns() -> None:
    @ray.remote(num_returns=3)
    def three() -> tuple[int, int, int]:
        return 1, 2, 3

    refs = three.remote()
    assert isinstance(refs, list) and len(refs) == 3
    assert ray.get(refs) == [1, 2, 3]
    assert three.options(num_returns=0).remote() is None


def test_num_returns_mismatch_is_an_error() -> None:
    @ray.remote(num_returns=2)
    def wrong() -> tuple[int, int, int]:
        return 1, 2, 3

    a, b = wrong.remote()
    with pytest.raises(ValueError, match="num_returns=2"):
        ray.get(a)


def test_options_returns_a_copy() -> None:
    two = add.options(num_returns=1, name="renamed", num_cpus=0.5)
    assert two is not add
    assert ray.get(two.remote(2, 2)) == 4
    assert ray.get(add.remote(1)) == 1
    with pytest.raises(ValueError, match="invalid option"):
        add.options(max_restarts=1)
    with pytest.raises(ValueError, match="num_cpus"):
        add.options(num_cpus=-1)


def test_decorator_misuse() -> None:
    with pytest.raises(TypeError, match="keyword"):
        ray.remote(1, 2)
    with pytest.raises(ValueError, match="invalid option"):
        ray.remote(bogus=1)(lambda: None)


def test_custom_resources(cluster: dict[str, Any]) -> None:
    total = ray.cluster_resources()
    assert total["CPU"] == 4 and total["widget"] == 2
    available = ray.available_resources()
    for key, amount in available.items():
        assert 0 <= amount <= total.get(key, float("inf"))

    @ray.remote(resources={"widget": 1})
    def uses_widget() -> str:
        return "ok"

    assert ray.get([uses_widget.remote() for _ in range(4)]) == ["ok"] * 4


def test_nodes() -> None:
    nodes = ray.nodes()
    assert len(nodes) == 1
    assert nodes[0]["Alive"] and nodes[0]["NodeID"]


def test_get_timeout() -> None:
    ref = sleep_then.remote(1.0, "late")
    start = time.monotonic()
    with pytest.raises(GetTimeoutError) as info:
        ray.get(ref, timeout=0.1)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, PeerError)
    assert time.monotonic() - start < 0.9
    assert ray.get(ref, timeout=30) == "late"


def test_get_argument_errors() -> None:
    with pytest.raises(TypeError, match="ObjectRef"):
        ray.get(1)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="ObjectRef"):
        ray.get([ray.put(1), "not a ref"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="timeout"):
        ray.get(ray.put(1), timeout=-1)
    with pytest.raises(TypeError, match="put"):
        ray.put(ray.put(1))


def test_await_ref() -> None:
    async def main() -> list[Any]:
        one = await add.remote(1, 1)
        many = await asyncio.gather(*(add.remote(i, 1) for i in range(5)))
        return [one, *many]

    assert asyncio.run(main()) == [2, 1, 2, 3, 4, 5]


def test_future() -> None:
    assert add.remote(20, 22).future().result(timeout=30) == 42


def test_put_get_python_values() -> None:
    class Point:
        def __init__(self, x: int, y: int) -> None:
            self.x, self.y = x, y

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    values: list[Any] = [
        None, True, 0, -(2**100), 3.5, float("inf"), 1 + 2j, "", "héllo", b"", b"\x00" * 200_000,
        bytearray(b"abc"), [], [1, [2, [3]]], (), (1, "a"), {"a": {"b": [1]}}, {1, 2}, frozenset({3}),
        range(5), Point(1, 2), (lambda x: x * 2),
    ]
    for value in values:
        got = ray.get(ray.put(value))
        if callable(value) and not isinstance(value, (type, range)):
            assert got(21) == 42
        else:
            assert got == value and type(got) is type(value), value


def test_put_get_numpy_values() -> None:
    arrays = [
        np.arange(10, dtype=np.int8),
        np.zeros((3, 4), dtype=np.float32),
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        np.array(3.0),
        np.array(["a", "bc"]),
        np.array([{"x": 1}, None], dtype=object),
        np.arange(1_000_000, dtype=np.complex128),
        np.arange(20)[::3],
    ]
    for array in arrays:
        got = ray.get(ray.put(array))
        assert got.dtype == array.dtype and got.shape == array.shape
        assert (got == array).all() if array.dtype != object else list(got) == list(array)
    big = ray.get(ray.put(np.ones(1_000_000)))
    assert not big.flags.writeable


def test_large_array_through_a_task() -> None:
    @ray.remote
    def checksum_and_echo(a: np.ndarray) -> tuple[str, np.ndarray]:
        return hashlib.sha256(a.tobytes()).hexdigest(), a

    array = np.random.default_rng(0).integers(0, 2**63, size=100 * 2**20 // 8, dtype=np.int64)
    expected = hashlib.sha256(array.tobytes()).hexdigest()
    start = time.monotonic()
    remote_sum, echoed = ray.get(checksum_and_echo.remote(array))
    print(f"100 MB array round trip through a task: {time.monotonic() - start:.3f} s")
    assert remote_sum == expected
    assert hashlib.sha256(echoed.tobytes()).hexdigest() == expected


def test_many_small_tasks() -> None:
    @ray.remote
    def small(i: int) -> int:
        return i * 2

    start = time.monotonic()
    refs = [small.remote(i) for i in range(10_000)]
    submitted = time.monotonic() - start
    results = ray.get(refs)
    elapsed = time.monotonic() - start
    print(f"10,000 tasks: submit {submitted:.2f} s, total {elapsed:.2f} s ({10_000 / elapsed:.0f} tasks/s)")
    assert results == [2 * i for i in range(10_000)]


def test_unpicklable_argument_gives_clear_error() -> None:
    with pytest.raises(SerializationError, match="argument 1 of add") as info:
        add.remote(1, threading.Lock())
    assert isinstance(info.value, TypeError)
    with pytest.raises(SerializationError, match="keyword argument 'y'"):
        add.remote(1, y=threading.Lock())
    with pytest.raises(SerializationError, match="put"):
        ray.put(threading.Lock())
    assert ray.get(add.remote(1, 1)) == 2


def test_unpicklable_return_value_is_a_task_error() -> None:
    @ray.remote
    def returns_lock() -> Any:
        return threading.Lock()

    with pytest.raises(SerializationError, match="return value 0 of returns_lock"):
        ray.get(returns_lock.remote())
    assert ray.get(add.remote(2, 2)) == 4


def test_cancel_queued_task() -> None:
    blockers = [sleep_then.remote(1.0) for _ in range(4)]
    queued = sleep_then.remote(0.0, "ran")
    ray.cancel(queued)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(queued, timeout=30)
    ray.get(blockers)
    assert ray.get(add.remote(1, 1)) == 2


def test_wait_argument_errors() -> None:
    ref = ray.put(1)
    with pytest.raises(TypeError, match="single ObjectRef"):
        ray.wait(ref)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ObjectRef"):
        ray.wait([ref, 2])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="unique"):
        ray.wait([ref, ref])
    with pytest.raises(ValueError, match="num_returns"):
        ray.wait([ref], num_returns=2)
    with pytest.raises(ValueError, match="num_returns"):
        ray.wait([ref], num_returns=0)
    with pytest.raises(ValueError, match="timeout"):
        ray.wait([ref], timeout=-1)
    assert ray.wait([]) == ([], [])


def test_wait_timeout_returns_what_is_ready() -> None:
    slow = [sleep_then.remote(2.0) for _ in range(2)]
    fast = ray.put("ready")
    refs = [slow[0], fast, slow[1]]
    start = time.monotonic()
    ready, rest = ray.wait(refs, num_returns=2, timeout=0.2)
    assert time.monotonic() - start < 1.5
    assert ready == [fast] and rest == [slow[0], slow[1]]
    ready, rest = ray.wait(refs, num_returns=3, timeout=30)
    assert set(ready) == set(refs) and rest == []


def test_ref_inside_a_value_outlives_its_local_handle() -> None:
    outer = ray.put([ray.put("inner")])  # the inner ref's only local handle is dropped at once
    inner = ray.get(outer)[0]
    assert ray.get(inner) == "inner"


def test_await_raises_task_errors() -> None:
    @ray.remote
    def boom() -> None:
        raise KeyError("missing")

    async def main() -> None:
        await boom.remote()

    with pytest.raises(KeyError):
        asyncio.run(main())
