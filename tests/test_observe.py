"""Seeing the cluster: the dashboard any peer serves (loaded in headless Chromium), its token off
loopback, ``peer.timeline()`` across three peers, ``peer list`` gathered from every peer, the
progress bar of ``get``, and plain logs when stderr is not a terminal."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections import Counter as Multiset
from pathlib import Path
from typing import Any, Callable

import pytest

import peer
from browser import Browser, find_chromium
from conftest import peer_cli
from peers import Daemon, Launcher, cluster, read_line, run_driver, start_driver, wait_for

pytestmark = pytest.mark.timeout(180)

ARTIFACTS = Path(__file__).parent / "artifacts"


def dashboard_url(d: Daemon) -> str:
    """The URL `peer up --dashboard` printed."""
    found: list[str] = []

    def printed() -> bool:
        found[:] = re.findall(r"dashboard: (http://\S+)", d.log_text())
        return bool(found)

    wait_for(printed, 10, f"{d.name} prints its dashboard URL")
    return found[0]


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


HOLDING_DRIVER = """
import os
STOP = {stop!r}

def _hold():
    import time
    t = time.monotonic()
    while not os.path.exists(STOP) and time.monotonic() - t < 60:
        time.sleep(0.02)

@ray.remote
def hold(i):
    _hold()
    return i

@ray.remote
def fresh_marker_task():
    _hold()
    return 1

@ray.remote
def quick(i):
    return i

@ray.remote
class Counter:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n

c = Counter.remote()
assert ray.get(c.incr.remote()) == 1
assert ray.get([quick.remote(i) for i in range(40)]) == list(range(40))
held = [hold.remote(i) for i in range(4)]
print("ready", flush=True)
assert input() == "fresh"
fresh = fresh_marker_task.remote()
print("submitted", flush=True)
assert ray.get(held + [fresh], timeout=90) == [0, 1, 2, 3, 1]
print("done", flush=True)
"""


def test_dashboard_page_shows_the_cluster_and_updates_live(launcher: Launcher, tmp_path: Path) -> None:
    exe = find_chromium()
    if exe is None:
        why = "headless Chromium is not installed (Debian: apt-get install chromium; scripts/test does)"
        if os.environ.get("CI"):
            pytest.fail(why + ": in CI scripts/test installs it, so the dashboard is always checked")
        pytest.skip(why)
    peers = cluster(
        launcher,
        [("p0", ["--num-cpus", "3", "--dashboard", "127.0.0.1:0"]), ("p1", ["--num-cpus", "2"]), ("p2", ["--num-cpus", "2"])],
    )
    url = dashboard_url(peers[0])
    assert "token=" not in url, "a loopback dashboard needs no token"
    stop = tmp_path / "stop"
    driver = start_driver(peers[0], HOLDING_DRIVER.format(stop=str(stop)))
    browser = Browser(exe)
    try:
        assert read_line(driver, 60) == "ready\n", driver.stderr.read() if driver.stderr else ""
        browser.open(url)
        ids = [d.peer_id for d in peers]
        browser.wait_for(
            f"(() => {{ const n = [...document.querySelectorAll('#peers tbody tr[data-node]')]"
            f".map(tr => tr.dataset.node); return {json.dumps(ids)}.every(id => n.includes(id)); }})()",
            15,
        )
        browser.wait_for("document.querySelectorAll('#tasks tbody tr[data-state=\"RUNNING\"]').length >= 1", 15)
        browser.wait_for("document.querySelectorAll('#actors tbody tr[data-state=\"ALIVE\"]').length >= 1", 15)
        assert browser.eval("document.getElementById('n-peers').textContent") == "3"

        # A new task starts: the page shows it running within 2 s, with no reload.
        seq_before = int(browser.eval("document.getElementById('updated').dataset.seq"))
        assert driver.stdin is not None
        driver.stdin.write("fresh\n")
        driver.stdin.flush()
        assert read_line(driver, 30) == "submitted\n"
        submitted = time.monotonic()
        browser.wait_for(
            "[...document.querySelectorAll('#tasks tbody tr')].some(tr => "
            "tr.textContent.includes('fresh_marker_task') && tr.dataset.state === 'RUNNING')",
            10,
        )
        shown_after = time.monotonic() - submitted
        assert int(browser.eval("document.getElementById('updated').dataset.seq")) > seq_before
        assert shown_after < 2.0, f"the new task showed up after {shown_after:.2f} s"
        print(f"new running task shown {shown_after:.2f} s after it was submitted")

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        browser.wait_for("document.querySelectorAll('#stream rect').length >= 1", 10)
        browser.screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        browser.close()
        stop.touch()
        try:
            assert read_line(driver, 60) == "done\n", driver.stderr.read() if driver.stderr else ""
        finally:
            driver.kill()
            driver.communicate(timeout=10)  # waits, and closes its pipes


JOB = """
import os
import numpy as np

@ray.remote
def work(i):
    time.sleep(0.15)
    return ray.get_runtime_context().get_node_id(), os.getpid()

@ray.remote
class Tally:
    def where(self):
        return ray.get_runtime_context().get_node_id(), os.getpid()

@ray.remote(resources={"special": 1})
def boom():
    raise ValueError("boom-marker from the special peer")

big = ray.put(np.ones(2_000_000))
ran = ray.get([work.remote(i) for i in range(12)])
t = Tally.remote()
calls = ray.get([t.where.remote() for _ in range(3)])
try:
    ray.get(boom.remote())
    raise AssertionError("boom did not raise")
except ValueError:
    pass
events = ray.timeline()
print(json.dumps({"ran": ran, "calls": calls, "events": events}))
"""


def test_timeline_and_lists_gather_every_peer(launcher: Launcher, tmp_path: Path) -> None:
    peers = cluster(
        launcher,
        [("p0", ["--num-cpus", "1"]), ("p1", ["--num-cpus", "1", "--resource", "special=1"]), ("p2", ["--num-cpus", "1"])],
    )
    out = run_driver(peers[0], JOB)
    events: list[dict[str, Any]] = out["events"]

    # Perfetto's JSON trace format: complete (X) and metadata (M) events with integer ids.
    for e in events:
        assert e["ph"] in ("X", "M"), e
        assert isinstance(e["pid"], int)
        if e["ph"] == "X":
            assert isinstance(e["ts"], int) and isinstance(e["dur"], int) and e["dur"] >= 0, e
            assert isinstance(e["tid"], int), e
    json.loads(json.dumps(events))
    peer_of = {e["pid"]: e["args"]["name"].removeprefix("peer ") for e in events if e["name"] == "process_name"}
    assert sorted(peer_of.values()) == sorted(d.peer_id for d in peers), "one process row per peer"

    def ran_where(name: str) -> Multiset[tuple[str, int]]:
        return Multiset((peer_of[e["pid"]], e["tid"]) for e in events if e["ph"] == "X" and e["name"] == name)

    # Every task: one event, on the peer and worker that ran it.
    tasks = Multiset((node, pid) for node, pid in out["ran"])
    assert ran_where("work") == tasks
    assert len({node for node, _ in out["ran"]}) >= 2, f"the job spread over peers: {out['ran']}"
    calls = Multiset((node, pid) for node, pid in out["calls"])
    method_events = [n for n in {e["name"] for e in events} if str(n).endswith("where")]
    assert len(method_events) == 1, method_events
    assert ran_where(method_events[0]) == calls
    kinds = {e["name"] for e in events if e["ph"] == "X"}
    assert {"get", "put"} <= kinds, kinds
    rows = {(e["pid"], e["tid"]) for e in events if e["name"] == "thread_name"}
    assert {(e["pid"], e["tid"]) for e in events if e["ph"] == "X"} <= rows, "every event has a named row"

    # `peer list tasks --filter state=FAILED` on p0 shows the task that failed on p1, with its error.
    r = peer_cli(peers[0].state_dir, "list", "tasks", "--filter", "state=FAILED", timeout=20)
    assert r.returncode == 0, r.stderr
    assert "boom" in r.stdout and "ValueError: boom-marker from the special peer" in r.stdout, r.stdout
    assert peers[1].peer_id in r.stdout, r.stdout
    r = peer_cli(peers[0].state_dir, "list", "tasks", "--filter", "state=FAILED", "--json", timeout=20)
    failed = json.loads(r.stdout)
    assert [(f["name"], f["node_id"]) for f in failed] == [("boom", peers[1].peer_id)], failed
    assert "Traceback" in failed[0]["error_message"] and "boom-marker" in failed[0]["error_message"]

    listed = json.loads(peer_cli(peers[0].state_dir, "list", "peers", "--json", timeout=20).stdout)
    assert sorted(p["node_id"] for p in listed) == sorted(d.peer_id for d in peers)
    assert sum(p["tasks_finished"] for p in listed) >= 12
    actors = json.loads(peer_cli(peers[2].state_dir, "list", "actors", "--json", timeout=20).stdout)
    assert [a["class_name"] for a in actors] == ["Tally"], actors
    objects = json.loads(peer_cli(peers[1].state_dir, "list", "objects", "--json", timeout=20).stdout)
    assert isinstance(objects, list)

    # The CLI writes the same trace.
    trace = tmp_path / "trace.json"
    r = peer_cli(peers[2].state_dir, "timeline", "--output", str(trace), timeout=20)
    assert r.returncode == 0, r.stderr
    written = json.loads(trace.read_text())
    assert sum(1 for e in written if e.get("name") == "work") == 12


def test_dashboard_off_loopback_needs_the_token_from_the_cluster_key(launcher: Launcher) -> None:
    d = launcher.up("p0", "--no-mdns", "--num-cpus", "1", "--dashboard", "0.0.0.0:0")
    url = dashboard_url(d)
    port = int(re.search(r":(\d+)/", url).group(1))  # type: ignore[union-attr]
    token = url.split("token=", 1)[1]
    key = (d.state_dir / "cluster.key").read_text().strip()
    want = hashlib.sha256(b"peer dashboard token v1\0" + key.lower().encode()).hexdigest()[:32]
    assert token == want, "the token derives from the cluster key"
    base = f"http://127.0.0.1:{port}"
    for path in ("/", "/api/overview", "/api/list/tasks", "/api/events", "/api/timeline"):
        assert fetch(base + path)[0] == 401, path
        assert fetch(base + path + "?token=" + "0" * 32)[0] == 401, path
    status, page = fetch(f"{base}/?token={token}")
    assert status == 200 and "<title>peer dashboard</title>" in page
    status, body = fetch(f"{base}/api/list/peers", headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and json.loads(body)["nodes"][0]["node"] == d.peer_id
    assert fetch(f"{base}/api/list/peers?token={token}", method="POST")[0] == 405, "read-only"
    assert fetch(f"{base}/api/run?token={token}")[0] == 404
    # The daemon's stderr is a file here: its log has no colour codes.
    raw = d.log_path.read_bytes()
    assert b"INFO" in raw and b"\x1b[" not in raw


def test_laptop_dashboard_timeline_and_progress(
    make_cluster: Callable[..., dict[str, Any]], capfd: pytest.CaptureFixture[str]
) -> None:
    info = make_cluster(num_cpus=2, dashboard="127.0.0.1:0")
    url = info["dashboard_url"]
    assert f"peer dashboard: {url}" in capfd.readouterr().err

    @peer.remote
    def square(x: int) -> int:
        print(f"squaring {x}")
        time.sleep(0.02)
        return x * x

    refs = [square.remote(i) for i in range(20)]
    assert peer.get(refs, progress=True) == [i * i for i in range(20)]
    err = capfd.readouterr().err
    assert "peer.get [" in err and "20/20 ready" in err, err

    status, body = fetch(url + "api/list/tasks")
    assert status == 200
    rows = [r for n in json.loads(body)["nodes"] for r in n["rows"]]
    assert sum(1 for r in rows if r["name"].endswith("square") and r["state"] == "FINISHED") == 20
    status, body = fetch(url + "api/overview")
    output = [line for n in json.loads(body)["nodes"] for lines in n["rows"]["output"].values() for line in lines]
    assert any("squaring" in line for line in output), "the dashboard keeps worker output"

    trace = peer.timeline()
    assert trace is not None
    assert sum(1 for e in trace if e["ph"] == "X" and str(e["name"]).endswith("square")) == 20
    path = Path(info["socket"]).parent / "t.json"
    assert peer.timeline(str(path)) is None
    written = json.loads(path.read_text())
    assert sum(1 for e in written if e["ph"] == "X" and str(e["name"]).endswith("square")) == 20
