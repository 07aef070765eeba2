"""Object transfer between two peers on one machine, side by side with Ray between two raylets.

One workload, written once against the Ray API, runs on both backends: the driver (on the first
node) puts a numpy array of each size, and an actor pinned to the second node (a custom resource
`far`) gets it, timing only its own `get` — the pull from the first node's store into its own.
Every round puts a fresh array, so nothing is cached on the second node.

- peer: two `peer up` daemons on 127.0.0.1 (the second bootstraps to the first, same key); the
  driver attaches to the first. While the 1 GB object is pulled, the second daemon's memory is
  sampled every 2 ms from /proc: its anonymous memory (buffers) and its resident shared memory
  (the store pages it wrote) — the pull must hold no more than the object plus bounded buffers.
- Ray: `ray.cluster_utils.Cluster` with a head node and one more raylet on this machine.

Each backend runs in its own process and interpreter (peer: the project's .venv; Ray: the
benchmark venv .venv-bench, created by `benchmarks/run`). The result is a table of GB/s (median
over rounds), the peer/Ray ratio, and peer's memory figures, written to
benchmarks/results/transfer.json and transfer.md.

    benchmarks/run --list >/dev/null   # once: creates .venv-bench with Ray
    .venv-bench/bin/python benchmarks/transfer.py [--rounds 5] [--sizes 1,10,100,1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
STORE = 3 * 1024**3
MB = 1_000_000


def workload(ray: Any, sizes_mb: list[int], rounds: int, on_big: Any = None) -> dict[str, list[float]]:
    """Seconds the far node's `get` took, per size and round."""
    import numpy as np

    @ray.remote(num_cpus=0, resources={"far": 1})
    class Sink:
        def pull(self, refs: list[Any]) -> tuple[float, int]:
            start = time.perf_counter()
            arr = ray.get(refs[0])
            took = time.perf_counter() - start
            n = int(arr.nbytes)
            del arr
            return took, n

    sink = Sink.remote()
    ray.get(sink.pull.remote([ray.put(np.zeros(8))]))  # the actor is up
    out: dict[str, list[float]] = {}
    for size in sizes_mb:
        times = []
        for r in range(rounds):
            ref = ray.put(np.full(size * MB // 8, r, dtype=np.int64))
            sampler = on_big() if (on_big is not None and size >= 1000) else None
            took, n = ray.get(sink.pull.remote([ref]))
            if sampler is not None:
                sampler.stop()
            assert n == size * MB // 8 * 8
            times.append(took)
            del ref
            time.sleep(0.2)  # frees settle before the next put
        out[str(size)] = times
    return out


class MemorySampler:
    """Samples a process's anonymous and shared resident memory until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_anon = 0
        self.peak_shmem = 0
        self.base_anon, self.base_shmem = self._read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _read(self) -> tuple[int, int]:
        anon = shmem = 0
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1]) * 1024
                elif line.startswith("RssShmem:"):
                    shmem = int(line.split()[1]) * 1024
        return anon, shmem

    def _run(self) -> None:
        while not self._stop.is_set():
            anon, shmem = self._read()
            self.peak_anon = max(self.peak_anon, anon)
            self.peak_shmem = max(self.peak_shmem, shmem)
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        samples.append(
            {"anon_base_mib": self.base_anon / 2**20, "anon_peak_mib": self.peak_anon / 2**20,
             "shmem_base_mib": self.base_shmem / 2**20, "shmem_peak_mib": self.peak_shmem / 2**20}
        )


samples: list[dict[str, float]] = []


def peer_cli(state: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peer._cli", "--state-dir", str(state), *args],
        capture_output=True, text=True, timeout=timeout,
    )


def start_daemon(
    state: Path, log: Path, *args: str, store: int = STORE
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    cmd = [sys.executable, "-m", "peer._cli", "--state-dir", str(state), "up", "--no-mdns",
           "--listen", "/ip4/127.0.0.1/tcp/0", "--num-cpus", "1", "--object-store-memory", str(store), *args]
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"peer up exited: {log.read_text()}")
        if (state / "daemon.sock").exists():
            r = peer_cli(state, "status", "--json")
            if r.returncode == 0:
                st = json.loads(r.stdout)
                if (st.get("cluster") or {}).get("join"):
                    return proc, st
        time.sleep(0.05)
    raise RuntimeError("peer up did not start")


def wait_for_peers(state: Path, ids: set[str], timeout: float = 60) -> None:
    """Until the daemon at `state` has heard the load of every peer in `ids`."""
    deadline = time.monotonic() + timeout
    while True:
        peers = json.loads(peer_cli(state, "status", "--json").stdout)["peers"]
        if ids <= {p["peer_id"] for p in peers if p["has_load"]}:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the peers did not find each other")
        time.sleep(0.05)


def stop_daemons(procs: list[subprocess.Popen[bytes]], tmp: Path) -> None:
    """SIGTERM every daemon, wait for them (SIGKILL after 30 s), remove their state."""
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(tmp, ignore_errors=True)


def run_peer(sizes: list[int], rounds: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="peer-transfer-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        a, st_a = start_daemon(tmp / "a", tmp / "a.log")
        procs.append(a)
        key = (tmp / "a" / "cluster.key").read_text().strip()
        b, st_b = start_daemon(tmp / "b", tmp / "b.log", "--resource", "far=1", "--key", key,
                               "--bootstrap", st_a["cluster"]["join"])
        procs.append(b)
        wait_for_peers(tmp / "a", {st_b["node_id"]})
        os.environ["PEER_STATE_DIR"] = str(tmp / "a")
        import peer

        peer.init()
        try:
            times = workload(peer, sizes, rounds, on_big=lambda: MemorySampler(b.pid))
        finally:
            peer.shutdown()
        return {"times": times, "memory": samples}
    finally:
        stop_daemons(procs, tmp)


def run_ray(sizes: list[int], rounds: int) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE})
    cluster.add_node(num_cpus=1, resources={"far": 1}, object_store_memory=STORE)
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        return {"times": workload(ray, sizes, rounds)}
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["peer", "ray"], help="run one backend here (internal)")
    p.add_argument("--sizes", default="1,10,100,1000", help="object sizes in MB")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--peer-python", default=str(ROOT / ".venv" / "bin" / "python"))
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.backend:
        result = (run_peer if args.backend == "peer" else run_ray)(sizes, args.rounds)
        print("RESULT " + json.dumps(result))
        return

    results: dict[str, Any] = {}
    for backend, python in (("ray", sys.executable), ("peer", args.peer_python)):
        print(f"running {backend} ...", file=sys.stderr)
        r = subprocess.run(
            [python, __file__, "--backend", backend, "--sizes", args.sizes, "--rounds", str(args.rounds)],
            capture_output=True, text=True, timeout=1800,
        )
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if r.returncode != 0 or line is None:
            sys.exit(f"{backend} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
        results[backend] = json.loads(line[len("RESULT "):])

    rows = []
    for size in sizes:
        med = {b: statistics.median(results[b]["times"][str(size)]) for b in ("ray", "peer")}
        gbps = {b: size * MB / med[b] / 1e9 for b in med}
        rows.append({"size_mb": size, "ray_gbps": gbps["ray"], "peer_gbps": gbps["peer"],
                     "ratio": gbps["peer"] / gbps["ray"]})
    mem = results["peer"].get("memory", [])
    lines = [
        "| object | Ray 2.60 (two raylets) | peer (two peers) | peer/Ray |",
        "|---:|---:|---:|---:|",
    ]
    for row in rows:
        label = f"{row['size_mb'] // 1000} GB" if row["size_mb"] >= 1000 else f"{row['size_mb']} MB"
        lines.append(f"| {label} | {row['ray_gbps']:.2f} GB/s | {row['peer_gbps']:.2f} GB/s | {row['ratio']:.2f}× |")
    machine = f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), {args.rounds} rounds, medians"
    lines.append("")
    lines.append(machine)
    if mem:
        worst_anon = max(m["anon_peak_mib"] - m["anon_base_mib"] for m in mem)
        worst_shm = max(m["shmem_peak_mib"] - m["shmem_base_mib"] for m in mem)
        lines.append(
            f"peer, pulling 1 GB (953.7 MiB): while a pull ran, the pulling node's anonymous memory grew by at "
            f"most {worst_anon:.1f} MiB (chunks land in the store: no buffer per request) and its resident shared "
            f"memory by at most {worst_shm:.1f} MiB (the object's pages in its own store)."
        )
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transfer.json").write_text(json.dumps({"rows": rows, "raw": results, "machine": machine}, indent=1))
    (RESULTS / "transfer.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
