"""What gossip costs each peer as the cluster grows: bytes per second and CPU of idle `peer up` daemons.

For each cluster size N (5, 10, 20 by default) this starts N real daemons
(`peer up --num-cpus 1 --object-store-memory 64000000 --no-mdns --listen /ip4/127.0.0.1/tcp/0`),
each bootstrapping only to the previous one, all inside ONE private network namespace that it
creates, so that the namespace's `lo` carries their traffic and nothing else. Once every peer's
view (`peer status --json`) lists the N-1 others with their load, it lets the cluster settle and
then measures over a window (10 s by default):

- bytes/s per peer: the delta of the namespace's `lo` tx_bytes / N / seconds. Each byte on
  loopback is counted once (tx), so this is what one peer sends, which on average equals what
  one peer receives; it includes TCP/IP headers and acknowledgements.
- CPU % per peer: utime + stime deltas of each daemon process from /proc/PID/stat (all its
  threads; not its fork server and workers, which are idle), as a percentage of one core.

It prints a table, writes benchmarks/results/gossip_cost.json and tears everything down
(daemons, their fork servers and workers, /dev/shm arenas, the namespace, temporary state).
Needs root (`ip netns`) and Linux. Run with the project's venv:

    .venv/bin/python benchmarks/gossip_cost.py [--sizes 5,10,20] [--window 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

TICKS = os.sysconf("SC_CLK_TCK")
STORE_BYTES = 64_000_000
RESULTS = Path(__file__).resolve().parent / "results" / "gossip_cost.json"


class BenchError(Exception):
    """A cluster did not come up or did not go down cleanly."""


@dataclass
class Daemon:
    state_dir: Path
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    join: str = ""
    peer_id: str = ""
    arena: str = ""

    @property
    def socket(self) -> str:
        return str(self.state_dir / "daemon.sock")


def status(python: str, state_dir: Path) -> dict[str, Any] | None:
    r = subprocess.run(
        [python, "-m", "peer._cli", "--state-dir", str(state_dir), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=15,
    )
    if r.returncode != 0:
        return None
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def lo_counters(ns: str) -> tuple[int, int]:
    """(tx_bytes, tx_packets) of `lo` inside the namespace."""
    r = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", "/sys/class/net/lo/statistics/tx_bytes",
         "/sys/class/net/lo/statistics/tx_packets"],
        capture_output=True, text=True, check=True, timeout=10,
    )  # fmt: skip
    tx_bytes, tx_packets = r.stdout.split()
    return int(tx_bytes), int(tx_packets)


def processes_of(socket: str) -> list[int]:
    """Live processes started for the daemon at ``socket`` (its fork server and workers)."""
    marker = f"PEER_SOCKET={socket}\0".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read() + b"\0":
                    found.append(int(entry))
        except OSError:
            continue
    return found


class Cluster:
    """N chained daemons in one private network namespace; a context manager that tears it all down."""

    def __init__(self, n: int, python: str) -> None:
        self.n = n
        self.python = python
        self.ns = f"pgc{os.getpid()}n{n}"
        self.root = Path(tempfile.mkdtemp(prefix="pgc"))  # short: socket paths are limited
        self.key = secrets.token_hex(32)
        self.daemons: list[Daemon] = []
        self.ns_made = False
        self.problems: list[str] = []

    def __enter__(self) -> Cluster:
        try:
            subprocess.run(["ip", "netns", "add", self.ns], check=True, capture_output=True, timeout=10)
            self.ns_made = True
            subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True, timeout=10)
            for i in range(self.n):
                self.start(i)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, i: int) -> None:
        state_dir = self.root / f"p{i}"
        log = open(self.root / f"p{i}.log", "wb")  # noqa: SIM115 - closed in close()
        cmd = ["ip", "netns", "exec", self.ns, self.python, "-m", "peer._cli", "--state-dir", str(state_dir)]
        cmd += ["up", "--num-cpus", "1", "--object-store-memory", str(STORE_BYTES), "--no-mdns"]
        cmd += ["--listen", "/ip4/127.0.0.1/tcp/0", "--key", self.key]
        if self.daemons:
            cmd += ["--bootstrap", self.daemons[-1].join]
        # `ip netns exec` execs the command: the Popen pid is the daemon's.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        daemon = Daemon(state_dir, proc, log)
        self.daemons.append(daemon)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if os.path.exists(daemon.socket) and (st := status(self.python, state_dir)):
                if join := (st.get("cluster") or {}).get("join"):  # null while gossip starts
                    daemon.join = join
                    daemon.peer_id = st["node_id"]
                    daemon.arena = st["store"]["path"]
                    return
            time.sleep(0.05)
        log.flush()
        raise BenchError(f"peer {i} did not start; its log:\n{(self.root / f'p{i}.log').read_text()}")

    def missing(self) -> int:
        """How many (peer, other peer) pairs are not yet in the views, with a load figure."""
        ids = {d.peer_id for d in self.daemons}
        missing = 0
        for d in self.daemons:
            st = status(self.python, d.state_dir)
            known = {p["peer_id"] for p in st["peers"] if p["has_load"]} if st else set()
            missing += len(ids - known - {d.peer_id})
        return missing

    def wait_views(self, timeout: float) -> float:
        start = time.monotonic()
        while (left := self.missing()) > 0:
            if time.monotonic() - start > timeout:
                raise BenchError(f"{self.n} peers: {left} view entries still missing after {timeout} s")
            time.sleep(0.2)
        return time.monotonic() - start

    def close(self) -> None:
        for d in self.daemons:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
        for d in self.daemons:
            try:
                d.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.problems.append(f"{d.state_dir.name} ignored SIGTERM")
                d.proc.kill()
                d.proc.wait()
            d.log.close()
        deadline = time.monotonic() + 15
        for d in self.daemons:
            while (left := processes_of(d.socket)) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in left:
                self.problems.append(f"{d.state_dir.name} left pid {pid}; killed")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if d.arena.startswith("/dev/shm/") and os.path.exists(d.arena):
                self.problems.append(f"{d.state_dir.name} left {d.arena}; removed")
                os.unlink(d.arena)
        self.daemons.clear()
        if self.ns_made:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10)
            self.ns_made = False
        shutil.rmtree(self.root, ignore_errors=True)


def measure(n: int, python: str, window: float, settle: float) -> dict[str, Any]:
    with Cluster(n, python) as cluster:
        views_s = cluster.wait_views(timeout=30 + 3 * n)
        time.sleep(settle)
        pids = [d.proc.pid for d in cluster.daemons]
        tx0, pk0 = lo_counters(cluster.ns)
        cpu0 = [cpu_ticks(p) for p in pids]
        t0 = time.monotonic()
        time.sleep(window)
        tx1, pk1 = lo_counters(cluster.ns)
        cpu1 = [cpu_ticks(p) for p in pids]
        seconds = time.monotonic() - t0
        missing_after = cluster.missing()
    cpu = [100.0 * (b - a) / TICKS / seconds for a, b in zip(cpu0, cpu1)]
    return {
        "peers": n,
        "views_complete_s": round(views_s, 2),
        "window_s": round(seconds, 2),
        "bytes_per_s_per_peer": round((tx1 - tx0) / n / seconds),
        "packets_per_s_per_peer": round((pk1 - pk0) / n / seconds, 1),
        "cpu_percent_per_peer_mean": round(sum(cpu) / n, 2),
        "cpu_percent_per_peer_max": round(max(cpu), 2),
        "view_entries_missing_after": missing_after,
        "cleanup_problems": cluster.problems,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="5,10,20", help="cluster sizes, comma-separated")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured per size")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between full views and measuring")
    parser.add_argument("--python", default=sys.executable, help="interpreter with `peer` installed")
    parser.add_argument(
        "--build", default="release", help="how the installed peer was built, for the report (not detected)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("gossip_cost needs root and iproute2's `ip` (it makes a network namespace)", file=sys.stderr)
        return 2

    load_before = os.getloadavg()
    runs = []
    for n in (int(s) for s in args.sizes.split(",")):
        print(f"{n} peers ...", file=sys.stderr, flush=True)
        runs.append(measure(n, args.python, args.window, args.settle))

    print(f"\ngossip cost of idle peers ({args.build} build), {args.window:g} s window each\n")
    print("| peers | bytes/s per peer | packets/s per peer | CPU % per peer (mean / max) | views complete |")
    print("|---:|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['peers']} | {r['bytes_per_s_per_peer']:,} | {r['packets_per_s_per_peer']:g} | "
            f"{r['cpu_percent_per_peer_mean']:.2f} / {r['cpu_percent_per_peer_max']:.2f} | "
            f"{r['views_complete_s']:.2f} s |"
        )
    load_after = os.getloadavg()
    print(f"\n{os.cpu_count()} cores; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    for r in runs:
        if r["view_entries_missing_after"]:
            print(
                f"WARNING: with {r['peers']} peers, {r['view_entries_missing_after']} view entries "
                f"(of {r['peers'] * (r['peers'] - 1)}) were missing right after the window"
            )
        for p in r["cleanup_problems"]:
            print(f"cleanup ({r['peers']} peers): {p}")

    report = {
        "build": args.build,
        "window_s": args.window,
        "settle_s": args.settle,
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
