"""Fixtures that start and stop real one-peer clusters, and check that nothing is left behind.

Every cluster of a test session keeps its state (socket, logs) in one temporary state directory,
so no test touches ``~/.peer`` or a running ``peer up`` daemon. After each shutdown the fixtures
check that no process of that cluster is left (direct children of the test process, and any
process whose environment points at the cluster's socket: the fork server and its workers) and
that no ``peer*`` file the cluster created is left in /dev/shm.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import peer
import peer._runtime

if TYPE_CHECKING:
    from peers import Launcher

SHM = Path("/dev/shm")


def shm_files() -> set[str]:
    try:
        return {p.name for p in SHM.iterdir() if p.name.startswith("peer")}
    except FileNotFoundError:
        return set()


def _mapped_by_someone(name: str) -> bool:
    """Whether a live process maps /dev/shm/<name> (then it belongs to another live node)."""
    needle = f"/dev/shm/{name}"
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                if needle in f.read():
                    return True
        except OSError:
            continue
    return False


def leftover_processes(socket_path: str | None, ignore: frozenset[int] = frozenset()) -> list[str]:
    """Processes that still belong to this test process's clusters (except pids in ``ignore``)."""
    me = os.getpid()
    marker = f"PEER_SOCKET={socket_path}\0".encode() if socket_path else None
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me or int(entry) in ignore:
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, ppid = fields[0], int(fields[1])
        if ppid == me:
            found.append(f"pid {pid} (child of the test process, state {state})")
            continue
        if marker is None:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if marker in env + b"\0":
            found.append(f"pid {pid} (fork server or worker of {socket_path}, state {state})")
    return found


def child_pids() -> frozenset[int]:
    """Pids whose parent is the test process (a leak of an earlier test must not fail later ones)."""
    me = os.getpid()
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == me:
                pids.add(int(entry))
    return frozenset(pids)


@dataclass
class ClusterRecord:
    info: dict[str, Any]
    shm_before: set[str]
    children_before: frozenset[int] = field(default_factory=child_pids)


def assert_clean_after_shutdown(record: ClusterRecord, grace_s: float = 5.0) -> float:
    """Poll until the cluster's processes and shm files are gone; returns how long that took."""
    start = time.monotonic()
    socket_path = record.info.get("socket")
    arena = record.info.get("arena_path")
    while True:
        procs = leftover_processes(socket_path, record.children_before)
        arena_left = isinstance(arena, str) and arena.startswith("/") and os.path.exists(arena)
        new_shm = [n for n in shm_files() - record.shm_before if not _mapped_by_someone(n)]
        if not procs and not arena_left and not new_shm:
            return time.monotonic() - start
        if time.monotonic() - start > grace_s:
            pytest.fail(
                f"left behind after shutdown: processes={procs}, "
                f"arena file={arena if arena_left else None}, /dev/shm files={new_shm}"
            )
        time.sleep(0.05)


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    # Short path: Unix socket paths are limited to ~108 bytes.
    return str(tmp_path_factory.mktemp("st"))


def _start(state_dir: str, **kwargs: Any) -> ClusterRecord:
    before, children = shm_files(), child_pids()
    info = peer.init(_state_dir=state_dir, **kwargs)
    return ClusterRecord(info=info, shm_before=before, children_before=children)


def _stop(record: ClusterRecord) -> None:
    peer.shutdown()
    assert not peer.is_initialized()
    assert_clean_after_shutdown(record)


@pytest.fixture
def make_cluster(state_dir: str) -> Iterator[Callable[..., dict[str, Any]]]:
    """Start a cluster with the given ``init`` arguments; it is shut down and checked after the test."""
    records: list[ClusterRecord] = []

    def start(**kwargs: Any) -> dict[str, Any]:
        record = _start(state_dir, **kwargs)
        records.append(record)
        return record.info

    yield start
    peer.shutdown()
    for record in records:
        assert_clean_after_shutdown(record)


@pytest.fixture(scope="module")
def cluster(state_dir: str) -> Iterator[dict[str, Any]]:
    """One cluster shared by the tests of a module: 4 CPUs and a custom resource."""
    record = _start(state_dir, num_cpus=4, resources={"widget": 2})
    yield record.info
    _stop(record)


@pytest.fixture(scope="module")
def cluster8(state_dir: str) -> Iterator[dict[str, Any]]:
    """One cluster with 8 CPUs, as the seed post's examples assume."""
    record = _start(state_dir, num_cpus=8)
    yield record.info
    _stop(record)



def peer_cli(state_dir: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``peer --state-dir STATE_DIR ARGS...`` (the installed package's CLI) and capture it."""
    return subprocess.run(
        [sys.executable, "-m", "peer._cli", "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stop_daemon(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM a ``peer up`` process and wait for it; SIGKILL it if it does not stop in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """Starts ``peer up`` daemons for one test and stops (and checks) them afterwards."""
    from peers import Launcher

    launch = Launcher(tmp_path)
    try:
        yield launch
    finally:
        launch.close()
