"""Peers behind NATs join one cluster: a small internet in network namespaces.

One "public" segment (a bridge in R's namespace) holds member R; two home routers, each a
namespace that masquerades with nftables and drops unsolicited inbound connections like a home
router does, have one private peer behind each (H1, H2). H1 and H2 bootstrap only to R. With
port-preserving NATs the peers meet through R's relay and punch a direct TCP connection (DCUtR),
so a 100 MB pull from H2 to H1 leaves R's own byte counters nearly untouched. With symmetric NATs
(nftables `masquerade fully-random`, iptables' `--random-fully`) the punch fails and the cluster
keeps working over R, with pulls under the relay cap. The timings (view complete, direct
connection) are printed (`pytest -s`) for the record.

Namespaces and interfaces get names unique to this test process and are removed in teardown,
also on failure. Nothing is routed outside them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import peer_cli
from peers import LAN_LISTEN, Daemon, Launcher, run_driver, wait_for

STORE = 320_000_000
BIG = 100_000_000


def _run(*args: str, stdin: str | None = None) -> None:
    r = subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")


def _router_rules(symmetric: bool) -> str:
    """A home router: masquerade out of `wan`, and let in only what answers a connection from
    `lan` (unsolicited packets are dropped, not refused, as consumer routers do)."""
    masquerade = "masquerade fully-random" if symmetric else "masquerade"
    return f"""
table ip nat {{
  chain post {{ type nat hook postrouting priority 100; oifname "wan" {masquerade}; }}
}}
table inet filter {{
  chain forward {{ type filter hook forward priority 0; policy drop;
    ct state established,related accept; iifname "lan" accept; }}
  chain input {{ type filter hook input priority 0; policy drop;
    ct state established,related accept; iifname "lan" accept; iifname "lo" accept; }}
}}
"""


@dataclass
class Internet:
    r: str
    homes: list[str]  # the private peers' namespaces, H1 then H2
    routers: list[str]

    def r_bytes(self) -> int:
        """Bytes R's own interface on the public segment sent and received so far."""
        stats = Path("/sys/class/net/br0/statistics")
        out = subprocess.run(
            ["ip", "netns", "exec", self.r, "cat", str(stats / "rx_bytes"), str(stats / "tx_bytes")],
            capture_output=True,
            text=True,
            timeout=10,
        )
        rx, tx = out.stdout.split()
        return int(rx) + int(tx)


@pytest.fixture
def internet(request: pytest.FixtureRequest) -> Iterator[Internet]:
    """Builds the namespaces; `request.param` says whether the routers are symmetric NATs."""
    if shutil.which("nft") is None:
        pytest.skip("nftables (nft) is not installed; scripts/test installs it")
    symmetric: bool = request.param
    tag = f"nat{os.getpid() % 100000}{'s' if symmetric else 'c'}"
    r, routers, homes = f"{tag}r", [f"{tag}rt1", f"{tag}rt2"], [f"{tag}h1", f"{tag}h2"]
    made: list[str] = []
    try:
        for ns in [r, *routers, *homes]:
            probe = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True, timeout=10)
            if probe.returncode != 0:
                pytest.skip(f"cannot create network namespaces here: {probe.stderr.strip()}")
            made.append(ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", r, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", r, "addr", "add", "10.20.0.1/24", "dev", "br0")
        _run("ip", "-n", r, "link", "set", "br0", "up")
        for i, (rt, home) in enumerate(zip(routers, homes), start=1):
            _run("ip", "-n", rt, "link", "add", "wan", "type", "veth", "peer", "name", f"port{i}", "netns", r)
            _run("ip", "-n", r, "link", "set", f"port{i}", "master", "br0")
            _run("ip", "-n", r, "link", "set", f"port{i}", "up")
            _run("ip", "-n", rt, "addr", "add", f"10.20.0.1{i}/24", "dev", "wan")
            _run("ip", "-n", rt, "link", "set", "wan", "up")
            _run("ip", "-n", rt, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", home)
            _run("ip", "-n", rt, "addr", "add", f"192.168.{i}.1/24", "dev", "lan")
            _run("ip", "-n", rt, "link", "set", "lan", "up")
            _run("ip", "-n", home, "addr", "add", f"192.168.{i}.2/24", "dev", "eth0")
            _run("ip", "-n", home, "link", "set", "eth0", "up")
            _run("ip", "-n", home, "route", "add", "default", "via", f"192.168.{i}.1")
            _run("ip", "netns", "exec", rt, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            _run("ip", "netns", "exec", rt, "nft", "-f", "-", stdin=_router_rules(symmetric))
        yield Internet(r, homes, routers)
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _up(launcher: Launcher, name: str, ns: str, *args: str) -> Daemon:
    return launcher.up(name, "--no-mdns", "--num-cpus", "1", *args, netns=ns, listen=LAN_LISTEN, store=STORE)


def _link(d: Daemon, other: Daemon) -> str | None:
    peer = d.view().get(other.peer_id)
    return None if peer is None else peer.get("link")


def _join(internet: Internet, tmp_path: Path) -> tuple[Launcher, Daemon, Daemon, Daemon, float]:
    """R, then H1 and H2 behind their routers; returns them and H1's `peer up` start time."""
    launch = Launcher(tmp_path)
    r = _up(launch, "r", internet.r)
    key = (r.state_dir / "cluster.key").read_text().strip()
    join = ["--key", key, "--bootstrap", r.join]
    assert "/ip4/10.20.0.1/" in r.join, r.join
    h2 = _up(launch, "h2", internet.homes[1], *join, "--resource", "h2=1")
    start = time.monotonic()
    h1 = _up(launch, "h1", internet.homes[0], *join)
    return launch, r, h1, h2, start


def _views_complete(r: Daemon, h1: Daemon, h2: Daemon) -> bool:
    v1, v2 = h1.view(), h2.view()
    return all(p in v1 and v1[p]["has_load"] for p in (r.peer_id, h2.peer_id)) and h1.peer_id in v2


PINNED = """
@ray.remote(resources={"h2": 1})
def where():
    return "ran on h2"
print(json.dumps({"where": ray.get(where.remote(), timeout=60)}))
"""


@pytest.mark.parametrize("internet", [False], indirect=True, ids=["cone-nat"])
def test_private_peers_punch_through_and_pull_directly(internet: Internet, tmp_path: Path) -> None:
    launch, r, h1, h2, start = _join(internet, tmp_path)
    try:
        wait_for(lambda: _views_complete(r, h1, h2), 30, "H1 and H2 see each other through R")
        view_s = time.monotonic() - start
        # The first task pinned to H2 makes H1 connect to it: through R, then punched direct.
        assert run_driver(h1, PINNED)["where"] == "ran on h2"
        wait_for(lambda: _link(h1, h2) == "hole-punched", 30, "H1 reaches H2 on a hole-punched connection")
        direct_s = time.monotonic() - start
        assert h1.status()["network"]["reachability"] == "private"
        assert r.status()["network"]["relaying"] is True

        before = internet.r_bytes()
        relayed_before = h1.status()["network"]["relayed_bytes"]
        got = run_driver(
            h1,
            f"""
import numpy as np
@ray.remote(resources={{"h2": 1}})
def make():
    return np.ones({BIG}, dtype=np.uint8)
t = time.monotonic()
value = ray.get(make.remote(), timeout=120)
print(json.dumps({{"sum": int(value.sum()), "pull_s": time.monotonic() - t}}))
""",
        )
        assert got["sum"] == BIG
        through_r = internet.r_bytes() - before
        relayed = h1.status()["network"]["relayed_bytes"] - relayed_before
        print(
            f"\ncone NAT: view complete {view_s:.2f} s and direct (hole-punched) connection {direct_s:.2f} s "
            f"after H1's `peer up`; 100 MB pulled in {got['pull_s']:.2f} s; R's interface moved "
            f"{through_r / 1e6:.2f} MB, H1's relayed connections {relayed / 1e6:.2f} MB meanwhile"
        )
        assert through_r < 5_000_000, f"{through_r} bytes went through R"
        assert relayed < 5_000_000
        assert _link(h1, h2) == "hole-punched"
    finally:
        launch.close()


@pytest.mark.parametrize("internet", [True], indirect=True, ids=["symmetric-nat"])
def test_symmetric_nats_keep_the_cluster_working_over_the_relay(internet: Internet, tmp_path: Path) -> None:
    launch, r, h1, h2, start = _join(internet, tmp_path)
    try:
        wait_for(lambda: _views_complete(r, h1, h2), 30, "H1 and H2 see each other through R")
        view_s = time.monotonic() - start
        assert run_driver(h1, PINNED)["where"] == "ran on h2"
        wait_for(lambda: _link(h1, h2) == "relayed", 30, "H1 reaches H2 through R")
        cap_before = h1.status()["network"]["relayed_pull_bytes"]
        got = run_driver(
            h1,
            """
import numpy as np
@ray.remote(resources={"h2": 1})
def make():
    return np.ones(6_000_000, dtype=np.uint8)
t = time.monotonic()
value = ray.get(make.remote(), timeout=60)
print(json.dumps({"sum": int(value.sum()), "s": time.monotonic() - t}))
""",
        )
        assert got["sum"] == 6_000_000
        st = h1.status()
        assert st["network"]["relayed_pull_bytes"] - cap_before >= 6_000_000
        assert st["network"]["reachability"] == "private"
        # DCUtR tries three times, each attempt ending in a dial timeout; the relayed connection
        # stays throughout.
        wait_for(
            lambda: h1.logged("hole punch failed") or h2.logged("hole punch failed"),
            45,
            "the hole punch gives up",
            step=0.2,
        )
        punch_s = time.monotonic() - start
        assert _link(h1, h2) == "relayed"
        out = peer_cli(h1.state_dir, "status", timeout=10)
        line = next(li for li in out.stdout.splitlines() if h2.peer_id in li)
        assert " relayed " in line, line
        print(
            f"\nsymmetric NAT: view complete {view_s:.2f} s after H1's `peer up`; 6 MB over the relay "
            f"in {got['s']:.2f} s; hole punch given up {punch_s:.1f} s after `peer up`; "
            f"`peer status` on H1: {line.strip()}"
        )
    finally:
        launch.close()
