"""Runs the workloads for several backends side by side and reports medians and ratios.

Started by `benchmarks/run` inside the benchmark venv (.venv-bench). For every
round, every workload group and every backend (alternating: A B A B ...) it
starts a fresh `workloads.py` process with that backend's interpreter:

- ray, mp: this venv's Python (Ray pinned in requirements.txt);
- peer:    the project's venv (.venv), where the README's setup installs `peer`.

After each process it checks hygiene: processes the backend left behind (this
runner is a child subreaper, so orphans land here; they are reported, then
killed) and files that appeared in /dev/shm (reported only: other programs
may own them). Results: a table on the terminal, results/latest.json,
results/latest.md and results/ratios.png (full runs), or the same under
.scratch/ for runs narrowed with --only.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import procs  # noqa: E402
import workloads as wl  # noqa: E402  (registry only; it imports no backend at module level)

RESULTS = os.path.join(HERE, "results")
SCRATCH = os.path.join(HERE, ".scratch")
PR_SET_CHILD_SUBREAPER = 36


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- backends


def peer_python(override: str | None) -> str:
    return override or os.path.join(ROOT, ".venv", "bin", "python")


def check_peer(python: str) -> str | None:
    """None when `peer` imports in that interpreter, else why not."""
    if not os.path.exists(python):
        return f"{python} does not exist"
    probe = "import peer; assert callable(peer.init) and callable(peer.remote), 'peer has no init/remote'"
    r = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit status {r.returncode}"
    return None


def interpreter(backend: str, args) -> str:
    return peer_python(args.peer_python) if backend == "peer" else sys.executable


def version_in(python: str, dist: str) -> str | None:
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    return r.stdout.strip() if r.returncode == 0 else None


# --------------------------------------------------------------------------- hygiene


def become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_tree(pid: int) -> None:
    for p in [pid] + procs.descendants(pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def sweep_orphans(grace_s: float = 10.0) -> list[str]:
    """Processes left behind by the last worker (reparented to us); wait, then kill them."""
    me = os.getpid()
    deadline = time.monotonic() + grace_s
    while True:
        reap()
        left = [p for p in procs.descendants(me) if not procs.is_zombie(p)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    names = [f"{p} {procs.cmdline(p)[:160]}" for p in left]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in left:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        time.sleep(1.0 if sig == signal.SIGTERM else 0.2)
        reap()
    return names


def shm_entries() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


# --------------------------------------------------------------------------- one worker process


def run_worker(backend: str, group: str, args, round_no: int) -> dict:
    cmd = [interpreter(backend, args), os.path.join(HERE, "workloads.py"), "--backend", backend,
           "--only", args.only_map.get(group, group), "--json"]
    shm_before = shm_entries()
    load1 = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_tree(proc.pid)
        out, err = proc.communicate()
    wall = time.perf_counter() - t
    records, done = [], None
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("bench") != 1:
            continue
        if rec.get("event") == "done":
            done = rec
        else:
            records.append(rec)
    os.makedirs(os.path.join(SCRATCH, "logs"), exist_ok=True)
    with open(os.path.join(SCRATCH, "logs", f"r{round_no}-{group}-{backend}.log"), "w") as f:
        f.write(f"$ {' '.join(cmd)}\n--- stdout\n{out}\n--- stderr\n{err}")
    orphans = sweep_orphans()
    new_shm = sorted(shm_entries() - shm_before)
    problem = None
    if timed_out:
        problem = f"timed out after {args.timeout} s"
    elif proc.returncode != 0:
        tail = err.strip().splitlines()[-3:]
        problem = f"exit status {proc.returncode}: {' | '.join(tail)}"
    elif done is None:
        problem = "no completion record"
    return {"backend": backend, "group": group, "round": round_no, "wall_s": wall, "load1_before": load1,
            "records": records, "done": done, "problem": problem, "orphans": orphans, "new_shm": new_shm}


# --------------------------------------------------------------------------- report


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 0.001:
        return f"{v:.3g}"
    return f"{v:.2e}"


def summarize(runs: list[dict], backends: list[str]) -> dict:
    samples: dict[str, dict[str, list[float]]] = {b: {} for b in backends}
    errors, notes = [], []
    for run in runs:
        for rec in run["records"]:
            if rec.get("error"):
                errors.append(f"{rec['backend']} {rec['metric']} (round {run['round']}): {rec['error']}")
            elif rec.get("value") is not None:
                samples[rec["backend"]].setdefault(rec["metric"], []).append(rec["value"])
        if run["problem"]:
            errors.append(f"{run['backend']} {run['group']} (round {run['round']}): {run['problem']}")
        for note in (run["done"] or {}).get("notes", []):
            line = f"{run['backend']} {run['group']}: {note}"
            if line not in notes:
                notes.append(line)
    medians: dict[str, dict[str, dict]] = {b: {} for b in backends}
    for b, per in samples.items():
        for m, vals in per.items():
            if len(vals) >= 2:  # a single sample is never reported as a result
                medians[b][m] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
                                 "n": len(vals)}
    pairs = [(b, "ray") for b in backends if b != "ray" and "ray" in backends]
    if "peer" in backends and "mp" in backends:
        pairs.append(("peer", "mp"))
    ratios: dict[str, dict[str, float]] = {}
    for num, den in pairs:
        key = f"{num}/{den}"
        ratios[key] = {}
        for m in wl.METRICS:
            a, b = medians[num].get(m), medians[den].get(m)
            if a and b and a["median"] and b["median"]:  # a zero has no meaningful ratio
                ratios[key][m] = a["median"] / b["median"]
    return {"samples": samples, "medians": medians, "ratios": ratios, "errors": errors, "notes": notes}


def advantage(metric: str, ratio: float) -> float:
    """How many times better the numerator backend is (>1: better), whatever the unit's direction."""
    return ratio if wl.METRICS[metric].better == "higher" else (1 / ratio if ratio else float("inf"))


def table_rows(summary: dict, backends: list[str], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["workload", "unit"] + backends + list(summary["ratios"])
    rows = []
    for m in metrics:
        meta = wl.METRICS[m]
        cells = [m, f"{meta.unit} {'↑' if meta.better == 'higher' else '↓'}"]
        for b in backends:
            med = summary["medians"][b].get(m)
            cells.append(fmt(med["median"]) if med else "-")
        for key, per in summary["ratios"].items():
            r = per.get(m)
            cells.append("-" if r is None else f"{fmt(r)} {'✓' if advantage(m, r) > 1 else '✗'}")
        if any(c != "-" for c in cells[2:]):
            rows.append(cells)
    return header, rows


def render_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def render_markdown(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def chart(summary: dict, metrics: list[str], path: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"no chart: {e}"
    comparisons = [(k, per) for k, per in summary["ratios"].items() if per]
    if not comparisons:
        return "no chart: no ratios (one backend only?)"
    names = [m for m in metrics if any(m in per for _, per in comparisons)]
    fig, ax = plt.subplots(figsize=(9, 0.22 * len(names) * len(comparisons) + 1.8))
    height = 0.8 / len(comparisons)
    for i, (key, per) in enumerate(comparisons):
        ys = [j + i * height for j in range(len(names))]
        xs = [advantage(m, per[m]) if m in per else 0 for m in names]
        ax.barh(ys, xs, height=height, label=key)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(names))], names)
    ax.invert_yaxis()
    ax.set_xlabel("times better than the second backend (>1: faster, or less memory/time)")
    ax.legend(loc="lower right")
    ax.set_title("benchmarks: median ratio per workload")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def update_readme(table: str, backends: list[str]) -> None:
    """Put the latest full run's table between the markers in benchmarks/README.md."""
    path = os.path.join(HERE, "README.md")
    start, end = "<!-- latest:start -->", "<!-- latest:end -->"
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return
    if start not in text or end not in text:
        return
    stamp = datetime.date.today().isoformat()
    body = f"{start}\nRun of {stamp}, backends {', '.join(backends)}:\n\n{table}\n{end}"
    head, rest = text.split(start, 1)
    with open(path, "w") as f:
        f.write(head + body + rest.split(end, 1)[1])


def machine_info(backends: list[str], args) -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info = {"cores": wl.CORES, "cpu": model, "memory_gib": round(mem_gib, 1), "kernel": platform.release(),
            "python": platform.python_version(), "numpy": importlib.metadata.version("numpy")}
    if "ray" in backends:
        info["ray"] = importlib.metadata.version("ray")
    if "peer" in backends:
        info["peer"] = version_in(interpreter("peer", args), "peer")
    return info


# --------------------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description="peer against Ray (and multiprocessing.Pool), side by side")
    p.add_argument("--backends", default="ray,peer,mp", help="comma list of ray, peer, mp (default: all)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; every figure is a median over them (>= 2)")
    p.add_argument("--only", default="", help="comma list of groups or metrics (see --list); default all")
    p.add_argument("--timeout", type=float, default=180, help="seconds before one worker process is killed")
    p.add_argument("--peer-python", help="interpreter that imports peer (default: .venv/bin/python)")
    p.add_argument("--list", action="store_true", help="list groups and metrics and exit")
    args = p.parse_args()
    if args.list:
        return wl.main(["--list"])
    if args.rounds < 2:
        p.error("--rounds must be at least 2: a single sample is never a result")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in wl.BACKENDS:
            p.error(f"unknown backend {b!r}")

    # --only: groups run whole; a metric runs alone in its group's process.
    args.only_map = {}
    if args.only:
        groups = []
        for name in args.only.split(","):
            grp, _ = wl.resolve(name.strip())
            if grp.name not in groups:
                groups.append(grp.name)
            if name.strip() in wl.METRICS:
                args.only_map[grp.name] = name.strip()
    else:
        groups = list(wl.GROUPS)
    full = not args.only and args.rounds >= 3  # narrowed or short runs never replace latest.*

    if "peer" in backends:
        why = check_peer(peer_python(args.peer_python))
        if why:
            log("peer: SKIPPED. The project venv has no importable `peer` package:\n"
                f"  {peer_python(args.peer_python)}: {why}\n"
                "  Set it up with the README's commands (they create .venv and `maturin develop` peer into it),\n"
                "  or point --peer-python at an interpreter that can `import peer`.")
            backends.remove("peer")
    if not backends:
        log("nothing to run")
        return 2
    subreaper = become_subreaper()
    if not subreaper:
        log("warning: could not become a child subreaper; orphaned backend processes may go unnoticed")

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    load_start = os.getloadavg()
    runs = []
    t0 = time.perf_counter()
    for r in range(1, args.rounds + 1):
        for g in groups:
            for b in backends:  # alternating backends: A B A B ...
                kind = wl.kind_of(b)
                wanted = [args.only_map[g]] if g in args.only_map else wl.GROUPS[g].metrics
                if not any(kind in wl.METRICS[m].impls for m in wanted):
                    continue
                run = run_worker(b, g, args, r)
                runs.append(run)
                flags = [run["problem"] or "ok"]
                if run["orphans"]:
                    flags.append(f"{len(run['orphans'])} leftover processes killed")
                if run["new_shm"]:
                    flags.append(f"new in /dev/shm: {run['new_shm']}")
                log(f"[round {r}/{args.rounds}] {g:14} {b:5} {run['wall_s']:6.1f} s  load {run['load1_before']:.2f}  "
                    + "; ".join(flags))
    total_s = time.perf_counter() - t0
    load_end = os.getloadavg()

    summary = summarize(runs, backends)
    metrics = [m for g in groups for m in wl.GROUPS[g].metrics
               if not args.only_map.get(g) or m == args.only_map[g]]
    header, rows = table_rows(summary, backends, metrics)
    machine = machine_info(backends, args)
    loads = [run["load1_before"] for run in runs]
    context = (f"{machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB; "
               f"load average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}, "
               f"at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}, "
               f"max before a run {max(loads):.2f}; {args.rounds} rounds, {total_s:.0f} s; medians; "
               f"ratios are the first backend's median over the second's (✓: first is better)")
    if max(loads) > machine["cores"]:
        context += (f"\nWARNING: the load average reached {max(loads):.1f} on {machine['cores']} cores during "
                    "the run; other programs competed for the CPUs, so the figures are noisy")
    print()
    print(render_text(header, rows))
    print()
    print(context)
    hygiene = [f"{run['backend']} {run['group']} r{run['round']}: left processes {run['orphans']}"
               for run in runs if run["orphans"]]
    # Other programs on the machine use /dev/shm too: report only what appeared during one of
    # our runs, is still there at the end and is held open by no live process (all of ours are gone).
    still = shm_entries()
    still -= {name for name, pids in procs.shm_users(still).items() if pids}
    hygiene += [f"{run['backend']} {run['group']} r{run['round']}: /dev/shm entries that appeared during "
                f"this run and are still there: {sorted(set(run['new_shm']) & still)}"
                for run in runs if set(run["new_shm"]) & still]
    for line in summary["notes"]:
        print("note: " + line)
    for line in summary["errors"] + hygiene:
        print("! " + line)
    if not hygiene:
        print("hygiene: no backend process outlived its run; no new /dev/shm entries")

    out_dir = RESULTS if full else SCRATCH
    os.makedirs(out_dir, exist_ok=True)
    base = "latest" if full else "partial"
    result = {
        "started": started, "seconds": round(total_s, 1), "rounds": args.rounds, "backends": backends,
        "groups": groups, "machine": machine,
        "load": {"start": load_start, "end": load_end, "max_before_run": max(loads)},
        "metrics": {m: {"group": wl.METRICS[m].group, "unit": wl.METRICS[m].unit,
                        "better": wl.METRICS[m].better, "doc": wl.METRICS[m].doc} for m in metrics},
        "medians": summary["medians"], "ratios": summary["ratios"], "samples": summary["samples"],
        "errors": summary["errors"], "notes": summary["notes"], "hygiene": hygiene,
        "runs": [{k: v for k, v in run.items() if k not in ("records", "done")} for run in runs],
    }
    with open(os.path.join(out_dir, f"{base}.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    with open(os.path.join(out_dir, f"{base}.md"), "w") as f:
        f.write(render_markdown(header, rows) + "\n\n" + context + "\n")
    if full:
        update_readme(render_markdown(header, rows) + "\n\n" + context.replace("\n", "\n\n"), backends)
    png = os.path.join(out_dir, "ratios.png")
    why = chart(summary, metrics, png)
    log(f"wrote {os.path.relpath(out_dir, ROOT)}/{base}.json, {base}.md"
        + (f", ratios.png" if why is None else f" ({why})"))
    return 1 if summary["errors"] or hygiene else 0


if __name__ == "__main__":
    sys.exit(main())
