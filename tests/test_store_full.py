"""A full object store raises ObjectStoreFullError and stays usable."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import peer as ray
from peer import exceptions


def test_put_bigger_than_store(make_cluster: Any) -> None:
    make_cluster(num_cpus=2, object_store_memory=64 * 2**20)
    with pytest.raises(exceptions.ObjectStoreFullError) as info:
        ray.put(np.zeros(100 * 2**20 // 8))
    assert isinstance(info.value, ray.exceptions.RayError)
    assert "object_store_memory" in str(info.value), "the message must say what to change"

    small = ray.put(np.ones(1_000_000))
    assert ray.get(small).sum() == 1_000_000

    @ray.remote
    def total(a: np.ndarray) -> float:
        return float(a.sum())

    assert ray.get(total.remote(np.ones(2_000_000))) == 2_000_000


def test_task_result_bigger_than_store(make_cluster: Any) -> None:
    make_cluster(num_cpus=2, object_store_memory=64 * 2**20)

    @ray.remote
    def too_big() -> np.ndarray:
        return np.zeros(100 * 2**20 // 8)

    with pytest.raises(exceptions.ObjectStoreFullError):
        ray.get(too_big.options(max_retries=0).remote(), timeout=60)

    @ray.remote
    def fine() -> int:
        return 1

    assert ray.get(fine.remote()) == 1


def test_views_stay_valid_after_their_ref_is_dropped(make_cluster: Any) -> None:
    make_cluster(num_cpus=1, object_store_memory=64 * 2**20)
    view = ray.get(ray.put(np.arange(5 * 2**20, dtype=np.int64)))  # 40 MiB; the ref dies here
    expected_sum = int(np.arange(5 * 2**20, dtype=np.int64).sum())
    for _ in range(3):
        # The store must not reuse the memory the view points at: each put either fits
        # elsewhere or fails cleanly.
        try:
            ray.put(np.full(5 * 2**20, -1, dtype=np.int64))
        except exceptions.ObjectStoreFullError:
            pass
    assert int(view.sum()) == expected_sum and view[123] == 123
    del view
    ray.put(np.zeros(5 * 2**20, dtype=np.int64))  # fits once the view is gone
