"""``runtime_env``: the driver's code, packages and variables follow its tasks to every peer.

The cluster tests run two ``peer up`` peers, each in a network namespace of its own (so the other
peer is reached only over the network, and pip there has no index to reach), with its own state
directory and working directory. Drivers attach to the first peer; tasks pinned to the second one
(by a resource only it has) import code that only the driver's project directory holds.

The one-peer tests check the rest on a laptop cluster: env_vars and py_modules, a task's
environment next to the job's on one peer, the merge of the two, and the errors.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import peer
from peer import _runtime_env
from peers import LAN_LISTEN, Daemon, Launcher, network_namespaces, views_complete, wait_for

needs_ip = pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's `ip` for network namespaces")


def make_project(root: Path, module: str = "mylib", greeting: str = "hello from mylib") -> Path:
    """A project directory with package ``module`` and a data file."""
    pkg = root / module
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"def hello():\n    return {greeting!r}\n")
    (root / "data.txt").write_text("project data\n")
    return root


def make_wheel(where: Path, name: str = "peertiny", version: str = "0.1", value: str = "tiny") -> Path:
    """A pure-Python wheel built by hand (no build tools, no network): module ``name`` with
    ``VALUE = value``."""
    files = {
        f"{name}/__init__.py": f"VALUE = {value!r}\n".encode(),
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: peer-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = where / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


# ---- two peers, each in its own network namespace ---------------------------------------------


@pytest.fixture
def two_peers(tmp_path: Path) -> Iterator[tuple[Daemon, Daemon]]:
    """Peer ``a`` (the drivers' peer) and peer ``b`` (resource ``other``), in two namespaces."""
    key = secrets.token_hex(32)
    with network_namespaces(f"re{os.getpid() % 100000}", 2, "10.81.0") as (ns_a, ns_b):
        launch = Launcher(tmp_path)
        try:
            dirs = {n: tmp_path / f"cwd-{n}" for n in ("a", "b")}
            for d in dirs.values():
                d.mkdir()
            a = launch.up("a", "--num-cpus", "1", "--no-mdns", "--key", key, netns=ns_a, listen=LAN_LISTEN, cwd=dirs["a"])
            b = launch.up(
                "b", "--num-cpus", "1", "--resource", "other=1", "--no-mdns", "--key", key,
                "--bootstrap", a.join, netns=ns_b, listen=LAN_LISTEN, cwd=dirs["b"],
            )  # fmt: skip
            wait_for(lambda: views_complete([a, b]), 30, "the two peers see each other")
            yield a, b
        finally:
            launch.close()  # the daemons go before the namespaces they run in


def drive(daemon: Daemon, script: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> Any:
    """Run ``script`` as a driver attached to ``daemon`` (from ``cwd``); its last line is JSON."""
    cwd.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={**daemon.driver_env(), **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, f"driver failed:\n{r.stdout}\n{r.stderr}\nlog:\n{daemon.log_text()}"
    return json.loads(r.stdout.strip().splitlines()[-1])


@needs_ip
def test_working_dir_travels_to_the_other_peer_through_the_object_plane(
    two_peers: tuple[Daemon, Daemon], tmp_path: Path
) -> None:
    a, b = two_peers
    project = make_project(tmp_path / "project")
    out = drive(
        a,
        """
        import json, os, time
        import peer

        project = os.environ["PROJECT"]
        peer.init(runtime_env={"working_dir": project, "excludes": ["*.log"]})
        # The job has started: its code was shipped, not read from a shared file system later.
        os.rename(project, project + "-moved")

        @peer.remote(resources={"other": 1})
        def use():
            import mylib
            return {"hello": mylib.hello(), "cwd": os.getcwd(), "data": open("data.txt").read(),
                    "node": peer.get_runtime_context().get_node_id(), "files": sorted(os.listdir("."))}

        print(json.dumps(peer.get(use.remote(), timeout=60)))
        """,
        tmp_path / "driver",
        {"PROJECT": str(project)},
    )
    assert out["hello"] == "hello from mylib"
    assert out["data"] == "project data\n"
    assert out["node"] == b.peer_id
    assert out["cwd"].startswith(str(b.state_dir / "runtime_envs")), out
    assert "mylib" in out["files"] and not any(f.endswith(".log") for f in out["files"])
    # Unpacked once, on the peer that ran it; the driver's peer ran nothing of it.
    entries = list(_runtime_env.listing(b.state_dir))
    assert [e["kind"] for e in entries] == ["working_dir"], entries
    assert not list(_runtime_env.listing(a.state_dir))
    status = subprocess.run(
        [sys.executable, "-m", "peer._cli", "--state-dir", str(b.state_dir), "status"],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert "runtime envs  1 cached" in status.stdout and "working_dir" in status.stdout, status.stdout

    # Without runtime_env the same task cannot import the driver's package, and says what to do.
    (tmp_path / "project-moved").rename(project)
    out = drive(
        a,
        """
        import json
        import peer

        peer.init()

        @peer.remote(resources={"other": 1})
        def use():
            import mylib
            return mylib.hello()

        try:
            peer.get(use.remote(), timeout=60)
            print(json.dumps({"raised": None}))
        except ModuleNotFoundError as e:
            print(json.dumps({"raised": type(e).__name__, "message": str(e)}))
        """,
        tmp_path / "driver",
    )
    assert out["raised"] is not None, out
    assert "No module named 'mylib'" in out["message"] and "working_dir" in out["message"], out


@needs_ip
def test_pip_wheel_is_installed_on_the_other_peer_once_and_bad_requirements_fail_fast(
    two_peers: tuple[Daemon, Daemon], tmp_path: Path
) -> None:
    a, b = two_peers
    (tmp_path / "wheels").mkdir()
    wheel = make_wheel(tmp_path / "wheels")
    script = """
        import json, os, time
        import peer

        peer.init(runtime_env={"pip": [os.environ["WHEEL"]], "env_vars": {"JOB": os.environ["JOB"]}})

        @peer.remote(resources={"other": 1})
        def use():
            start = time.time()
            import peertiny
            return {"value": peertiny.VALUE, "start": start, "job": os.environ["JOB"],
                    "file": peertiny.__file__, "node": peer.get_runtime_context().get_node_id()}

        submitted = time.time()
        out = peer.get(use.remote(), timeout=120)
        out["latency"] = out["start"] - submitted
        print(json.dumps(out))
        """
    first = drive(a, script, tmp_path / "driver", {"WHEEL": str(wheel), "JOB": "1"})
    assert first["value"] == "tiny" and first["node"] == b.peer_id, first
    pip_envs = [e for e in _runtime_env.listing(b.state_dir) if e["kind"] == "pip"]
    assert len(pip_envs) == 1, pip_envs
    venv = b.state_dir / "runtime_envs" / pip_envs[0]["name"]
    assert first["file"].startswith(str(venv)), first
    built_at = (venv / ".peer-ready").stat().st_mtime_ns

    # A second job with the same list (another env_vars value: another environment, so a new
    # worker) reuses the peer's pip environment: no build, and the worker is up at once.
    second = drive(a, script, tmp_path / "driver", {"WHEEL": str(wheel), "JOB": "2"})
    assert second["value"] == "tiny" and second["job"] == "2", second
    assert [e["name"] for e in _runtime_env.listing(b.state_dir) if e["kind"] == "pip"] == [pip_envs[0]["name"]]
    assert (venv / ".peer-ready").stat().st_mtime_ns == built_at
    print(f"\npip env: first task {first['latency'] * 1000:.0f} ms (built it), "
          f"second job's new worker {second['latency'] * 1000:.0f} ms from submit to start")  # fmt: skip
    assert second["latency"] < 0.1, second

    # A requirement pip cannot satisfy fails the task with pip's own message, as fast as pip.
    started = time.monotonic()
    bad = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-index", "--dry-run", "peer-no-such-package==1.0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    pip_alone = time.monotonic() - started
    assert bad.returncode != 0
    out = drive(
        a,
        """
        import json, time
        import peer

        peer.init()

        @peer.remote(resources={"other": 1}, max_retries=3)
        def use():
            return "ran"

        start = time.monotonic()
        try:
            peer.get(use.options(runtime_env={"pip": ["--no-index", "peer-no-such-package==1.0"]}).remote(), timeout=120)
            print(json.dumps({"raised": None}))
        except peer.exceptions.RuntimeEnvSetupError as e:
            print(json.dumps({"raised": type(e).__name__, "message": str(e), "took": time.monotonic() - start}))
        """,
        tmp_path / "driver",
    )
    assert out["raised"] is not None, out
    assert "No matching distribution found for peer-no-such-package==1.0" in out["message"], out
    print(f"bad requirement: failed after {out['took']:.2f} s (pip alone: {pip_alone:.2f} s)")
    assert out["took"] < 2 * pip_alone + 5, (out["took"], pip_alone)


# ---- one peer --------------------------------------------------------------------------------


@peer.remote
def look(modules: list[str]) -> dict[str, Any]:
    import importlib

    seen = {}
    for m in modules:
        try:
            seen[m] = getattr(importlib.import_module(m), "hello", lambda: "imported")()
        except ModuleNotFoundError:
            seen[m] = None
    return {"modules": seen, "cwd": os.getcwd(), "env": {k: v for k, v in os.environ.items() if k.startswith("RT_")}}


@peer.remote
class Looker:
    def look(self, modules: list[str]) -> dict[str, Any]:
        return peer.get(look.remote(modules))  # a nested task inherits the actor's environment

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k.startswith("RT_")}


def test_env_vars_and_py_modules_and_their_merge(make_cluster: Callable[..., Any], tmp_path: Path) -> None:
    make_project(tmp_path / "mods", "modpkg", "hello from modpkg")
    single = tmp_path / "single.py"
    single.write_text("def hello():\n    return 'hello from single'\n")
    wheel = make_wheel(tmp_path, "wheelmod", "0.2", "from a wheel")
    make_cluster(
        num_cpus=2,
        runtime_env={
            "env_vars": {"RT_JOB": "job", "RT_BOTH": "job", "RT_PATH": "${HOME}:extra"},
            "py_modules": [str(tmp_path / "mods" / "modpkg"), str(single), str(wheel)],
        },
    )
    out = peer.get(look.remote(["modpkg", "single", "wheelmod"]), timeout=60)
    assert out["modules"] == {"modpkg": "hello from modpkg", "single": "hello from single", "wheelmod": "imported"}
    assert out["env"] == {"RT_JOB": "job", "RT_BOTH": "job", "RT_PATH": f"{os.environ['HOME']}:extra"}

    # A task's env_vars merge into the job's variable by variable; its other fields replace the job's.
    task = look.options(runtime_env={"env_vars": {"RT_BOTH": "task", "RT_TASK": "task"}})
    out = peer.get(task.remote(["modpkg"]), timeout=60)
    assert out["env"] == {"RT_JOB": "job", "RT_BOTH": "task", "RT_TASK": "task", "RT_PATH": f"{os.environ['HOME']}:extra"}
    assert out["modules"] == {"modpkg": "hello from modpkg"}
    out = peer.get(look.options(runtime_env={"py_modules": []}).remote(["modpkg"]), timeout=60)
    assert out["modules"] == {"modpkg": None}, "py_modules of the task replace the job's"

    # An actor and the tasks it submits run in the actor's environment.
    actor = Looker.options(runtime_env={"env_vars": {"RT_ACTOR": "1"}}).remote()
    assert peer.get(actor.env.remote(), timeout=60)["RT_ACTOR"] == "1"
    nested = peer.get(actor.look.remote(["modpkg"]), timeout=60)
    assert nested["env"]["RT_ACTOR"] == "1" and nested["modules"] == {"modpkg": "hello from modpkg"}


def test_a_task_environment_and_the_job_environment_share_a_peer_without_seeing_each_other(
    make_cluster: Callable[..., Any], tmp_path: Path
) -> None:
    job_dir = make_project(tmp_path / "job", "jobmod", "job code")
    task_dir = make_project(tmp_path / "task", "taskmod", "task code")
    (job_dir / "big.bin").write_bytes(b"x" * 1000)
    make_cluster(num_cpus=2, runtime_env={"working_dir": str(job_dir), "excludes": ["/big.bin"]})
    mods = ["jobmod", "taskmod"]
    in_task_env = look.options(runtime_env={"working_dir": str(task_dir), "env_vars": {"RT_T": "1"}})
    for _ in range(3):  # interleaved: the peer keeps workers of both environments apart
        job_out, task_out, plain_out = peer.get(
            [look.remote(mods), in_task_env.remote(mods), look.remote(mods)], timeout=60
        )
        assert job_out["modules"] == plain_out["modules"] == {"jobmod": "job code", "taskmod": None}
        assert task_out["modules"] == {"jobmod": None, "taskmod": "task code"}
        assert job_out["env"] == {} and task_out["env"] == {"RT_T": "1"}
        assert job_out["cwd"] != task_out["cwd"]
    assert not os.path.exists(os.path.join(job_out["cwd"], "big.bin")), "excludes left it out"
    assert os.path.exists(os.path.join(job_out["cwd"], "data.txt"))


def test_workers_without_runtime_env_never_see_one(make_cluster: Callable[..., Any], tmp_path: Path) -> None:
    make_project(tmp_path / "p", "plainmod", "x")
    make_cluster(num_cpus=1)
    here = os.getcwd()
    with_env = look.options(runtime_env={"working_dir": str(tmp_path / "p"), "env_vars": {"RT_X": "1"}})
    a, b, c = peer.get([look.remote(["plainmod"]), with_env.remote(["plainmod"]), look.remote(["plainmod"])], timeout=60)
    assert a["modules"] == c["modules"] == {"plainmod": None} and b["modules"] == {"plainmod": "x"}
    assert a["env"] == c["env"] == {} and a["cwd"] == c["cwd"] == here


def test_unsupported_fields_and_remote_uris_are_refused_naming_the_field(tmp_path: Path) -> None:
    for env, field_name in [
        ({"conda": {"dependencies": ["numpy"]}}, "conda"),
        ({"container": {"image": "x"}}, "container"),
        ({"image_uri": "x"}, "image_uri"),
        ({"working_dir": "s3://bucket/code.zip"}, "working_dir"),
        ({"py_modules": ["https://example.invalid/m.zip"]}, "py_modules"),
        ({"no_such_field": 1}, "no_such_field"),
    ]:
        with pytest.raises(ValueError, match=field_name):
            peer.init(runtime_env=env)
        with pytest.raises(ValueError, match=field_name):
            look.options(runtime_env=env)
    assert not peer.is_initialized()
    with pytest.raises(TypeError, match="env_vars"):
        look.options(runtime_env={"env_vars": {"A": 1}})


def test_a_working_dir_past_the_size_limit_is_refused_clearly(
    make_cluster: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path / "big")
    (project / "blob.bin").write_bytes(b"\0" * 4096)
    monkeypatch.setattr(_runtime_env, "MAX_PACKAGE_BYTES", 2048)
    make_cluster(num_cpus=1)
    with pytest.raises(ValueError, match=r"excludes") as e:
        peer.get(look.options(runtime_env={"working_dir": str(project)}).remote([]), timeout=60)
    assert "working_dir" in str(e.value) and "MiB" in str(e.value)
    out = peer.get(
        look.options(runtime_env={"working_dir": str(project), "excludes": ["*.bin"]}).remote(["mylib"]), timeout=60
    )
    assert out["modules"] == {"mylib": "hello from mylib"}


def test_the_cache_deletes_unused_entries_least_recently_used_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    for i, name in enumerate(["pkg-old", "pkg-inuse", "pkg-mid", "pkg-new"]):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_bytes(b"x" * 100)
        (tmp_path / f"{name}.json").write_text(json.dumps({"kind": "working_dir", "bytes": 100}))
        lock = tmp_path / f"{name}.lock"
        lock.touch()
        os.utime(lock, (1000 + i, 1000 + i))  # last used: in this order
    fd = os.open(tmp_path / "pkg-inuse.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a live worker uses it
    try:
        monkeypatch.setattr(_runtime_env, "CACHE_MAX_BYTES", 250)
        _runtime_env._collect(tmp_path)
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["pkg-inuse", "pkg-new"]
    assert not (tmp_path / "pkg-old.json").exists() and not (tmp_path / "pkg-mid.json").exists()
