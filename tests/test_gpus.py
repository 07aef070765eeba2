"""GPUs as Ray assigns them (issue #21), on machines without one: a node told it has N GPUs gives
each task or actor that asks for GPUs specific device ids, held until it ends, and runs it with
``CUDA_VISIBLE_DEVICES`` set to exactly those ids; fractions pack onto one device; a task without
GPUs sees ``""``; a ``CUDA_VISIBLE_DEVICES`` set on the node limits it and keeps the ids; and GPU
tasks submitted on a peer without GPUs run on one that has them.

Every task reports what it saw from inside: its ``CUDA_VISIBLE_DEVICES``, ``get_gpu_ids()`` and
its start and end times, from which the tests check that no two tasks overlapping in time share a
device."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from peers import Launcher, cluster, run_driver

REPORT = """
import os, time

def seen(hold):
    start = time.time()
    time.sleep(hold)
    return {
        "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "ids": ray.get_gpu_ids(),
        "node": ray.get_runtime_context().get_node_id(),
        "start": start,
        "end": time.time(),
    }
"""


def overlapping(runs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (a, b)
        for i, a in enumerate(runs)
        for b in runs[i + 1 :]
        if a["start"] < b["end"] and b["start"] < a["end"]
    ]


def most_at_once(runs: list[dict[str, Any]]) -> int:
    edges = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def test_each_gpu_task_sees_exactly_its_own_device(launcher: Launcher) -> None:
    (node,) = [launcher.up("gpus", "--no-mdns", "--num-cpus", "8", "--num-gpus", "4")]
    assert node.status()["resources"]["total"]["GPU"] == 4.0
    out = run_driver(
        node,
        REPORT
        + """
whole = ray.remote(num_gpus=1)(seen)
half = ray.remote(num_gpus=0.5)(seen)
cpu = ray.remote(seen)
runs = ray.get([whole.remote(0.4) for _ in range(8)])
halves = ray.get([half.remote(0.0) for _ in range(2)])
plain = ray.get(cpu.remote(0.0))
mine = {"env_vars": {"CUDA_VISIBLE_DEVICES": "7"}}
kept = ray.get([cpu.options(runtime_env=mine).remote(0.0), whole.options(runtime_env=mine).remote(0.0)])
print(json.dumps({"runs": runs, "halves": halves, "plain": plain, "kept": kept, "driver": ray.get_gpu_ids()}))
""",
    )
    runs = out["runs"]
    for r in runs:
        assert len(r["ids"]) == 1 and r["ids"][0] in range(4), r
        assert r["cvd"] == str(r["ids"][0]), r
    assert most_at_once(runs) <= 4, "at most 4 one-GPU tasks at a time on 4 GPUs"
    for a, b in overlapping(runs):
        assert a["ids"] != b["ids"], f"two tasks ran on one device at once: {a} {b}"
    assert {r["ids"][0] for r in runs} == {0, 1, 2, 3}
    # Two halves pack onto one device (the node had all four free).
    assert out["halves"][0]["ids"] == out["halves"][1]["ids"] == [0]
    assert [h["cvd"] for h in out["halves"]] == ["0", "0"]
    # A task that asked for no GPU sees none; the driver holds none.
    assert out["plain"]["cvd"] == "" and out["plain"]["ids"] == []
    assert out["driver"] == []
    # A CUDA_VISIBLE_DEVICES the user's runtime_env sets is kept (Ray #28215); the ids still say
    # which device the task holds.
    cpu_kept, gpu_kept = out["kept"]
    assert cpu_kept["cvd"] == gpu_kept["cvd"] == "7"
    assert cpu_kept["ids"] == [] and len(gpu_kept["ids"]) == 1


def test_an_actor_holds_its_device_until_it_is_killed(launcher: Launcher) -> None:
    node = launcher.up("actor", "--no-mdns", "--num-cpus", "4", "--num-gpus", "2")
    out = run_driver(
        node,
        """
import os

@ray.remote(num_gpus=1)
class Model:
    def where(self):
        return os.environ["CUDA_VISIBLE_DEVICES"], ray.get_gpu_ids()

@ray.remote(num_gpus=1)
def task():
    return os.environ["CUDA_VISIBLE_DEVICES"]

a, b = Model.remote(), Model.remote()
seen = [ray.get(a.where.remote()), ray.get(b.where.remote()), ray.get(a.where.remote())]
# Both devices are held: a GPU task waits until an actor is gone.
ref = task.remote()
ready, _ = ray.wait([ref], timeout=1.0)
waited = not ready
ray.kill(a)
freed = ray.get(ref, timeout=30)
print(json.dumps({"seen": seen, "waited": waited, "freed": freed}))
""",
    )
    (a_cvd, a_ids), (b_cvd, b_ids), again = out["seen"]
    assert {a_cvd, b_cvd} == {"0", "1"} and [int(a_cvd)] == a_ids and [int(b_cvd)] == b_ids
    assert again == [a_cvd, a_ids], "every call of an actor sees the same device"
    assert out["waited"], "no device was free while both actors lived"
    assert out["freed"] == a_cvd, "the killed actor's device went to the waiting task"


def test_visible_devices_on_the_node_limit_it_and_keep_their_ids(
    launcher: Launcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    node = launcher.up("visible", "--no-mdns", "--num-cpus", "4", "--num-gpus", "4")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    status = node.status()
    assert status["resources"]["total"]["GPU"] == 2.0
    assert [d["id"] for d in status["gpus"]["devices"]] == ["2", "3"]
    out = run_driver(
        node,
        REPORT
        + """
whole = ray.remote(num_gpus=1)(seen)
cpu = ray.remote(seen)
print(json.dumps({"runs": ray.get([whole.remote(0.3) for _ in range(4)]), "plain": ray.get(cpu.remote(0))}))
""",
    )
    assert {r["cvd"] for r in out["runs"]} == {"2", "3"}
    assert all([int(r["cvd"])] == r["ids"] for r in out["runs"])
    assert most_at_once(out["runs"]) <= 2
    # The node's own CUDA_VISIBLE_DEVICES does not leak into tasks without GPUs.
    assert out["plain"]["cvd"] == ""


def test_gpu_tasks_from_a_peer_without_gpus_run_where_the_gpus_are(launcher: Launcher) -> None:
    cpu_only, gpu_peer = cluster(
        launcher,
        [
            ("cpu", ["--num-cpus", "1"]),
            # What NVML would report for a T4, given by hand on this machine without one.
            ("gpu", ["--num-cpus", "2", "--num-gpus", "2", "--resource", "accelerator_type:T4=1"]),
        ],
    )
    out = run_driver(
        cpu_only,
        REPORT
        + """
whole = ray.remote(num_gpus=1)(seen)
runs = ray.get([whole.remote(0.3) for _ in range(3)], timeout=60)
runs.append(ray.get(whole.options(accelerator_type="T4").remote(0), timeout=60))
other_model = whole.options(accelerator_type="H100").remote(0)
ready, _ = ray.wait([other_model], timeout=1.0)
ray.cancel(other_model)
print(json.dumps({"runs": runs, "h100_ran": bool(ready)}))
""",
    )
    assert not out["h100_ran"], "no peer has an H100: the task waits"
    for r in out["runs"]:
        assert r["node"] == gpu_peer.peer_id, r
        assert r["cvd"] in ("0", "1") and [int(r["cvd"])] == r["ids"], r
    for a, b in overlapping(out["runs"]):
        assert a["ids"] != b["ids"]


def test_a_gpu_share_over_one_must_be_whole_and_resource_gpu_is_refused(tmp_path: Path) -> None:
    import peer

    with pytest.raises(ValueError, match="whole number"):
        peer.remote(num_gpus=1.5)(lambda: None)
    with pytest.raises(ValueError, match="num_gpus"):
        peer.init(num_gpus=0.5, _state_dir=str(tmp_path))
    r = subprocess.run(
        [sys.executable, "-m", "peer._cli", "--state-dir", str(tmp_path), "up", "--resource", "GPU=2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0 and "--num-gpus" in r.stderr


def test_the_fork_server_template_loads_nothing_that_starts_cuda() -> None:
    """Workers are forked from a template: it must not have loaded a CUDA library (CUDA does not
    survive fork), so a GPU task's worker starts CUDA fresh under its own CUDA_VISIBLE_DEVICES."""
    probe = (
        "import sys, peer._forkserver as f; f._preload();"
        "cuda = ('torch', 'cupy', 'jax', 'tensorflow', 'numba', 'pycuda', 'cuda');"
        "print([m for m in sys.modules if m.split('.')[0] in cuda])"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
