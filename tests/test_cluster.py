"""Several ``peer up`` daemons forming one cluster: discovery, the cluster key, load gossip, failures.

Each daemon is a real process with its own state directory and log file under ``tmp_path``.
Peers on the host listen on 127.0.0.1 only and never use mDNS (it must not send on the host's
real interfaces); the mDNS test runs its peers inside network namespaces it creates and deletes.
``peer status --json`` (a Unix socket, which works across network namespaces) shows each peer's
view. After every test no daemon, fork server or worker of these daemons and no /dev/shm arena
file of theirs is left: a daemon killed with SIGKILL cannot remove its arena, so the test does.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from peers import (
    LAN_LISTEN,
    STORE_BYTES,
    Launcher,
    chain,
    describe,
    network_namespaces,
    orphans,
    views_complete,
    wait_for,
)

SLEEPER = textwrap.dedent(
    """
    import time
    import peer as ray

    ray.init()

    @ray.remote(num_cpus=1)
    def nap(seconds):
        time.sleep(seconds)
        return "rested"

    ref = nap.remote(3.0)
    print("submitted", flush=True)
    print(ray.get(ref), flush=True)
    ray.shutdown()
    """
)


def test_five_chained_peers_see_each_other_and_load_changes(launcher: Launcher, tmp_path: Path) -> None:
    peers = chain(launcher, 5, cpus=lambda i: 2 if i == 3 else 1)
    took = wait_for(lambda: views_complete(peers), 5, "five chained peers know each other")
    print(f"\n5 chained peers: every view complete {took:.2f} s after the last one started")

    busy = peers[3]
    others = [d for d in peers if d is not busy]
    for d in others:
        seen = d.view()[busy.peer_id]
        assert (seen["cpus_total"], seen["cpus_free"]) == (2.0, 2.0), seen
        assert seen["store_total"] == STORE_BYTES, seen

    out_path = tmp_path / "driver.out"
    with open(out_path, "wb") as out:
        driver = subprocess.Popen(
            [sys.executable, "-c", SLEEPER],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PEER_STATE_DIR=str(busy.state_dir)),
        )
        try:
            started = time.monotonic()
            took = wait_for(
                lambda: all(d.view()[busy.peer_id]["cpus_free"] == 1.0 for d in others),
                3,
                "the other peers see peer 3's free CPUs drop",
            )
            print(f"others saw p3's cpus_free drop {took:.2f} s after the driver started")
            assert driver.wait(timeout=20) == 0, out_path.read_text()
            assert out_path.read_text().split()[-1] == "rested"
            assert time.monotonic() - started >= 3.0
            took = wait_for(
                lambda: all(d.view()[busy.peer_id]["cpus_free"] == 2.0 for d in others),
                3,
                "the other peers see peer 3's free CPUs recover",
            )
            print(f"others saw p3's cpus_free recover {took:.2f} s after the task ended")
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    assert views_complete(peers), describe(peers)


def test_peers_without_the_cluster_key_stay_out(launcher: Launcher) -> None:
    cluster = chain(launcher, 3)
    wait_for(lambda: views_complete(cluster), 5, "the cluster forms")
    wrong = launcher.up(
        "wrongkey", "--no-mdns", "--num-cpus", "1", "--key", secrets.token_hex(32),
        "--bootstrap", cluster[0].join,
    )  # fmt: skip
    keyless = launcher.up("nokey", "--no-mdns", "--num-cpus", "1", "--bootstrap", cluster[1].join)
    assert (keyless.state_dir / "cluster.key").exists(), "a fresh state dir without --key creates its own key"
    outsiders = [wrong, keyless]
    for o in outsiders:
        wait_for(partial(o.logged, "uses a different cluster key"), 5, f"{o.name} logs the key mismatch")

    start = time.monotonic()
    while time.monotonic() - start < 3:
        for d in cluster:
            view = d.view()
            for o in outsiders:
                assert o.peer_id not in view, f"{o.name} got into {d.name}'s view"
            assert len(view) == len(cluster) - 1, describe(cluster)
        for o in outsiders:
            assert o.view() == {}, f"{o.name} sees peers: {sorted(o.view())}"
        time.sleep(0.1)
    assert views_complete(cluster), describe(cluster)
    assert cluster[0].logged("refused a peer with another cluster key")
    assert cluster[1].logged("refused a peer with another cluster key")


def test_killed_peer_leaves_every_view(launcher: Launcher) -> None:
    peers = chain(launcher, 3)
    wait_for(lambda: views_complete(peers), 5, "three peers know each other")
    victim = peers[1]
    survivors = [peers[0], peers[2]]
    assert os.path.exists(victim.arena)
    assert orphans(victim.socket), "the daemon has a fork server and workers before the kill"

    victim.kill9()
    took = wait_for(
        lambda: all(victim.peer_id not in d.view() for d in survivors),
        10,
        "the killed peer leaves every view",
    )
    print(f"\nkill -9: gone from both other views after {took:.2f} s")
    assert views_complete(survivors), describe(survivors)

    # Its fork server and workers notice the closed socket and exit; its arena is ours to remove.
    waited = wait_for(lambda: not orphans(victim.socket), 10, "orphans exit")
    print(f"the killed daemon's fork server and workers exited {waited:.2f} s later")
    assert os.path.exists(victim.arena), "a SIGKILLed daemon cannot have removed its arena"
    os.unlink(victim.arena)


@pytest.fixture
def lan() -> Iterator[list[str]]:
    """Three network namespaces on one bridge (in a fourth namespace), 10.79.0.1-3/24; deleted after."""
    with network_namespaces(f"pc{os.getpid()}", 3, "10.79.0") as names:
        yield names


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's `ip` for network namespaces")
def test_mdns_finds_peers_across_namespaces(lan: list[str], tmp_path: Path) -> None:
    key = secrets.token_hex(32)
    launch = Launcher(tmp_path)
    try:
        peers = [
            launch.up(f"m{i}", "--num-cpus", "1", "--key", key, netns=ns, listen=LAN_LISTEN)
            for i, ns in enumerate(lan)
        ]
        took = wait_for(lambda: views_complete(peers), 30, "mDNS: three peers find each other")
        print(f"\nmDNS in namespaces: every view complete after {took:.2f} s")
        for d in peers:  # no --bootstrap anywhere: mDNS introduced them, over the bridge
            assert d.logged("discovered peer on address"), d.log_text()
        # Addresses others can use: the LAN ones, never another machine's loopback. (A peer's
        # addresses come with identify, which may trail its first gossiped load: poll.)
        lan_prefix = "/ip4/10.79.0."

        def lan_addresses_only() -> bool:
            for d in peers:
                st = d.status()
                if not (st["cluster"]["join"] or "").startswith(lan_prefix):
                    return False
                if not all((p["address"] or "").startswith(lan_prefix) for p in st["peers"]):
                    return False
            return True

        wait_for(lan_addresses_only, 10, "join lines and peer addresses are the LAN ones")
        assert any(lan_prefix in line for line in peers[0].log_text().splitlines() if "--bootstrap" in line)
    finally:
        launch.close()  # the daemons go before the namespaces they run in
