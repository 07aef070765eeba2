"""Several ``peer up`` daemons on this host, for the multi-peer tests: start them, read their status
and views, and stop them checking that each left no process and no arena file behind.

Each daemon is a real process with its own state directory and log file under the test's
``tmp_path``. Peers listen on 127.0.0.1 only and never use mDNS unless a test runs them inside
network namespaces of its own. A daemon killed with SIGKILL cannot remove its arena: ``close``
does. Drivers attach to a daemon by running with ``PEER_STATE_DIR`` set to its state directory
(see ``Daemon.driver_env``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from conftest import child_pids, leftover_processes, peer_cli

STORE_BYTES = 64_000_000
LOOPBACK = "/ip4/127.0.0.1/tcp/0"
LAN_LISTEN = "/ip4/0.0.0.0/tcp/7700"  # only inside the test's own network namespaces
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def orphans(socket: str) -> list[str]:
    """Live processes (fork server, workers) of the daemon at ``socket``, the daemon itself aside."""
    return leftover_processes(socket, ignore=child_pids())


def _cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return peer_cli(state_dir, *args, timeout=10)


@dataclass
class Daemon:
    """One ``peer up`` process and what its first ``status`` said about it."""

    name: str
    state_dir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    peer_id: str = ""
    join: str = ""
    arena: str = ""
    killed: bool = False

    @property
    def socket(self) -> str:
        return str(self.state_dir / "daemon.sock")

    def status(self) -> dict[str, Any]:
        r = _cli(self.state_dir, "status", "--json")
        assert r.returncode == 0, f"status of {self.name} failed: {r.stderr}\nlog:\n{self.log_text()}"
        st: dict[str, Any] = json.loads(r.stdout)
        return st

    def view(self) -> dict[str, dict[str, Any]]:
        """The peers this daemon knows, by PeerId."""
        return {p["peer_id"]: p for p in self.status()["peers"]}

    def log_text(self) -> str:
        self.log.flush()
        return ANSI.sub("", self.log_path.read_text(errors="replace"))

    def logged(self, text: str) -> bool:
        return text in self.log_text()

    def driver_env(self) -> dict[str, str]:
        """The environment of a driver process that attaches to this daemon."""
        return dict(os.environ, PEER_STATE_DIR=str(self.state_dir))

    def stop(self) -> None:
        """Freeze the process (SIGSTOP): it holds its connections but answers nothing."""
        self.proc.send_signal(signal.SIGSTOP)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.killed = True


@dataclass
class Launcher:
    """Starts daemons for one test; ``close`` stops them and checks (and repairs) cleanup."""

    root: Path
    daemons: list[Daemon] = field(default_factory=list)

    def up(
        self,
        name: str,
        *args: str,
        netns: str | None = None,
        listen: str = LOOPBACK,
        store: int = STORE_BYTES,
        state_dir: Path | None = None,
        cwd: Path | None = None,
    ) -> Daemon:
        """Start a daemon; ``state_dir`` reuses another daemon's (its identity: a restart); ``cwd``:
        its working directory (and its workers')."""
        state_dir = state_dir or self.root / name
        log_path = self.root / f"{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        cmd = [sys.executable, "-m", "peer._cli", "--state-dir", str(state_dir), "up"]
        cmd += ["--object-store-memory", str(store), "--listen", listen, *args]
        if netns is not None:
            cmd = ["ip", "netns", "exec", netns, *cmd]  # `ip` execs the daemon: same pid
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd)
        daemon = Daemon(name, state_dir, proc, log_path, log)
        self.daemons.append(daemon)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"peer up {name} did not start (rc {proc.poll()}):\n{daemon.log_text()}")
            if os.path.exists(daemon.socket):
                r = _cli(state_dir, "status", "--json")
                if r.returncode == 0:
                    st = json.loads(r.stdout)
                    if join := (st.get("cluster") or {}).get("join"):  # null while gossip starts
                        daemon.peer_id = st["node_id"]
                        daemon.join = join
                        daemon.arena = st["store"]["path"]
                        return daemon
            time.sleep(0.02)

    def close(self) -> None:
        problems = []
        for d in self.daemons:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
        for d in self.daemons:
            try:
                rc = d.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                problems.append(f"{d.name} ignored SIGTERM for 15 s")
                d.kill9()
                rc = d.proc.returncode
            if rc != 0 and not d.killed:
                problems.append(f"{d.name} exited with {rc}")
            d.log.close()
        # The fork server and workers of a killed daemon exit by themselves on EOF of its socket.
        deadline = time.monotonic() + 10
        for d in self.daemons:
            while (left := orphans(d.socket)) and time.monotonic() < deadline:
                time.sleep(0.05)
            if left:
                problems.append(f"{d.name} left processes: {left}")
                for entry in left:
                    pid = int(entry.split()[1])
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        for d in self.daemons:
            if d.arena.startswith("/dev/shm/") and os.path.exists(d.arena):
                if not d.killed:
                    problems.append(f"{d.name} left its arena {d.arena}")
                os.unlink(d.arena)
        self.daemons.clear()
        if problems:
            pytest.fail("cleanup: " + "; ".join(problems))


def chain(
    launcher: Launcher, n: int, key: str | None = None, cpus: Callable[[int], int] = lambda i: 1
) -> list[Daemon]:
    """``n`` daemons, each bootstrapping only to the previous one, all with the first one's key."""
    first = launcher.up("p0", "--no-mdns", "--num-cpus", str(cpus(0)), *(["--key", key] if key else []))
    key = key or (first.state_dir / "cluster.key").read_text().strip()
    peers = [first]
    for i in range(1, n):
        peers.append(
            launcher.up(
                f"p{i}", "--no-mdns", "--num-cpus", str(cpus(i)), "--key", key, "--bootstrap", peers[-1].join
            )
        )
    return peers


def views_complete(peers: list[Daemon]) -> bool:
    """Whether every peer knows every other one, with a load figure."""
    for d in peers:
        view = d.view()
        for other in peers:
            if other is not d and not (other.peer_id in view and view[other.peer_id]["has_load"]):
                return False
    return True


def wait_for(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> float:
    """Poll ``cond`` until it holds; returns the seconds it took, fails after ``timeout``."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(step)
    return time.monotonic() - start


def describe(peers: list[Daemon]) -> str:
    return "\n".join(f"{d.name} {d.peer_id}: {sorted(d.view())}" for d in peers)


def cluster(launcher: Launcher, specs: list[tuple[str, list[str]]], store: int = STORE_BYTES) -> list[Daemon]:
    """Daemons named and configured by ``specs``, all joined through the first; waits until
    every one has every other one (with its load) in its view."""
    first_name, first_args = specs[0]
    first = launcher.up(first_name, "--no-mdns", *first_args, store=store)
    key = (first.state_dir / "cluster.key").read_text().strip()
    peers = [first]
    for name, args in specs[1:]:
        peers.append(launcher.up(name, "--no-mdns", "--key", key, "--bootstrap", first.join, *args, store=store))
    if len(peers) > 1:
        wait_for(lambda: views_complete(peers), 30, "every peer sees every other one")
    return peers


def join_more(launcher: Launcher, first: Daemon, specs: list[tuple[str, list[str]]]) -> list[Daemon]:
    key = (first.state_dir / "cluster.key").read_text().strip()
    more = [launcher.up(name, "--no-mdns", "--key", key, "--bootstrap", first.join, *args) for name, args in specs]
    wait_for(lambda: views_complete([first, *more]), 30, "every peer sees every other one")
    return more


def run_driver(daemon: Daemon, body: str, timeout: float = 120) -> dict:  # type: ignore[type-arg]
    """Runs ``body`` in a driver attached to ``daemon``; it prints one JSON line last."""
    # One namespace for every driver of a test: named actors are scoped to it, as in Ray.
    script = "import json, time\nimport peer as ray\nray.init(namespace=\"peer-tests\")\n" + textwrap.dedent(body)
    script += "\nray.shutdown()\n"
    r = subprocess.run(
        [sys.executable, "-c", script], env=daemon.driver_env(), capture_output=True, text=True, timeout=timeout
    )
    assert r.returncode == 0, f"driver failed:\n{r.stdout}\n{r.stderr}\nlog of {daemon.name}:\n{daemon.log_text()}"
    out: dict = json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[type-arg]
    return out


# What `read_line` read of a line that had not ended when it gave up.
_partial_lines: weakref.WeakKeyDictionary[subprocess.Popen[str], bytearray] = weakref.WeakKeyDictionary()


def read_line(proc: subprocess.Popen[str], timeout: float) -> str | None:
    """The driver's next line of output (``""`` at its end); ``None`` when none came within
    ``timeout`` seconds.

    Reads the pipe's file descriptor a byte at a time, never through ``proc.stdout``'s buffer:
    ``readline`` on the buffered file may take in two lines at once, and a ``select`` on the
    descriptor would then wait for a second line that is already here. Nothing is read past
    the line's end, so ``communicate`` afterwards gets the rest."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    line = _partial_lines.pop(proc, bytearray())
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0.0))
        if not ready:
            _partial_lines[proc] = line
            return None
        byte = os.read(fd, 1)
        line += byte
        if not byte or byte == b"\n":
            return line.decode(errors="replace")


def start_driver(daemon: Daemon, body: str) -> subprocess.Popen[str]:
    # One namespace for every driver of a test: named actors are scoped to it, as in Ray.
    script = "import json, time\nimport peer as ray\nray.init(namespace=\"peer-tests\")\n" + textwrap.dedent(body)
    return subprocess.Popen(
        [sys.executable, "-c", script],
        env=daemon.driver_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def _link_up(ns: str, link: str) -> bool:
    out = subprocess.run(["ip", "-n", ns, "-o", "link", "show", link], capture_output=True, text=True, timeout=10)
    return "LOWER_UP" in out.stdout and "NO-CARRIER" not in out.stdout


@contextlib.contextmanager
def network_namespaces(tag: str, count: int, subnet: str) -> Iterator[list[str]]:
    """``count`` network namespaces on one bridge (in a namespace of its own), with addresses
    ``{subnet}.1`` ... ``{subnet}.count`` (/24); deleted after. Skips the test where namespaces
    cannot be made. Traffic stays inside them: they have no route anywhere else."""
    bridge = f"{tag}br"
    names = [f"{tag}n{i}" for i in range(1, count + 1)]
    made: list[str] = []
    try:
        probe = subprocess.run(["ip", "netns", "add", bridge], capture_output=True, text=True, timeout=10)
        if probe.returncode != 0:
            pytest.skip(f"cannot create network namespaces here (`ip netns add` failed: {probe.stderr.strip()})")
        made.append(bridge)
        _ip("-n", bridge, "link", "add", "br0", "type", "bridge")
        _ip("-n", bridge, "link", "set", "br0", "up")
        for i, ns in enumerate(names, start=1):
            _ip("netns", "add", ns)
            made.append(ns)
            # Both ends are created inside namespaces: nothing appears on the host, even briefly.
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"v{i}", "netns", bridge)
            _ip("-n", bridge, "link", "set", f"v{i}", "master", "br0")
            _ip("-n", bridge, "link", "set", f"v{i}", "up")
            _ip("-n", ns, "addr", "add", f"{subnet}.{i}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", "eth0", "up")
        # Peers start only once every link carries traffic: an mDNS query sent earlier is lost
        # and the next retry comes seconds later.
        links = [(bridge, "br0")] + [(ns, "eth0") for ns in names] + [(bridge, f"v{i}") for i in range(1, count + 1)]
        for ns, link in links:
            wait_for(lambda: _link_up(ns, link), 10, f"link {link} in {ns} is up")
        yield names
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
