"""One large object read by a task on each of N peers at once, side by side with Ray.

The driver (on the first node) puts a numpy array of `--gib` GiB; a task pinned to each of
`--readers` other nodes (custom resources `r0`, `r1`, ...) gets it and sums every 4096th byte.
Timed: from submitting the tasks until every result is back. For peer the producer's share is
also reported: the bytes the first node served, as a multiple of the object's size (with no
sharing between readers it would be one copy per reader).

- peer: `peer up` daemons on 127.0.0.1 (each bootstraps to the first, same key); the driver
  attaches to the first.
- Ray: `ray.cluster_utils.Cluster`, a head node and one raylet per reader on this machine.

    benchmarks/run --list >/dev/null   # once: creates .venv-bench with Ray
    .venv-bench/bin/python benchmarks/broadcast.py [--readers 8] [--gib 1] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from transfer import peer_cli, start_cluster, stop_daemons

GIB = 1024**3


def workload(ray: Any, readers: int, gib: float, rounds: int) -> list[float]:
    import numpy as np

    @ray.remote(num_cpus=0)
    def read(arr: Any) -> int:
        return int(arr[::4096].sum())

    n = int(gib * GIB)
    times = []
    for r in range(rounds):
        ref = ray.put(np.full(n, r + 1, dtype=np.uint8))
        start = time.perf_counter()
        sums = ray.get([read.options(resources={f"r{i}": 1}).remote(ref) for i in range(readers)])
        times.append(time.perf_counter() - start)
        assert sums == [(r + 1) * len(range(0, n, 4096))] * readers, sums
        del ref
        time.sleep(1.0)  # frees settle before the next put
    return times


def run_peer(readers: int, gib: float, rounds: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="peer-broadcast-"))
    procs: list[subprocess.Popen[bytes]] = []
    store = int(gib * GIB * 1.5) + 256 * 2**20
    try:
        start_cluster(tmp, ["a", *(f"r{i}" for i in range(readers))], procs, store=store)
        os.environ["PEER_STATE_DIR"] = str(tmp / "a")
        import peer

        peer.init()
        try:
            served_before = json.loads(peer_cli(tmp / "a", "status", "--json").stdout)["tasks"]["stats"]["bytes_served"]
            times = workload(peer, readers, gib, rounds)
            served = json.loads(peer_cli(tmp / "a", "status", "--json").stdout)["tasks"]["stats"]["bytes_served"]
        finally:
            peer.shutdown()
        return {"times": times, "producer_copies": (served - served_before) / (gib * GIB) / rounds}
    finally:
        stop_daemons(procs, tmp)


def run_ray(readers: int, gib: float, rounds: int) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    store = int(gib * GIB * 1.5) + 256 * 2**20
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": store})
    for i in range(readers):
        cluster.add_node(num_cpus=1, resources={f"r{i}": 1}, object_store_memory=store)
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        return {"times": workload(ray, readers, gib, rounds)}
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["peer", "ray"], help="run one backend here (internal)")
    p.add_argument("--readers", type=int, default=8)
    p.add_argument("--gib", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--peer-python", default=str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"))
    args = p.parse_args()
    if args.backend:
        result = (run_peer if args.backend == "peer" else run_ray)(args.readers, args.gib, args.rounds)
        print("RESULT " + json.dumps(result))
        return
    results: dict[str, Any] = {}
    for backend, python in (("ray", sys.executable), ("peer", args.peer_python)):
        print(f"running {backend} ...", file=sys.stderr)
        r = subprocess.run(
            [python, __file__, "--backend", backend, "--readers", str(args.readers), "--gib", str(args.gib),
             "--rounds", str(args.rounds)],
            capture_output=True, text=True, timeout=1800,
        )
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if r.returncode != 0 or line is None:
            sys.exit(f"{backend} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
        results[backend] = json.loads(line[len("RESULT "):])
    ray_s = statistics.median(results["ray"]["times"])
    peer_s = statistics.median(results["peer"]["times"])
    print(f"| {args.gib:g} GiB read on each of {args.readers} peers | Ray 2.60 | peer | peer/Ray |")
    print("|---|---:|---:|---:|")
    print(f"| seconds (median of {args.rounds}) | {ray_s:.2f} | {peer_s:.2f} | {peer_s / ray_s:.2f}× the time |")
    print(f"peer's producer served {results['peer']['producer_copies']:.2f}× the object per round")
    for b in ("ray", "peer"):
        print(f"{b} rounds: " + ", ".join(f"{t:.2f} s" for t in results[b]["times"]))


if __name__ == "__main__":
    main()
