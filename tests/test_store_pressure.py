"""The store under pressure: freeing, spilling to disk and restoring, pins, crashed holders, Arrow.

Each test starts a small store (``object_store_memory``) and pushes several times its capacity
through it. Nothing may be lost or corrupted, nothing may hang, and ``ObjectStoreFullError`` may
only come when every byte is pinned by live views.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from typing import Any

import numpy as np
import pytest

import peer as ray
from peer import _native
from peer.exceptions import ObjectStoreFullError

MiB = 1024 * 1024
STORE = 256 * MiB
CHUNK = 50 * 1000 * 1000  # 50 MB objects


def digest(a: np.ndarray) -> str:
    return hashlib.blake2b(memoryview(a).cast("B"), digest_size=16).hexdigest()


def chunk(i: int) -> np.ndarray:
    """A 50 MB array whose content depends on i (cheap to make, easy to check)."""
    a = np.empty(CHUNK // 8, dtype=np.int64)
    a[:] = i
    a[:: 4096 // 8] = np.arange(a[:: 4096 // 8].size) * (i + 1)
    return a


def store_stats() -> dict[str, Any]:
    return dict(_native.status()["store"])


def test_ten_times_the_store_with_refs_dropped_as_it_goes(make_cluster: Any) -> None:
    make_cluster(num_cpus=2, object_store_memory=STORE)
    kept: dict[int, tuple[Any, str]] = {}
    total = 0
    i = 0
    while total < 10 * STORE:
        a = chunk(i)
        ref = ray.put(a)
        if i % 5 == 0:
            kept[i] = (ref, digest(a))  # every fifth stays referenced
        del ref, a
        total += CHUNK
        i += 1
    # Dropped objects were freed, never spilled: only kept ones were written out.
    s = store_stats()
    assert s["spilled_bytes"] <= len(kept) * (CHUNK + MiB), s
    for i, (ref, want) in kept.items():
        assert digest(ray.get(ref)) == want, f"object {i} changed"


def test_every_ref_kept_spills_to_disk_and_restores_intact(make_cluster: Any) -> None:
    make_cluster(num_cpus=2, object_store_memory=STORE)
    refs = []
    for i in range(12):  # 600 MB into a 256 MiB store, every ref kept
        a = chunk(i)
        refs.append((ray.put(a), digest(a)))
    s = store_stats()
    assert s["spilled_bytes"] >= 600 * 1000 * 1000 - STORE, s
    # Read them all back (restores spill others out again): bytes intact.
    for i, (ref, want) in enumerate(refs):
        got = ray.get(ref)
        assert digest(got) == want, f"object {i} changed after spilling"
        del got
    s = store_stats()
    assert s["restored_bytes"] > 0
    # A task reads a spilled object too.

    @ray.remote
    def check(a: np.ndarray) -> str:
        return digest(a)

    assert ray.get(check.remote(refs[0][0])) == refs[0][1]


def test_store_full_of_pinned_views_raises_and_recovers(make_cluster: Any) -> None:
    make_cluster(num_cpus=1, object_store_memory=STORE)
    views = []
    refs = []
    with pytest.raises(ObjectStoreFullError) as info:
        for i in range(20):
            ref = ray.put(chunk(i))
            refs.append(ref)
            views.append(ray.get(ref))  # a live view pins its object
    message = str(info.value)
    assert "pinned" in message, message
    assert len(views) >= 3
    # Dropping the views (and refs) frees the store: the same put now succeeds.
    views.clear()
    refs.clear()
    ref = ray.put(chunk(99))
    assert digest(ray.get(ref)) == digest(chunk(99))


def test_killed_worker_holding_a_view_releases_it(make_cluster: Any) -> None:
    make_cluster(num_cpus=1, object_store_memory=STORE)

    @ray.remote
    class Holder:
        def __init__(self) -> None:
            self.view: Any = None

        def hold(self, a: np.ndarray) -> int:
            self.view = a  # keeps the shared-memory view (and its pin) alive
            return os.getpid()

    h = Holder.remote()
    ref = ray.put(chunk(1))
    pid = ray.get(h.hold.remote(ref))
    used_before = store_stats()["used"]
    assert used_before >= CHUNK
    os.kill(pid, signal.SIGKILL)
    del ref
    deadline = time.monotonic() + 10
    while store_stats()["used"] >= CHUNK and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store_stats()["used"] < CHUNK, "the killed worker's pin kept the object alive"


def test_arrow_table_is_zero_copy_through_put_get_and_tasks(make_cluster: Any) -> None:
    pa = pytest.importorskip("pyarrow", reason="pyarrow is installed by scripts/requirements-dev.txt")
    info = make_cluster(num_cpus=2, object_store_memory=3 * 1024 * MiB)
    n = 1024 * MiB // 16  # two int64 columns: 1 GiB
    table = pa.table({"a": pa.array(np.arange(n, dtype=np.int64)), "b": pa.array(np.ones(n, dtype=np.int64))})
    ref = ray.put(table)
    del table
    got = ray.get(ref)
    assert got.num_rows == n
    assert got.column("a")[n - 1].as_py() == n - 1

    lo, hi = _arena_range(info["arena_path"])
    for col in got.columns:
        for chunk_ in col.chunks:
            for buf in chunk_.buffers():
                if buf is not None and buf.size > 0:
                    assert lo <= buf.address < hi, "an Arrow buffer was copied out of shared memory"

    @ray.remote
    def column_sum(t: Any) -> int:
        import pyarrow.compute as pc

        return int(pc.sum(t.column("b")).as_py())

    assert ray.get(column_sum.remote(ref)) == n


def _arena_range(path: str) -> tuple[int, int]:
    """Address range of this process's mapping of the arena file."""
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith(path):
                start, end = line.split()[0].split("-")
                return int(start, 16), int(end, 16)
    raise AssertionError(f"{path} is not mapped in this process")


def test_a_ref_inside_an_object_keeps_its_object_alive(make_cluster: Any) -> None:
    make_cluster(num_cpus=1, object_store_memory=STORE)
    inner = ray.put(chunk(7))
    want = digest(chunk(7))
    outer = ray.put({"inner": inner})  # the value holds the ref
    del inner
    # The only handle is gone, but the outer object still holds it.
    got_inner = ray.get(outer)["inner"]
    assert digest(ray.get(got_inner)) == want
    del got_inner
    used = store_stats()["used"]
    assert used >= CHUNK
    del outer  # the last holder: the inner object goes too
    deadline = time.monotonic() + 5
    while store_stats()["used"] >= CHUNK and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store_stats()["used"] < CHUNK, "the inner object outlived the object holding its ref"

    @ray.remote
    def make_nested() -> dict[str, Any]:
        return {"ref": ray.put(chunk(8))}

    nested = ray.get(make_nested.remote())  # a worker's put, held only by the returned value
    assert digest(ray.get(nested["ref"])) == digest(chunk(8))
