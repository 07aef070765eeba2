"""Runtime environments (Ray's ``runtime_env``): code, packages and variables that follow the work.

Driver side (:func:`resolve`): a ``runtime_env`` dict is checked (:func:`validate`), then
normalised: ``working_dir`` and ``py_modules`` directories are packed into deterministic zip files
(``excludes`` and ``.gitignore`` files honoured, 500 MiB at most), and those, ``.zip`` files and
local wheels given to ``py_modules`` or ``pip`` are ``put`` into the object store once per content
hash. So a package travels the way objects do, peer to peer, and every task in the environment
holds it like a ref in its arguments. The normalised environment is canonical JSON; its key (a
hash of that JSON without object ids) is what the node matches workers by. A task's environment
is the job's (``init(runtime_env=...)``; in a task or actor: its own) with the task's
``.options(runtime_env=...)`` merged over it as Ray merges them: field by field, ``env_vars``
variable by variable.

Worker side (:func:`apply`): a worker runs the tasks of one environment only. Before its first
task it fetches each package it lacks into ``<state dir>/runtime_envs`` (unpacked into a temporary
directory, then renamed: concurrent workers are safe), builds the pip environment once per
distinct requirement list (``uv`` when it is on ``PATH``, else ``python -m venv`` and pip, on top
of the node's interpreter so ``peer`` stays importable), then takes up the environment: its
working directory, ``sys.path`` and variables. Each entry is described by ``NAME.json`` (what
``peer status`` lists); a worker holds a shared lock on ``NAME.lock`` while it uses the entry, and
entries nobody uses are deleted least recently used first once the cache passes its size bound.
"""

from __future__ import annotations

import json
import os
import re
import sys
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

# What only packing, unpacking and building need (zipfile, subprocess, pathlib, ...) is imported
# where it is used: `import peer` and every worker without a runtime_env must not pay for it.

from . import _native
from .exceptions import RuntimeEnvSetupError

# Ray's limit on a package (its files, before compression here).
MAX_PACKAGE_BYTES = int(os.environ.get("PEER_RUNTIME_ENV_MAX_PACKAGE_BYTES", 500 * 1024 * 1024))
# The cache of unpacked packages and built environments on each peer (Ray's default: 10 GB).
CACHE_MAX_BYTES = int(os.environ.get("PEER_RUNTIME_ENV_CACHE_BYTES", 10 * 1024**3))
# Ray's default for how long setting up an environment (a pip install) may take.
DEFAULT_SETUP_TIMEOUT_S = 600

SUPPORTED = ("working_dir", "py_modules", "pip", "uv", "env_vars", "excludes", "config")
_UNSUPPORTED: dict[str, str] = {
    "conda": "peer does not manage conda environments; list the packages under 'pip' instead",
    "container": "peer does not start workers in containers; run `peer up` inside the image instead",
    "image_uri": "peer does not start workers in containers; run `peer up` inside the image instead",
    "py_executable": "workers run the node's interpreter; start `peer up --python ...` for another one",
    "java_jars": "peer runs Python only",
    "mpi": "peer has no MPI plugin",
    "nsight": "peer has no profiler plugins",
    "worker_process_setup_hook": "run the set-up at the top of the task, or in the actor's __init__",
}
_REMOTE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


# ---- checking -------------------------------------------------------------------------------


def _path_field(name: str, value: Any) -> None:
    if isinstance(value, types.ModuleType) and name == "py_modules":
        return
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"runtime_env[{name!r}] takes local paths, got {type(value).__name__}")
    text = os.fspath(value)
    if _REMOTE.match(str(text)):
        raise ValueError(
            f"runtime_env[{name!r}]={text!r}: remote URIs are not supported by peer (there is no "
            "storage every peer shares); give a local directory or .zip file, which peer packs and "
            "ships to the other peers itself"
        )


def validate(runtime_env: Any, where: str) -> dict[str, Any] | None:
    """Check a ``runtime_env`` as given (no file is read); returns a plain dict (None if empty).

    Raises ``ValueError``/``TypeError`` naming the field for what peer does not support.
    """
    if runtime_env is None:
        return None
    if not isinstance(runtime_env, Mapping):
        raise TypeError(f"{where}: runtime_env must be a dict, got {type(runtime_env).__name__}")
    env = dict(runtime_env)
    for name in env:
        if name in _UNSUPPORTED:
            raise ValueError(f"{where}: runtime_env field {name!r} is not supported: {_UNSUPPORTED[name]}")
        if name not in SUPPORTED:
            raise ValueError(
                f"{where}: unknown runtime_env field {name!r}; peer supports {', '.join(SUPPORTED)}"
            )
    if env.get("working_dir") is not None:
        _path_field("working_dir", env["working_dir"])
    modules = env.get("py_modules")
    if modules is not None:
        if not isinstance(modules, (list, tuple)):
            raise TypeError(f"{where}: runtime_env['py_modules'] must be a list, got {type(modules).__name__}")
        for m in modules:
            _path_field("py_modules", m)
    if "pip" in env and "uv" in env:
        raise ValueError(f"{where}: runtime_env may not have both 'pip' and 'uv' (as in Ray)")
    for name in ("pip", "uv"):
        value = env.get(name)
        if value is None:
            continue
        if isinstance(value, Mapping):
            if "packages" not in value:
                raise ValueError(f"{where}: runtime_env[{name!r}] as a dict needs 'packages'")
            value = value["packages"]
        if not isinstance(value, (str, os.PathLike, list, tuple)) or (
            isinstance(value, (list, tuple)) and not all(isinstance(r, str) for r in value)
        ):
            raise TypeError(
                f"{where}: runtime_env[{name!r}] must be a list of requirements or the path of a "
                f"requirements file, got {value!r}"
            )
    env_vars = env.get("env_vars")
    if env_vars is not None:
        if not isinstance(env_vars, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
        ):
            raise TypeError(f"{where}: runtime_env['env_vars'] must be a dict of str to str, got {env_vars!r}")
    excludes = env.get("excludes")
    if excludes is not None and (
        not isinstance(excludes, (list, tuple)) or not all(isinstance(p, str) for p in excludes)
    ):
        raise TypeError(f"{where}: runtime_env['excludes'] must be a list of gitignore-style patterns")
    config = env.get("config")
    if config is not None:
        if not isinstance(config, Mapping):
            raise TypeError(f"{where}: runtime_env['config'] must be a dict")
        for k, v in config.items():
            if k == "setup_timeout_seconds":
                if isinstance(v, bool) or not isinstance(v, int) or (v <= 0 and v != -1):
                    raise ValueError(f"{where}: setup_timeout_seconds must be a positive int or -1, got {v!r}")
            elif k != "eager_install":
                raise ValueError(f"{where}: unknown runtime_env['config'] field {k!r}")
    return {k: v for k, v in env.items() if v is not None} or None


# ---- packing (driver side) ------------------------------------------------------------------


class _Ignore:
    """Gitignore-style patterns (``excludes`` and ``.gitignore`` files), each relative to a base."""

    def __init__(self) -> None:
        self._rules: list[tuple[str, re.Pattern[str], bool, bool]] = []

    def add(self, base: str, pattern: str) -> None:
        p = pattern.rstrip("\n").rstrip()
        if not p or p.startswith("#"):
            return
        negate = p.startswith("!")
        if negate:
            p = p[1:]
        dir_only = p.endswith("/")
        p = p.rstrip("/")
        anchored = "/" in p
        p = p.lstrip("/")
        rx = _glob_regex(p)
        rx = rx if anchored else f"(?:.*/)?{rx}"
        self._rules.append((base, re.compile(rx + r"\Z", re.DOTALL), negate, dir_only))

    def ignored(self, rel: str, is_dir: bool) -> bool:
        out = False
        for base, rx, negate, dir_only in self._rules:
            if dir_only and not is_dir:
                continue
            if base:
                if not rel.startswith(base + "/"):
                    continue
                sub = rel[len(base) + 1 :]
            else:
                sub = rel
            if rx.match(sub):
                out = not negate
        return out


def _glob_regex(p: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(p):
        if p.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif p.startswith("/**", i) and i + 3 == len(p):
            out.append("(?:/.*)?")
            i += 3
        elif p.startswith("**", i):
            out.append(".*")
            i += 2
        elif p[i] == "*":
            out.append("[^/]*")
            i += 1
        elif p[i] == "?":
            out.append("[^/]")
            i += 1
        elif p[i] == "[" and "]" in p[i + 1 :]:
            j = p.index("]", i + 1)
            body = p[i + 1 : j].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = j + 1
        else:
            out.append(re.escape(p[i]))
            i += 1
    return "".join(out)


def _files(root: Path, excludes: list[str], field_name: str) -> list[tuple[str, Path]]:
    """The files under ``root`` that are not excluded, sorted, as (path inside the package, path);
    raises past the size limit."""
    import stat
    from pathlib import Path
    ignore = _Ignore()
    for pattern in excludes:
        ignore.add("", pattern)
    out: list[tuple[str, Path]] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        gitignore = os.path.join(dirpath, ".gitignore")
        if os.path.isfile(gitignore):
            with open(gitignore, encoding="utf-8", errors="replace") as f:
                for line in f:
                    ignore.add(rel_dir, line)
        kept = []
        for d in sorted(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if d not in (".git", "__pycache__") and not ignore.ignored(rel, True):
                kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            full = Path(dirpath) / name
            if ignore.ignored(rel, False) or name.endswith(".pyc"):
                continue
            try:
                st = full.stat()
            except OSError:
                continue  # a broken symlink
            if not stat.S_ISREG(st.st_mode):
                continue
            total += st.st_size
            if total > MAX_PACKAGE_BYTES:
                raise ValueError(
                    f"runtime_env[{field_name!r}]: {root} holds more than "
                    f"{MAX_PACKAGE_BYTES / 2**20:.0f} MiB of files, the most a package may have "
                    "(PEER_RUNTIME_ENV_MAX_PACKAGE_BYTES); leave large files out with "
                    "runtime_env={'excludes': [...]} (gitignore-style patterns) or a .gitignore"
                )
            out.append((rel, full))
    return out


def _zip(files: list[tuple[str, Path]], prefix: str = "") -> bytes:
    """A deterministic zip (sorted entries, fixed times, modes kept): equal contents, equal bytes."""
    import io
    import stat
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for rel, full in files:
            info = zipfile.ZipInfo(prefix + rel, _ZIP_TIME)
            info.external_attr = ((full.stat().st_mode & 0o777) | stat.S_IFREG) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(full, "rb") as f:
                zf.writestr(info, f.read())
    return buf.getvalue()


def content_hash(data: bytes) -> str:
    import hashlib
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass
class _Packed:
    signature: tuple[Any, ...]
    hash: str
    ref: Any  # the ObjectRef of the blob


# (kind, absolute path, excludes) -> what was packed last; content hash -> the blob's ref.
_packed: dict[tuple[str, str, tuple[str, ...]], _Packed] = {}
_blobs: dict[str, Any] = {}


def _put_blob(data: bytes) -> tuple[str, Any]:
    from ._api import put

    h = content_hash(data)
    ref = _blobs.get(h)
    if ref is None:
        ref = _blobs[h] = put(data)
    return h, ref


def _signature(files: list[tuple[str, Path]]) -> tuple[Any, ...]:
    out = []
    for rel, full in files:
        st = full.stat()
        out.append((rel, st.st_size, st.st_mtime_ns, st.st_mode))
    return tuple(out)


def _pack_dir(kind: str, root: Path, excludes: list[str], prefix: str) -> dict[str, str]:
    """Pack directory ``root`` (entries under ``prefix``), put it once per content hash."""
    files = _files(root, excludes, kind)
    key = (kind, str(root), tuple(excludes))
    sig = (prefix, _signature(files))
    cached = _packed.get(key)
    if cached is None or cached.signature != sig:
        h, ref = _put_blob(_zip(files, prefix))
        cached = _packed[key] = _Packed(sig, h, ref)
    return {"hash": cached.hash, "id": cached.ref.hex()}


def _pack_file(kind: str, path: Path) -> dict[str, str]:
    st = path.stat()
    if st.st_size > MAX_PACKAGE_BYTES:
        raise ValueError(
            f"runtime_env[{kind!r}]: {path} is {st.st_size / 2**20:.1f} MiB, more than the "
            f"{MAX_PACKAGE_BYTES / 2**20:.0f} MiB a package may have (PEER_RUNTIME_ENV_MAX_PACKAGE_BYTES)"
        )
    key = (kind, str(path), ())
    sig = (st.st_size, st.st_mtime_ns)
    cached = _packed.get(key)
    if cached is None or cached.signature != sig:
        h, ref = _put_blob(path.read_bytes())
        cached = _packed[key] = _Packed(sig, h, ref)
    return {"hash": cached.hash, "id": cached.ref.hex()}


def _local_path(kind: str, value: Any) -> Path:
    from pathlib import Path
    path = Path(os.fspath(value)).expanduser().resolve()
    if not path.exists():
        raise ValueError(f"runtime_env[{kind!r}]: {path} does not exist")
    return path


def _working_dir(value: Any, excludes: list[str]) -> dict[str, str]:
    path = _local_path("working_dir", value)
    if path.is_dir():
        return {**_pack_dir("working_dir", path, excludes, ""), "kind": "dir"}
    if path.suffix == ".zip":
        return {**_pack_file("working_dir", path), "kind": "zip"}
    raise ValueError(f"runtime_env['working_dir']: {path} is neither a directory nor a .zip file")


def _py_module(value: Any, excludes: list[str]) -> dict[str, str]:
    if isinstance(value, types.ModuleType):
        files = getattr(value, "__path__", None)
        if files:
            value = list(files)[0]
        elif getattr(value, "__file__", None):
            value = value.__file__
        else:
            raise ValueError(f"runtime_env['py_modules']: module {value.__name__} has no files to ship")
    path = _local_path("py_modules", value)
    if path.is_dir():
        return {**_pack_dir("py_modules", path, excludes, path.name + "/"), "kind": "dir"}
    if path.suffix == ".whl":
        return {**_pack_file("py_modules", path), "kind": "wheel", "filename": path.name}
    if path.suffix == ".zip":
        return {**_pack_file("py_modules", path), "kind": "zip"}
    if path.suffix == ".py":
        files = [(path.name, path)]
        h, ref = _put_blob(_zip(files))
        return {"hash": h, "id": ref.hex(), "kind": "dir"}
    raise ValueError(
        f"runtime_env['py_modules']: {path} is not a package directory, a .whl, a .zip or a .py file"
    )


def _requirements(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(r).strip() for r in value if str(r).strip()]
    path = _local_path("pip", value)
    lines = path.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _pip(kind: str, value: Any) -> dict[str, Any]:
    options: list[str] = []
    if isinstance(value, Mapping):
        options = [str(o) for o in value.get("pip_install_options") or []]
        value = value["packages"]
    packages: list[str] = []
    wheels: list[dict[str, str]] = []
    for req in _requirements(value):
        looks_local = req.endswith(".whl") or req.startswith((".", "/", "~"))
        if looks_local and not req.startswith("-") and os.path.exists(os.path.expanduser(req)):
            path = _local_path(kind, req)
            if path.suffix != ".whl":
                raise ValueError(
                    f"runtime_env[{kind!r}]: {req} is a local path but not a wheel; build a wheel of "
                    "it (`pip wheel`), or ship its source with py_modules"
                )
            wheel = {**_pack_file(kind, path), "filename": path.name}
            packages.append("{wheel:%s/%s}" % (wheel["hash"], path.name))
            wheels.append(wheel)
        else:
            packages.append(req)
    return {"installer": kind, "packages": packages, "wheels": wheels, "options": options}


def normalize(env: dict[str, Any]) -> dict[str, Any]:
    """The normalised form of a checked ``runtime_env``: packages packed and put."""
    excludes = list(env.get("excludes") or [])
    out: dict[str, Any] = {}
    if env.get("working_dir") is not None:
        out["working_dir"] = _working_dir(env["working_dir"], excludes)
    if env.get("py_modules") is not None:
        out["py_modules"] = [_py_module(m, excludes) for m in env["py_modules"]]
    for kind in ("pip", "uv"):
        if env.get(kind) is not None:
            out["pip"] = _pip(kind, env[kind])
    if env.get("env_vars"):
        out["env_vars"] = dict(sorted(env["env_vars"].items()))
    if env.get("config"):
        out["config"] = dict(env["config"])
    return out


def merge(parent: dict[str, Any] | None, child: dict[str, Any] | None) -> dict[str, Any]:
    """Ray's merge of a task's environment over its parent's: field by field, the child's wins,
    except ``env_vars``, merged variable by variable."""
    out = dict(parent or {})
    for k, v in (child or {}).items():
        if k == "env_vars":
            out[k] = dict(sorted({**out.get(k, {}), **v}.items()))
        else:
            out[k] = v
    return out


def _ids_removed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _ids_removed(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        return [_ids_removed(v) for v in value]
    return value


@dataclass
class Resolved:
    """An environment ready for submission: its normalised form, key, JSON and native handle."""

    norm: dict[str, Any]
    key: bytes
    setup: str
    handle: Any = field(repr=False)


def _resolved(norm: dict[str, Any]) -> Resolved | None:
    import hashlib
    if not norm:
        return None
    setup = json.dumps(norm, sort_keys=True, separators=(",", ":"))
    key = hashlib.blake2b(
        json.dumps(_ids_removed(norm), sort_keys=True, separators=(",", ":")).encode(), digest_size=16
    ).digest()
    ids = [bytes.fromhex(p["id"]) for p in _packages(norm)]
    return Resolved(norm, key, setup, _native.RuntimeEnv(key, setup, ids))


def _packages(norm: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    if "working_dir" in norm:
        out.append(norm["working_dir"])
    out.extend(norm.get("py_modules", []))
    out.extend(norm.get("pip", {}).get("wheels", []))
    return out


def resolve(parent: Resolved | None, env: dict[str, Any] | None) -> Resolved | None:
    """``env`` (checked) normalised and merged over ``parent``'s environment."""
    if env is None:
        return parent
    return _resolved(merge(parent.norm if parent else None, normalize(env)))


_from_setup: dict[str, Resolved] = {}


def from_setup(key: bytes, setup: str) -> Resolved:
    """The environment a worker got with its task (cached: a worker sees few)."""
    r = _from_setup.get(setup)
    if r is None:
        norm = json.loads(setup)
        ids = [bytes.fromhex(p["id"]) for p in _packages(norm)]
        r = Resolved(norm, key, setup, _native.RuntimeEnv(key, setup, ids))
        if len(_from_setup) > 64:
            _from_setup.clear()
        _from_setup[setup] = r
    return r


def forget() -> None:
    """``shutdown()``: the packages put by this process are gone with its node."""
    _packed.clear()
    _blobs.clear()
    _from_setup.clear()


# ---- the cache on each peer (worker side) ---------------------------------------------------


def cache_root() -> Path:
    from pathlib import Path
    state = os.environ.get("PEER_STATE_DIR") or os.path.join(os.path.expanduser("~"), ".peer")
    root = Path(state) / "runtime_envs"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return root


# Use locks this process holds (kept open for its life: the entries it uses stay).
_held: dict[str, int] = {}


def _use(root: Path, name: str) -> None:
    """Take a shared lock on ``name`` for this process's life (the cleanup skips it), and mark it
    used now."""
    import fcntl
    lock = root / f"{name}.lock"
    if name not in _held:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        _held[name] = fd
    os.utime(lock)


class _BuildLock:
    """The exclusive lock one builder of an entry holds (others wait, then find it built)."""

    def __init__(self, root: Path, name: str, what: str) -> None:
        self._path = root / f"{name}.build.lock"
        self._marker = root / f"{name}.building"
        self._what = what
        self._fd = -1

    def __enter__(self) -> _BuildLock:
        import fcntl
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def building(self, kind: str) -> None:
        """Say in ``peer status`` that the entry is being built."""
        import time
        _write_json(self._marker, {"kind": kind, "what": self._what, "bytes": 0, "since": time.time(), "pid": os.getpid()})

    def __exit__(self, *exc: object) -> None:
        try:
            self._marker.unlink(missing_ok=True)
        finally:
            os.close(self._fd)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _fetch(pkg: dict[str, Any]) -> bytes:
    from ._api import get
    from ._object_ref import ObjectRef

    data = get(ObjectRef(bytes.fromhex(pkg["id"])))
    if not isinstance(data, (bytes, bytearray)) or content_hash(bytes(data)) != pkg["hash"]:
        raise RuntimeEnvSetupError(f"package {pkg['hash']} arrived damaged (its content hash differs)")
    return bytes(data)


def _unzip(data: bytes, into: Path) -> None:
    import io
    import zipfile
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            target = (into / info.filename).resolve()
            if not str(target).startswith(str(into.resolve()) + os.sep) and target != into.resolve():
                raise RuntimeEnvSetupError(f"a package names a path outside itself: {info.filename!r}")
            zf.extract(info, into)
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                os.chmod(target, mode)


def _package(root: Path, pkg: dict[str, Any], kind: str, what: str) -> Path:
    """The unpacked directory (or, for a wheel, the file) of a package on this peer."""
    import shutil
    import tempfile
    import time
    from pathlib import Path
    name = f"pkg-{pkg['hash']}"
    _use(root, name)
    final = root / name
    if final.exists():
        return final
    with _BuildLock(root, name, what) as lock:
        if final.exists():
            return final
        lock.building(kind)
        data = _fetch(pkg)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            if "filename" in pkg:  # a wheel: kept as the file pip (or _wheel_dir) reads
                (tmp / pkg["filename"]).write_bytes(data)
            else:
                _unzip(data, tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _write_json(root / f"{name}.json", {"kind": kind, "what": what, "bytes": _dir_bytes(final), "created": time.time()})
    _collect(root)
    return final


def _wheel_dir(root: Path, pkg: dict[str, Any]) -> Path:
    """A wheel from py_modules, unpacked so that it imports from sys.path."""
    import tempfile
    import time
    from pathlib import Path
    wheel = _package(root, pkg, "py_modules", pkg["filename"]) / pkg["filename"]
    name = f"whl-{pkg['hash']}"
    _use(root, name)
    final = root / name
    if final.exists():
        return final
    with _BuildLock(root, name, pkg["filename"]):
        if not final.exists():
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
            _unzip(wheel.read_bytes(), tmp)
            for data_dir in tmp.glob("*.data"):
                for lib in ("purelib", "platlib"):
                    for item in (data_dir / lib).glob("*") if (data_dir / lib).is_dir() else []:
                        os.rename(item, tmp / item.name)
            os.rename(tmp, final)
            _write_json(root / f"{name}.json", {"kind": "py_modules", "what": pkg["filename"], "bytes": _dir_bytes(final), "created": time.time()})
    return final


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def _pip_env(root: Path, spec: dict[str, Any], timeout: float | None) -> Path:
    """The virtual environment of a requirement list on this peer, built once (the node's
    interpreter underneath, so peer and what the node has installed stay importable)."""
    import hashlib
    import shutil
    import time
    ident = json.dumps([_ids_removed(spec), sys.version, sys.executable], sort_keys=True)
    name = f"pip-{hashlib.blake2b(ident.encode(), digest_size=16).hexdigest()}"
    _use(root, name)
    venv = root / name
    ready = venv / ".peer-ready"
    if ready.exists():
        return venv
    what = " ".join(_shown(spec["packages"]))
    with _BuildLock(root, name, what) as lock:
        if ready.exists():
            return venv
        lock.building("pip")
        shutil.rmtree(venv, ignore_errors=True)  # a build that died half way
        try:
            _build_venv(root, venv, spec, timeout)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        ready.touch()
        _write_json(root / f"{name}.json", {"kind": "pip", "what": what, "bytes": _dir_bytes(venv), "created": time.time()})
    _collect(root)
    return venv


def _shown(packages: list[str]) -> list[str]:
    return [re.sub(r"\{wheel:[0-9a-f]+/([^}]*)\}", r"\1", p) for p in packages]


def _build_venv(root: Path, venv: Path, spec: dict[str, Any], timeout: float | None) -> None:
    import shutil
    import time
    uv = shutil.which("uv") if spec.get("installer") in ("pip", "uv") else None
    deadline = None if timeout is None else time.monotonic() + timeout

    def run(cmd: list[str], what: str) -> None:
        import subprocess
        import time
        left = None if deadline is None else max(1.0, deadline - time.monotonic())
        env = dict(os.environ, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        env.pop("PYTHONPATH", None)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=left, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RuntimeEnvSetupError(
                f"{what} took longer than the {timeout:.0f} s runtime_env['config']['setup_timeout_seconds'] allows"
            ) from None
        if r.returncode != 0:
            out = (r.stderr.strip() or r.stdout.strip())[-4000:]
            raise RuntimeEnvSetupError(f"{what} failed (exit code {r.returncode}):\n{out}")

    if uv:
        run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], "uv venv")
    else:
        run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "python -m venv")
    # The node's packages under the environment's: what pip finds installed, and what workers import.
    site_dir = _site_packages(venv)
    site_dir.mkdir(parents=True, exist_ok=True)
    node_dirs = [p for p in sys.path if p and os.path.isdir(p) and ("site-packages" in p or "dist-packages" in p)]
    (site_dir / "_peer_node.pth").write_text("".join(f"{p}\n" for p in node_dirs))
    wheels = {w["hash"]: w for w in spec.get("wheels", [])}

    def local(req: str) -> str:
        m = re.fullmatch(r"\{wheel:([0-9a-f]+)/([^}]*)\}", req)
        if not m:
            return req
        return str(_package(root, wheels[m.group(1)], "wheel", m.group(2)) / m.group(2))

    requirements = root / f".{venv.name}.requirements.txt"
    requirements.write_text("".join(f"{local(r)}\n" for r in spec["packages"]))
    python = str(venv / "bin" / "python")
    try:
        if uv:
            cmd = [uv, "pip", "install", "--python", python, *spec.get("options", []), "-r", str(requirements)]
            run(cmd, "uv pip install")
        else:
            cmd = [python, "-m", "pip", "install", *spec.get("options", []), "-r", str(requirements)]
            run(cmd, "pip install")
    finally:
        requirements.unlink(missing_ok=True)


def _collect(root: Path) -> None:
    """Delete entries nobody uses, least recently used first, while the cache is over its bound."""
    import fcntl
    import shutil
    entries = []
    total = 0
    for meta in root.glob("*.json"):
        name = meta.name[: -len(".json")]
        try:
            size = int(json.loads(meta.read_text()).get("bytes", 0))
            used = (root / f"{name}.lock").stat().st_mtime
        except (OSError, ValueError):
            continue
        total += size
        entries.append((used, name, size))
    if total <= CACHE_MAX_BYTES:
        return
    for _, name, size in sorted(entries):
        if total <= CACHE_MAX_BYTES:
            return
        if name in _held:
            continue
        fd = os.open(root / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # in use
        try:
            trash = root / f".trash-{name}-{os.getpid()}"
            (root / f"{name}.json").unlink(missing_ok=True)
            if (root / name).exists():
                os.rename(root / name, trash)
                shutil.rmtree(trash, ignore_errors=True)
            total -= size
        finally:
            os.close(fd)


def apply(setup: str) -> None:
    """Take up an environment in this worker: packages fetched and unpacked (once per peer), the
    pip environment built (once per peer), then the working directory, ``sys.path`` and variables.
    Raises :class:`RuntimeEnvSetupError`."""
    import site
    from pathlib import Path
    spec = json.loads(setup)
    root = cache_root()
    timeout_s = (spec.get("config") or {}).get("setup_timeout_seconds", DEFAULT_SETUP_TIMEOUT_S)
    timeout = None if timeout_s == -1 else float(timeout_s)
    front: list[str] = []
    workdir: Path | None = None
    wd = spec.get("working_dir")
    if wd is not None:
        workdir = _package(root, wd, "working_dir", "working_dir")
        if wd.get("kind") == "zip":
            inside = [p for p in workdir.iterdir() if p.name != "__MACOSX"]
            if len(inside) == 1 and inside[0].is_dir():
                workdir = inside[0]  # a zip of one directory: that directory (as in Ray)
        front.append(str(workdir))
    for m in spec.get("py_modules", []):
        if m.get("kind") == "wheel":
            front.append(str(_wheel_dir(root, m)))
        else:
            front.append(str(_package(root, m, "py_modules", "py_modules")))
    pip = spec.get("pip")
    site_entries: list[str] = []
    if pip is not None:
        venv = _pip_env(root, pip, timeout)
        before = list(sys.path)
        site.addsitedir(str(_site_packages(venv)))
        site_entries = [p for p in sys.path if p not in before]
        sys.path[:] = before
        os.environ["VIRTUAL_ENV"] = str(venv)
        os.environ["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    for k, v in (spec.get("env_vars") or {}).items():
        # ${VAR} stands for the variable's value on the worker (as in Ray).
        os.environ[k] = re.sub(r"\$\{(\w+)\}", lambda m: os.environ.get(m.group(1), ""), v)
    new = [p for p in front + site_entries if p not in sys.path]
    sys.path[:0] = new
    if workdir is not None:
        os.chdir(workdir)
    import importlib

    importlib.invalidate_caches()


def describe_missing_module(e: ModuleNotFoundError, env: Resolved | None) -> None:
    """Add to a task's ``ModuleNotFoundError`` what to do: ship the module with the task."""
    if e.name is None or getattr(e, "_peer_hint", False):
        return
    has_code = env is not None and ("working_dir" in env.norm or "py_modules" in env.norm)
    top = e.name.split(".")[0]
    hint = (
        f"(on this peer; if {top!r} is your own code, ship it with the tasks: "
        f"runtime_env={{'working_dir': '<your project dir>'}} or {{'py_modules': [...]}}, to init() or "
        "to .options(); installed packages go in runtime_env={'pip': [...]})"
        if not has_code
        else f"(on this peer, with the task's runtime_env: is {top!r} inside its working_dir or py_modules?)"
    )
    msg = f"{e.msg} {hint}" if e.msg else hint
    e.msg = msg
    e.args = (msg, *e.args[1:])
    e._peer_hint = True  # type: ignore[attr-defined]


def listing(state_dir: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The cache's entries as ``peer status`` shows them (for tests and tools)."""
    from pathlib import Path
    root = Path(state_dir) / "runtime_envs"
    for meta in sorted(root.glob("*.json")) if root.is_dir() else []:
        try:
            yield {"name": meta.name[: -len(".json")], **json.loads(meta.read_text())}
        except (OSError, ValueError):
            continue
