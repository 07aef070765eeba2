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
