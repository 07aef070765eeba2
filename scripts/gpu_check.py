"""The GPU check for a machine with an NVIDIA GPU (run by scripts/gpu_check; never a test).

Attached to a running `peer up`, it prints what the node detected, runs two ``num_gpus=0.5``
tasks that show what they see under their ``CUDA_VISIBLE_DEVICES`` (``nvidia-smi -L`` and, when
CuPy or PyTorch is installed, a computation on their device), and times ``remote()`` to a GPU task
starting. Exits non-zero when a check fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import peer


def on_device() -> dict[str, object]:
    started = time.time()
    out: dict[str, object] = {
        "started": started,
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "get_gpu_ids": peer.get_gpu_ids(),
        "nvidia-smi -L": subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip(),
    }
    try:
        import cupy  # type: ignore[import-not-found]

        x = cupy.arange(1 << 20, dtype=cupy.float32)
        out["cupy"] = {"devices": cupy.cuda.runtime.getDeviceCount(), "sum": float(x.sum())}
    except ImportError:
        try:
            import torch  # type: ignore[import-not-found]

            x = torch.arange(1 << 20, dtype=torch.float32, device="cuda")
            out["torch"] = {"devices": torch.cuda.device_count(), "sum": float(x.sum())}
        except ImportError:
            out["compute"] = "neither cupy nor torch is installed"
    return out


def main() -> int:
    peer.init()
    ok = True
    resources = peer.cluster_resources()
    types = [k for k in resources if k.startswith("accelerator_type:")]
    print("cluster resources:", json.dumps(resources))
    if resources.get("GPU", 0) < 1 or not types:
        print("FAIL: no GPU or no accelerator_type resource detected")
        ok = False
    task = peer.remote(num_gpus=0.5)(on_device)
    submitted = time.time()
    runs = peer.get([task.remote(), task.remote()], timeout=300)
    for r in runs:
        print(json.dumps(r, indent=1))
    print(f"remote() to the first GPU task starting: {min(float(r['started']) for r in runs) - submitted:.3f} s")
    if len({r["CUDA_VISIBLE_DEVICES"] for r in runs}) != 1:
        print("FAIL: two 0.5-GPU tasks did not share one device")
        ok = False
    # Warm: the next GPU task starts in a fresh worker (max_calls=1 for GPU tasks, as in Ray).
    submitted = time.time()
    again = peer.get(task.remote(), timeout=120)
    print(f"remote() to a GPU task starting, warm node: {float(again['started']) - submitted:.3f} s")
    peer.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
