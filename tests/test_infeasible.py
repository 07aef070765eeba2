"""A task or actor that no node could ever run (a resource no node has, ``num_gpus`` on a machine
without GPUs) stays pending, as in Ray, and the driver reads Ray's words for it on its stdout
(Ray 2.60's autoscaler line, as its driver prints it):

    (autoscaler +0s) Error: No available node types can fulfill resource request
    {'CPU': 1.0, 'nope': 1.0}. Add suitable node types to this cluster to resolve this issue.

once per resource shape, within seconds; it runs once a peer that has the resource joins."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from peers import Launcher, cluster, join_more, start_driver

RAY_WORDS = "Error: No available node types can fulfill resource request"


class Lines:
    """The lines a process writes on stdout, read by a thread, each with when it came."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.seen: list[tuple[float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.rstrip("\n")))

    def expect(self, what: str, timeout: float) -> tuple[float, str]:
        """The first line (from now on) that contains ``what``; fails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                at, line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                _, err = self.proc.communicate(timeout=10) if self.proc.poll() is not None else ("", "")
                pytest.fail(f"no line with {what!r} within {timeout} s; saw {self.seen}\n{err}")
            self.seen.append((at, line))
            if what in line:
                return at, line


EMBEDDED = """
import json, time
import peer as ray
from peer.exceptions import GetTimeoutError

ray.init(num_cpus=1)

@ray.remote(resources={"nope": 1})
def needs_nope():
    return 1

@ray.remote(num_gpus=8)
def needs_gpus():
    return 2

@ray.remote(resources={"nope": 2})
class NeedsNope:
    pass

@ray.remote
def fits():
    return 3

print("submitting", flush=True)
refs = [needs_nope.remote(), needs_nope.remote(), needs_gpus.remote()]
actor = NeedsNope.remote()
assert ray.get(fits.remote(), timeout=30) == 3
start = time.monotonic()
try:
    ray.get(refs, timeout=3)
    timed_out = False
except GetTimeoutError:
    timed_out = True
print(json.dumps({"timed_out": timed_out, "waited": time.monotonic() - start}), flush=True)
ray.shutdown()
"""


def test_the_embedded_driver_is_told_once_per_shape_and_the_tasks_stay_pending(tmp_path: Path) -> None:
    env = dict(os.environ, PEER_STATE_DIR=str(tmp_path / "st"))
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(EMBEDDED)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out = Lines(proc)
        started, _ = out.expect("submitting", 60)
        shapes = ["{'CPU': 1.0, 'nope': 1.0}", "{'CPU': 1.0, 'GPU': 8.0}", "{'nope': 2.0}"]
        warned = {}
        while len(warned) < len(shapes):
            at, line = out.expect(RAY_WORDS, 5)
            assert at - started < 5, f"told after {at - started:.1f} s"
            assert line.startswith("(autoscaler +") and line.endswith(
                "Add suitable node types to this cluster to resolve this issue."
            ), line
            shape = next((s for s in shapes if f"request {s}." in line), None)
            assert shape is not None and shape not in warned, f"unexpected or repeated: {line}"
            warned[shape] = at - started
        _, last = out.expect('"timed_out"', 30)
        result = json.loads(last)
        assert result["timed_out"] and result["waited"] >= 2.9, result
        assert proc.wait(timeout=30) == 0, proc.communicate()[1]
        told = [line for _, line in out.seen if RAY_WORDS in line]
        assert len(told) == 3, f"once per shape: {told}"
        print(f"told within {max(warned.values()):.2f} s: {sorted(warned.items())}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


WAITS_FOR_A_PEER = """
@ray.remote(resources={"nope": 1})
def needs_nope():
    return "ran"

ref = needs_nope.remote()
print("submitted", flush=True)
print(json.dumps({"got": ray.get(ref, timeout=90)}), flush=True)
ray.shutdown()
"""


def test_an_attached_driver_is_told_and_the_task_runs_once_a_peer_with_the_resource_joins(
    launcher: Launcher,
) -> None:
    (a,) = cluster(launcher, [("a", ["--num-cpus", "1"])])
    driver = start_driver(a, WAITS_FOR_A_PEER)
    try:
        out = Lines(driver)
        started, _ = out.expect("submitted", 60)
        at, line = out.expect(RAY_WORDS, 8)
        assert "{'CPU': 1.0, 'nope': 1.0}" in line, line
        # In a cluster the word waits out a grace of 2 s (the view may lack peers).
        assert at - started < 5, f"told after {at - started:.1f} s"
        join_more(launcher, a, [("b", ["--num-cpus", "1", "--resource", "nope=1"])])
        _, last = out.expect('"got"', 60)
        assert json.loads(last) == {"got": "ran"}
        assert driver.wait(timeout=30) == 0
        print(f"told after {at - started:.2f} s")
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.communicate()
