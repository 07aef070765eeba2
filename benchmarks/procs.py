"""Process-tree accounting straight from /proc (no psutil, so it runs in any venv).

Used by the workloads to measure what a backend costs at idle (memory, process
count, CPU) and by the runner to catch processes a backend left behind.
Linux only.
"""

from __future__ import annotations

import os

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def parent_map() -> dict[int, int]:
    """pid -> ppid for every live process (zombies included)."""
    parents = {}
    for pid in all_pids():
        fields = _stat_fields(pid)
        if fields is not None:
            parents[pid] = int(fields[1])  # fields[0] is state, [1] is ppid
    return parents


def children(pid: int) -> list[int]:
    return [p for p, pp in parent_map().items() if pp == pid]


def descendants(root: int) -> list[int]:
    """Every live process below `root`, not counting `root` itself."""
    kids: dict[int, list[int]] = {}
    for pid, ppid in parent_map().items():
        kids.setdefault(ppid, []).append(pid)
    out, stack = [], [root]
    while stack:
        for child in kids.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is None or fields[0] in ("Z", "X")


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages divided among the processes mapping them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # utime and stime are fields 14 and 15 of stat; index 11 and 12 after the name.
    return (int(fields[11]) + int(fields[12])) / TICKS


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def live_descendants(root: int) -> list[int]:
    return [p for p in descendants(root) if not is_zombie(p)]


def shm_users(names: set[str]) -> dict[str, list[int]]:
    """Which live processes hold each /dev/shm entry open or mapped."""
    paths = {f"/dev/shm/{n}": n for n in names}
    users: dict[str, list[int]] = {n: [] for n in names}
    for pid in all_pids():
        seen = set()
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target in paths:
                    seen.add(paths[target])
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    path = line.rstrip("\n").split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
                    if path in paths:
                        seen.add(paths[path])
        except OSError:
            continue
        for name in seen:
            users[name].append(pid)
    return users
