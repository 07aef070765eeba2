"""Object transfer between nodes on one machine, side by side with Ray, three nodes each.

One workload, written once against the Ray API, runs on both backends, on three nodes (the
driver's, `n1` and `n2`, the last two marked by custom resources):

- **pull**: a task on `n1` makes a numpy array of each size; once it exists (`wait` with
  `fetch_local=False`), the driver times its own `get` of it: the pull from `n1`'s store into the
  driver node's. A fresh array every round, so nothing is cached.
- **read by 3**: the driver puts an array (100 MB by default) and a task on each of the three
  nodes reads it; timed from submitting the tasks until every result is back.

- peer: three `peer up` daemons on 127.0.0.1 (the others bootstrap to the first, same key); the
  driver attaches to the first. While each 1 GB object is pulled, the driver's daemon's memory is
  sampled every 2 ms from /proc: its anonymous memory (buffers) and its resident shared memory
  (the store pages it wrote): the pull must hold no more than the object plus bounded buffers.
- Ray: `ray.cluster_utils.Cluster`, a head node and two more raylets on this machine.

The same run measures the machine's physical anchors: a plaintext loopback TCP stream between
two Python processes, and `openssl speed` for AES-128-GCM, the cipher peers negotiate.

Each backend runs in its own process and interpreter (peer: the project's .venv; Ray: the
benchmark venv .venv-bench, created by `benchmarks/run`). The result is a table of GB/s (median
over rounds), the peer/Ray ratio, and peer's memory figures, written to
benchmarks/results/transfer.json and transfer.md.

    benchmarks/run --list >/dev/null   # once: creates .venv-bench with Ray
    .venv-bench/bin/python benchmarks/transfer.py [--rounds 5] [--sizes 1,10,100,1000] [--fan-mb 100]
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


def workload(
    ray: Any, sizes_mb: list[int], rounds: int, fan_mb: int, on_big: Any = None
) -> dict[str, list[float]]:
    """Seconds each measured step took: per size (`pull`) and for the three readers (`fan`)."""
    import numpy as np

    @ray.remote(num_cpus=0)
    def make(n: int, fill: int) -> Any:
        return np.full(n, fill, dtype=np.int64)

    @ray.remote(num_cpus=0)
    def read(arr: Any) -> int:
        return int(arr[::512].sum())

    on_n1 = make.options(resources={"n1": 1})
    ray.get(on_n1.remote(1, 0))  # n1 is up
    out: dict[str, list[float]] = {}
    for size in sizes_mb:
        times = []
        for r in range(rounds):
            ref = on_n1.remote(size * MB // 8, r)
            ray.wait([ref], fetch_local=False, timeout=120)  # made on n1; not pulled yet
            sampler = on_big() if (on_big is not None and size >= 1000) else None
            start = time.perf_counter()
            arr = ray.get(ref, timeout=300)
            took = time.perf_counter() - start
            if sampler is not None:
                sampler.stop()
            assert arr.nbytes == size * MB // 8 * 8 and int(arr[-1]) == r
            times.append(took)
            del arr, ref
            time.sleep(0.2)  # frees settle before the next object
        out[str(size)] = times
    fan = []
    n = fan_mb * MB // 8
    for r in range(rounds):
        ref = ray.put(np.full(n, r + 1, dtype=np.int64))
        start = time.perf_counter()
        sums = ray.get([read.options(resources={res: 1}).remote(ref) for res in ("n0", "n1", "n2")], timeout=300)
        fan.append(time.perf_counter() - start)
        assert sums == [(r + 1) * len(range(0, n, 512))] * 3, sums
        del ref
        time.sleep(0.5)
    out["fan"] = fan
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


def start_cluster(
    tmp: Path, names: list[str], procs: list[subprocess.Popen[bytes]], store: int = STORE
) -> subprocess.Popen[bytes]:
    """`peer up` daemons in `tmp/<name>`, each with a custom resource `<name>`, all joined through
    the first with its key; every process goes into `procs` as it starts (for `stop_daemons`).
    Returns the first, once it has heard from all the others."""
    first, st_first = start_daemon(tmp / names[0], tmp / f"{names[0]}.log", "--resource", f"{names[0]}=1",
                                   store=store)
    procs.append(first)
    key = (tmp / names[0] / "cluster.key").read_text().strip()
    ids = set()
    for name in names[1:]:
        p, st = start_daemon(tmp / name, tmp / f"{name}.log", "--resource", f"{name}=1", "--key", key,
                             "--bootstrap", st_first["cluster"]["join"], store=store)
        procs.append(p)
        ids.add(st["node_id"])
    wait_for_peers(tmp / names[0], ids)
    return first


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


def run_peer(sizes: list[int], rounds: int, fan_mb: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="peer-transfer-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        a = start_cluster(tmp, ["n0", "n1", "n2"], procs)
        os.environ["PEER_STATE_DIR"] = str(tmp / "n0")
        import peer

        peer.init()
        try:
            times = workload(peer, sizes, rounds, fan_mb, on_big=lambda: MemorySampler(a.pid))
        finally:
            peer.shutdown()
        return {"times": times, "memory": samples}
    finally:
        stop_daemons(procs, tmp)


def run_ray(sizes: list[int], rounds: int, fan_mb: int) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": STORE, "resources": {"n0": 1}},
    )
    for name in ("n1", "n2"):
        cluster.add_node(num_cpus=1, resources={name: 1}, object_store_memory=STORE)
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        return {"times": workload(ray, sizes, rounds, fan_mb)}
    finally:
        ray.shutdown()
        cluster.shutdown()


def loopback_tcp_gbps(total: int = 2 * 1024**3, block: int = 1 << 20) -> float:
    """A plaintext loopback TCP stream between two Python processes (sendall / recv_into)."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    sender = subprocess.Popen([sys.executable, "-c", (
        "import socket, sys\n"
        f"s = socket.create_connection(('127.0.0.1', {port}))\n"
        f"buf = bytes({block})\n"
        f"for _ in range({total // block}): s.sendall(buf)\n"
        "s.close()\n"
    )])
    conn, _ = server.accept()
    buf = bytearray(block)
    view = memoryview(buf)
    got = 0
    start = time.perf_counter()
    while got < total:
        n = conn.recv_into(view)
        if n == 0:
            break
        got += n
    took = time.perf_counter() - start
    conn.close()
    server.close()
    sender.wait(timeout=60)
    return got / took / 1e9


def openssl_gbps(cipher: str = "aes-128-gcm", block: int = 16384) -> float | None:
    """`openssl speed -evp` for `cipher` on `block`-byte buffers, one core; None without openssl."""
    if shutil.which("openssl") is None:
        return None
    r = subprocess.run(["openssl", "speed", "-evp", cipher, "-bytes", str(block), "-seconds", "2"],
                       capture_output=True, text=True, timeout=60)
    for line in r.stdout.splitlines():
        if line.lower().startswith(cipher.lower()):
            kbps = line.split()[-1].rstrip("k")
            return float(kbps) * 1000 / 1e9
    return None


def label(size_mb: int) -> str:
    return f"{size_mb // 1000} GB" if size_mb >= 1000 else f"{size_mb} MB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["peer", "ray"], help="run one backend here (internal)")
    p.add_argument("--sizes", default="10,100,500,1000", help="object sizes in MB")
    p.add_argument("--fan-mb", type=int, default=100, help="the object the three nodes' tasks read, in MB")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--peer-python", default=str(ROOT / ".venv" / "bin" / "python"))
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.backend:
        result = (run_peer if args.backend == "peer" else run_ray)(sizes, args.rounds, args.fan_mb)
        print("RESULT " + json.dumps(result))
        return

    results: dict[str, Any] = {}
    for backend, python in (("ray", sys.executable), ("peer", args.peer_python)):
        print(f"running {backend} ...", file=sys.stderr)
        r = subprocess.run(
            [python, __file__, "--backend", backend, "--sizes", args.sizes, "--rounds", str(args.rounds),
             "--fan-mb", str(args.fan_mb)],
            capture_output=True, text=True, timeout=1800,
        )
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if r.returncode != 0 or line is None:
            sys.exit(f"{backend} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
        results[backend] = json.loads(line[len("RESULT "):])
    print("measuring the anchors ...", file=sys.stderr)
    anchors = {"loopback_tcp_gbps": loopback_tcp_gbps(), "openssl_aes_128_gcm_gbps": openssl_gbps()}

    rows = []
    lines = [
        "| object | Ray (3 raylets) | peer (3 `peer up`) | peer/Ray |",
        "|---|---:|---:|---:|",
    ]
    for size in sizes:
        med = {b: statistics.median(results[b]["times"][str(size)]) for b in ("ray", "peer")}
        gbps = {b: size * MB / med[b] / 1e9 for b in med}
        row = {"size_mb": size, "ray_gbps": gbps["ray"], "peer_gbps": gbps["peer"], "ratio": gbps["peer"] / gbps["ray"]}
        rows.append(row)
        lines.append(f"| {label(size)} | {row['ray_gbps']:.2f} GB/s | {row['peer_gbps']:.2f} GB/s | {row['ratio']:.2f}× |")
    fan = {b: statistics.median(results[b]["times"]["fan"]) for b in ("ray", "peer")}
    lines.append(
        f"| {label(args.fan_mb)} read by a task on each of 3 nodes | {fan['ray']:.2f} s | {fan['peer']:.2f} s "
        f"| {fan['ray'] / fan['peer']:.2f}× |"
    )
    machine = f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), {args.rounds} rounds, medians"
    lines += ["", machine]
    ssl = anchors["openssl_aes_128_gcm_gbps"]
    lines.append(
        f"Anchors, same run: a plaintext loopback TCP stream between two Python processes "
        f"{anchors['loopback_tcp_gbps']:.2f} GB/s; `openssl speed -evp aes-128-gcm` (16 KiB, one core) "
        + (f"{ssl:.2f} GB/s." if ssl is not None else "not measured (no openssl).")
    )
    mem = results["peer"].get("memory", [])
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
    (RESULTS / "transfer.json").write_text(
        json.dumps({"rows": rows, "fan_seconds": fan, "anchors": anchors, "raw": results, "machine": machine},
                   indent=1))
    (RESULTS / "transfer.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
