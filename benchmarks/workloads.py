#!/usr/bin/env python3
"""Benchmark workloads, written once against Ray's core API.

One process runs one group of workloads against one backend, then exits:

    python benchmarks/workloads.py --backend ray|peer|mp --only NAME [--json]

`ray` imports Ray, `peer` runs the very same code with `import peer as ray`,
and `mp` runs the task workloads where they apply on `multiprocessing.Pool`
(`apply` for sync calls, `apply_async` for async ones). NAME is a group (all
its metrics) or a single metric. With --json every finished metric is printed
at once as one JSON line tagged `"bench": 1`, so a run cut short still reports
what it measured. The runner (`benchmarks/run`) calls this script once per
group, backend and round; it never mixes backends in one process.

Every workload is bounded in time (a budget of about a second per metric, or
a fixed small count), so a full run of all groups stays within minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import json
import multiprocessing
import os
import pickle
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procs  # noqa: E402

CORES = len(os.sched_getaffinity(0))
MIB = 1024 * 1024
BUDGET_S = 1.0  # time spent in the timed loop of a throughput metric
API_BACKENDS = ("ray", "peer")  # backends that speak Ray's API
BACKENDS = API_BACKENDS + ("mp",)


# --------------------------------------------------------------------------- registry


@dataclass
class Metric:
    name: str
    group: str
    unit: str
    better: str  # "higher" or "lower"
    doc: str
    impls: dict[str, Callable] = field(default_factory=dict)  # kind ("api"/"mp") -> fn


@dataclass
class Group:
    name: str
    doc: str
    num_cpus: int | None = None  # None: the machine's cores
    metrics: list[str] = field(default_factory=list)


GROUPS: dict[str, Group] = {}
METRICS: dict[str, Metric] = {}


def group(name: str, doc: str, num_cpus: int | None = None) -> None:
    GROUPS[name] = Group(name, doc, num_cpus)


def metric(name: str, group_name: str, unit: str, better: str, doc: str, kinds=("api",)):
    """Register the decorated function as metric `name` for the given backend kinds."""

    def register(fn: Callable) -> Callable:
        m = METRICS.get(name)
        if m is None:
            m = METRICS[name] = Metric(name, group_name, unit, better, doc)
            GROUPS[group_name].metrics.append(name)
        for kind in kinds:
            m.impls[kind] = fn
        return fn

    return register


def declare(name: str, group_name: str, unit: str, better: str, doc: str, kinds=("api",)) -> None:
    """Register a metric that a group's own driver code measures (no per-metric function)."""
    METRICS[name] = Metric(name, group_name, unit, better, doc, {k: None for k in kinds})
    GROUPS[group_name].metrics.append(name)


def kind_of(backend: str) -> str:
    return "mp" if backend == "mp" else "api"


def resolve(only: str) -> tuple[Group, list[str]]:
    """A group name selects all its metrics; a metric name selects just that one."""
    if only in GROUPS:
        return GROUPS[only], list(GROUPS[only].metrics)
    if only in METRICS:
        return GROUPS[METRICS[only].group], [only]
    raise SystemExit(f"unknown workload {only!r}; try --list")


# --------------------------------------------------------------------------- timing helpers


def rate(fn: Callable[[], object], ops: int = 1, budget: float = BUDGET_S, min_reps: int = 2) -> tuple[float, dict]:
    """Ops per second of `fn` (which does `ops` operations), after one warm-up call."""
    fn()
    reps = 0
    start = time.perf_counter()
    while True:
        fn()
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget and reps >= min_reps:
            return ops * reps / elapsed, {"reps": reps, "ops": ops * reps, "seconds": round(elapsed, 4)}


def per_call(fn: Callable[[], object], budget: float = BUDGET_S, min_reps: int = 3, max_reps: int = 1000,
             warmup: bool = True) -> tuple[float, dict]:
    """Median seconds of one call of `fn`, each call timed on its own."""
    if warmup:
        fn()
    samples = []
    start = time.perf_counter()
    while len(samples) < max_reps:
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
        if time.perf_counter() - start >= budget and len(samples) >= min_reps:
            break
    return statistics.median(samples), {"reps": len(samples), "min": min(samples), "max": max(samples)}


def settle(max_s: float = 15.0, window: float = 0.5, busy_cores: float = 0.15) -> float:
    """Wait until the backend is idle: same process count and little CPU use over a window."""
    me = os.getpid()
    start = time.perf_counter()
    while time.perf_counter() - start < max_s:
        before = {p: procs.cpu_seconds(p) for p in [me] + procs.live_descendants(me)}
        time.sleep(window)
        after = {p: procs.cpu_seconds(p) for p in [me] + procs.live_descendants(me)}
        used = sum(after[p] - before[p] for p in after if p in before)
        if set(before) == set(after) and used / window < busy_cores:
            break
    return time.perf_counter() - start


def tree_usage() -> dict:
    """Memory and process count of everything this process started, plus its own growth."""
    kids = procs.live_descendants(os.getpid())
    return {
        "procs": len(kids),
        "children_rss": sum(procs.rss_bytes(p) for p in kids),
        "children_pss": sum(procs.pss_bytes(p) for p in kids),
        "self_rss": procs.rss_bytes(os.getpid()),
        "self_pss": procs.pss_bytes(os.getpid()),
    }


def tree_cpu_busy(seconds: float) -> float:
    """CPU cores used by this process and its descendants over `seconds` of idling."""
    me = os.getpid()
    before = {p: procs.cpu_seconds(p) for p in [me] + procs.live_descendants(me)}
    time.sleep(seconds)
    after = {p: procs.cpu_seconds(p) for p in [me] + procs.live_descendants(me)}
    return sum(after[p] - before.get(p, 0.0) for p in after) / seconds


def wait_children_gone(max_s: float = 10.0) -> tuple[float, list[int]]:
    start = time.perf_counter()
    while time.perf_counter() - start < max_s:
        left = procs.live_descendants(os.getpid())
        if not left:
            return time.perf_counter() - start, []
        time.sleep(0.05)
    return time.perf_counter() - start, procs.live_descendants(os.getpid())


# --------------------------------------------------------------------------- backends


def import_backend(backend: str):
    if backend == "ray":
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from an offline box
        return importlib.import_module("ray")
    if backend == "peer":
        return importlib.import_module("peer")  # used exactly like `import peer as ray`
    return multiprocessing


def api_init(ray, num_cpus: int, notes: list[str]) -> None:
    """A fresh one-machine cluster in this process: address="local" never attaches to a running one."""
    try:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
    except TypeError as e:
        if "include_dashboard" not in str(e):
            raise
        notes.append(f"init() rejected include_dashboard ({e}); ran without it")
        ray.init(address="local", num_cpus=num_cpus)


def build_remotes(ray) -> SimpleNamespace:
    """The remote functions and actors, defined through whatever module plays `ray`."""

    @ray.remote
    def noop():
        return b"ok"

    @ray.remote
    def chain(prev):
        return 0 if prev is None else prev + 1

    @ray.remote
    def sleep1():
        time.sleep(1)

    @ray.remote
    def make_refs(n):
        return [ray.put(1) for _ in range(n)]

    @ray.remote
    def call_actors(actors, n):
        ray.get([actors[i % len(actors)].small_value.remote() for i in range(n)])

    @ray.remote
    class Actor:
        def small_value(self):
            return b"ok"

    @ray.remote
    class AsyncActor:
        async def small_value(self):
            await asyncio.sleep(0)
            return b"ok"

    @ray.remote
    class Client:
        def __init__(self, servers):
            self.servers = servers

        def small_value_batch(self, n):
            ray.get([s.small_value.remote() for s in self.servers for _ in range(n)])

    return SimpleNamespace(noop=noop, chain=chain, sleep1=sleep1, make_refs=make_refs,
                           call_actors=call_actors, Actor=Actor, AsyncActor=AsyncActor, Client=Client)


def _mp_noop():
    return b"ok"


def _mp_sleep1():
    time.sleep(1)


@dataclass
class Ctx:
    backend: str
    ray: object = None  # the module playing `ray` (api kinds)
    r: SimpleNamespace | None = None  # remotes (api kinds)
    pool: object = None  # multiprocessing.Pool (mp)
    notes: list[str] = field(default_factory=list)


def start(backend: str, num_cpus: int) -> Ctx:
    mod = import_backend(backend)
    ctx = Ctx(backend)
    if backend == "mp":
        ctx.pool = mod.Pool(num_cpus)
        ctx.pool.apply(_mp_noop)
    else:
        ctx.ray = mod
        api_init(mod, num_cpus, ctx.notes)
        ctx.r = build_remotes(mod)
        mod.get(ctx.r.noop.remote())
    settle()
    return ctx


def stop(ctx: Ctx) -> None:
    if ctx.pool is not None:
        ctx.pool.close()
        ctx.pool.join()
    if ctx.ray is not None:
        ctx.ray.shutdown()


# --------------------------------------------------------------------------- init: startup, idle cost, shutdown

group("init", "startup, idle footprint and shutdown of a one-machine cluster")
declare("import_s", "init", "s", "lower", "import the backend module")
declare("init_s", "init", "s", "lower", "init(num_cpus=cores) returns (mp: Pool(cores))", ("api", "mp"))
declare("init_first_task_s", "init", "s", "lower",
        "init plus the first no-op task round trip: time to a usable cluster", ("api", "mp"))
declare("idle_rss_mib", "init", "MiB", "lower",
        "idle: summed RSS of all processes the backend started + the driver's own growth", ("api", "mp"))
declare("idle_pss_mib", "init", "MiB", "lower", "the same as PSS (shared pages counted once)", ("api", "mp"))
declare("idle_procs", "init", "procs", "lower", "idle: processes the backend started", ("api", "mp"))
declare("idle_cpu_cores", "init", "cores", "lower", "idle: CPU used by driver + backend processes", ("api", "mp"))
declare("shutdown_s", "init", "s", "lower", "shutdown() returns (mp: close + join)", ("api", "mp"))


def run_init(backend: str, selected: list[str], emit) -> list[str]:
    notes: list[str] = []
    base = tree_usage()
    t = time.perf_counter()
    mod = import_backend(backend)
    import_s = time.perf_counter() - t
    t = time.perf_counter()
    if backend == "mp":
        pool = mod.Pool(CORES)
    else:
        api_init(mod, CORES, notes)
    init_s = time.perf_counter() - t
    if backend == "mp":
        t = time.perf_counter()
        pool.apply(_mp_noop)
    else:
        r = build_remotes(mod)
        t = time.perf_counter()
        mod.get(r.noop.remote())
    first_s = time.perf_counter() - t
    settle_s = settle()
    cpu = tree_cpu_busy(2.0)
    use = tree_usage()
    t = time.perf_counter()
    if backend == "mp":
        pool.close()
        pool.join()
    else:
        mod.shutdown()
    shutdown_s = time.perf_counter() - t
    gone_s, left = wait_children_gone()
    figures = {
        "import_s": (import_s, {}),  # not emitted for mp: it is imported with this script
        "init_s": (init_s, {}),
        "init_first_task_s": (init_s + first_s, {"first_task_s": first_s}),
        "idle_rss_mib": ((use["children_rss"] + use["self_rss"] - base["self_rss"]) / MIB,
                         {"children_mib": use["children_rss"] / MIB,
                          "driver_growth_mib": (use["self_rss"] - base["self_rss"]) / MIB,
                          "settle_s": settle_s}),
        "idle_pss_mib": ((use["children_pss"] + use["self_pss"] - base["self_pss"]) / MIB, {}),
        "idle_procs": (use["procs"], {}),
        "idle_cpu_cores": (cpu, {}),
        "shutdown_s": (shutdown_s, {"children_gone_after_s": gone_s, "children_left": len(left)}),
    }
    for name in selected:
        emit(name, *figures[name])
    return notes


# --------------------------------------------------------------------------- tasks

group("tasks", "no-op task throughput")


@metric("tasks_sync", "tasks", "tasks/s", "higher", "one no-op task, get, repeat", ("api",))
def tasks_sync(c: Ctx):
    return rate(lambda: c.ray.get(c.r.noop.remote()))


@metric("tasks_sync", "tasks", "tasks/s", "higher", "", ("mp",))
def tasks_sync_mp(c: Ctx):
    return rate(lambda: c.pool.apply(_mp_noop))


ASYNC_N = 10_000


@metric("tasks_async", "tasks", "tasks/s", "higher", f"submit {ASYNC_N:,} no-op tasks, then get all", ("api",))
def tasks_async(c: Ctx):
    c.ray.get([c.r.noop.remote() for _ in range(200)])
    t = time.perf_counter()
    refs = [c.r.noop.remote() for _ in range(ASYNC_N)]
    submitted = time.perf_counter() - t
    c.ray.get(refs)
    elapsed = time.perf_counter() - t
    return ASYNC_N / elapsed, {"submit_s": submitted, "seconds": elapsed}


@metric("tasks_async", "tasks", "tasks/s", "higher", "", ("mp",))
def tasks_async_mp(c: Ctx):
    [h.get() for h in [c.pool.apply_async(_mp_noop) for _ in range(200)]]
    t = time.perf_counter()
    handles = [c.pool.apply_async(_mp_noop) for _ in range(ASYNC_N)]
    submitted = time.perf_counter() - t
    [h.get() for h in handles]
    elapsed = time.perf_counter() - t
    return ASYNC_N / elapsed, {"submit_s": submitted, "seconds": elapsed}


@metric("tasks_and_get_batch", "tasks", "tasks/s", "higher", "1,000 no-op tasks then get them, repeated", ("api",))
def tasks_and_get_batch(c: Ctx):
    return rate(lambda: c.ray.get([c.r.noop.remote() for _ in range(1000)]), ops=1000)


@metric("tasks_and_get_batch", "tasks", "tasks/s", "higher", "", ("mp",))
def tasks_and_get_batch_mp(c: Ctx):
    return rate(lambda: [h.get() for h in [c.pool.apply_async(_mp_noop) for _ in range(1000)]], ops=1000)


CHAIN_N = 1000


@metric("tasks_chain", "tasks", "tasks/s", "higher", f"{CHAIN_N:,} tasks, each taking the previous one's ref")
def tasks_chain(c: Ctx):
    def run(n):
        ref = c.r.chain.remote(None)
        for _ in range(n - 1):
            ref = c.r.chain.remote(ref)
        assert c.ray.get(ref) == n - 1
    run(20)
    t = time.perf_counter()
    run(CHAIN_N)
    elapsed = time.perf_counter() - t
    return CHAIN_N / elapsed, {"seconds": elapsed}


# --------------------------------------------------------------------------- actors, one caller

group("actors", "actor calls from the driver")


@metric("actor_calls_sync", "actors", "calls/s", "higher", "one call on one actor, get, repeat")
def actor_calls_sync(c: Ctx):
    a = c.r.Actor.remote()
    return rate(lambda: c.ray.get(a.small_value.remote()))


@metric("actor_calls_async", "actors", "calls/s", "higher", "1,000 calls on one actor, then get all, repeated")
def actor_calls_async(c: Ctx):
    a = c.r.Actor.remote()
    return rate(lambda: c.ray.get([a.small_value.remote() for _ in range(1000)]), ops=1000)


@metric("actor_calls_concurrent", "actors", "calls/s", "higher",
        f"the driver spreads 1,000 calls over {max(2, CORES // 2)} actors, then gets all; repeated")
def actor_calls_concurrent(c: Ctx):
    actors = [c.r.Actor.remote() for _ in range(max(2, CORES // 2))]
    c.ray.get([a.small_value.remote() for a in actors])  # all actors up before timing
    return rate(lambda: c.ray.get([actors[i % len(actors)].small_value.remote() for i in range(1000)]), ops=1000)


@metric("async_actor_calls_1000", "actors", "calls/s", "higher",
        "1,000 calls in flight on one async actor (each awaits once), then get all; repeated")
def async_actor_calls_1000(c: Ctx):
    a = c.r.AsyncActor.remote()
    c.ray.get(a.small_value.remote())  # up before timing
    return rate(lambda: c.ray.get([a.small_value.remote() for _ in range(1000)]), ops=1000)


# --------------------------------------------------------------------------- actors, several

N_ACTORS = max(2, CORES // 2)
group("actors_many", f"{N_ACTORS} actors called from an actor (1:n) or from tasks (n:n)")


@metric("actor_calls_1_n", "actors_many", "calls/s", "higher",
        f"a client actor calls each of {N_ACTORS} actors 500 times, gets all; repeated")
def actor_calls_1_n(c: Ctx):
    servers = [c.r.Actor.remote() for _ in range(N_ACTORS)]
    client = c.r.Client.remote(servers)
    return rate(lambda: c.ray.get(client.small_value_batch.remote(500)), ops=500 * N_ACTORS)


@metric("actor_calls_n_n", "actors_many", "calls/s", "higher",
        f"4 tasks each make 250 calls spread over {N_ACTORS} actors; repeated")
def actor_calls_n_n(c: Ctx):
    actors = [c.r.Actor.remote() for _ in range(N_ACTORS)]
    return rate(lambda: c.ray.get([c.r.call_actors.remote(actors, 250) for _ in range(4)]), ops=1000)


# --------------------------------------------------------------------------- small objects

group("objects_small", "put and get of a small value from the driver")


@metric("put_small", "objects_small", "puts/s", "higher", "put(0), repeat")
def put_small(c: Ctx):
    return rate(lambda: c.ray.put(0))


@metric("get_small", "objects_small", "gets/s", "higher", "get of one put(0) ref, repeat")
def get_small(c: Ctx):
    ref = c.ray.put(0)
    return rate(lambda: c.ray.get(ref))


# --------------------------------------------------------------------------- large objects

group("objects_large", "100 MiB numpy arrays: put bandwidth against a plain copy; get latency")


def _array(nbytes: int):
    import numpy as np

    return np.full(nbytes // 8, 1, dtype=np.int64)  # pages written, unlike np.zeros


@metric("put_gigabytes", "objects_large", "GB/s", "higher", "put of a 100 MiB int64 array, ref dropped, repeat")
def put_gigabytes(c: Ctx):
    arr = _array(100 * MIB)

    def put():
        ref = c.ray.put(arr)
        del ref

    ops, detail = rate(put, min_reps=3)
    return ops * arr.nbytes / 1e9, detail


@metric("put_gigabytes_held", "objects_large", "GB/s", "higher",
        "8 puts of the 100 MiB array, all refs kept: 800 MiB of store memory not reused")
def put_gigabytes_held(c: Ctx):
    arr = _array(100 * MIB)
    t = time.perf_counter()
    refs = [c.ray.put(arr) for _ in range(8)]
    elapsed = time.perf_counter() - t
    del refs
    return 8 * arr.nbytes / elapsed / 1e9, {"seconds": elapsed}


@metric("numpy_copy", "objects_large", "GB/s", "higher",
        "np.copyto of the same array into a preallocated one: the memory-bandwidth limit")
def numpy_copy(c: Ctx):
    import numpy as np

    arr = _array(100 * MIB)
    dst = np.empty_like(arr)
    ops, detail = rate(lambda: np.copyto(dst, arr), min_reps=3)
    fresh, _ = rate(lambda: arr.copy(), min_reps=3, budget=0.5)
    detail["fresh_copy_gbps"] = fresh * arr.nbytes / 1e9
    return ops * arr.nbytes / 1e9, detail


def _get_latency(c: Ctx, nbytes: int):
    ref = c.ray.put(_array(nbytes))

    def get():
        value = c.ray.get(ref)
        del value

    seconds, detail = per_call(get, budget=0.5, max_reps=500)
    return seconds * 1e3, {k: v * 1e3 if k != "reps" else v for k, v in detail.items()}


@metric("get_large", "objects_large", "ms", "lower", "get of a 100 MiB array ref (median of many)")
def get_large(c: Ctx):
    return _get_latency(c, 100 * MIB)


@metric("get_1mib", "objects_large", "ms", "lower", "get of a 1 MiB array ref: get_large should match it")
def get_1mib(c: Ctx):
    return _get_latency(c, MIB)


@metric("get_1kib", "objects_large", "ms", "lower", "get of a 1 KiB array ref (travels inline in peer)")
def get_1kib(c: Ctx):
    return _get_latency(c, 1024)


group("objects_gib", "1 GiB numpy arrays: put bandwidth against a plain copy; get latency")


@metric("put_1gib", "objects_gib", "GB/s", "higher", "put of a 1 GiB int64 array, ref dropped, repeat")
def put_1gib(c: Ctx):
    arr = _array(1024 * MIB)

    def put():
        ref = c.ray.put(arr)
        del ref

    ops, detail = rate(put, min_reps=3, budget=2.0)
    return ops * arr.nbytes / 1e9, detail


@metric("numpy_copy_1gib", "objects_gib", "GB/s", "higher",
        "np.copyto of the same 1 GiB array into a preallocated one: the memory-bandwidth limit")
def numpy_copy_1gib(c: Ctx):
    import numpy as np

    arr = _array(1024 * MIB)
    dst = np.empty_like(arr)
    ops, detail = rate(lambda: np.copyto(dst, arr), min_reps=3, budget=2.0)
    return ops * arr.nbytes / 1e9, detail


@metric("get_1gib", "objects_gib", "ms", "lower", "get of a 1 GiB array ref: the same cost as 1 KiB in a zero-copy store")
def get_1gib(c: Ctx):
    return _get_latency(c, 1024 * MIB)


# --------------------------------------------------------------------------- refs

group("refs", "objects that hold many refs, and wait")


@metric("get_object_containing_10k_refs", "refs", "s", "lower",
        "a task puts 10,000 small objects and returns their refs; the driver gets the list")
def get_object_containing_10k_refs(c: Ctx):
    def once():
        refs = c.ray.get(c.r.make_refs.remote(10_000))
        assert len(refs) == 10_000
    return per_call(once, budget=1.0, min_reps=2, max_reps=5, warmup=False)


@metric("wait_1k_refs", "refs", "s", "lower",
        "1,000 no-op tasks, then wait(num_returns=1) until none is left")
def wait_1k_refs(c: Ctx):
    def once():
        not_ready = [c.r.noop.remote() for _ in range(1000)]
        while not_ready:
            _, not_ready = c.ray.wait(not_ready)
    return per_call(once, budget=1.0, min_reps=2, max_reps=5)


# --------------------------------------------------------------------------- seed post: weights dict

group("weights", "the seed post's weights dict: 10 x 5,000,000 float64 (400 MB)")


@functools.cache
def _weights():
    import numpy as np

    rng = np.random.default_rng(0)
    return {f"Variable{i}": rng.standard_normal(5_000_000) for i in range(10)}


@metric("weights_pickle_dumps", "weights", "s", "lower", "pickle.dumps(weights)")
def weights_pickle_dumps(c: Ctx):
    w = _weights()
    return per_call(lambda: pickle.dumps(w), budget=0, min_reps=2, warmup=False)


@metric("weights_pickle_loads", "weights", "s", "lower", "pickle.loads of the pickled weights")
def weights_pickle_loads(c: Ctx):
    blob = pickle.dumps(_weights())
    return per_call(lambda: pickle.loads(blob), budget=0, min_reps=2, warmup=False)


@metric("weights_put", "weights", "s", "lower", "put(weights), ref dropped")
def weights_put(c: Ctx):
    w = _weights()

    def put():
        ref = c.ray.put(w)
        del ref
    return per_call(put, budget=0, min_reps=3, warmup=False)


@metric("weights_get", "weights", "s", "lower", "get of the weights ref")
def weights_get(c: Ctx):
    ref = c.ray.put(_weights())

    def get():
        value = c.ray.get(ref)
        del value
    return per_call(get, budget=0.2, min_reps=5, warmup=False)


# --------------------------------------------------------------------------- seed post: 8 x sleep(1)

group("sleep_tasks", "the seed post's 8 tasks of time.sleep(1) with 8 slots", num_cpus=8)


@metric("sleep_tasks_first_s", "sleep_tasks", "s", "lower",
        "first batch of 8 x sleep(1) right after init(num_cpus=8): includes starting workers", ("api",))
def sleep_tasks_first(c: Ctx):
    t = time.perf_counter()
    c.ray.get([c.r.sleep1.remote() for _ in range(8)])
    return time.perf_counter() - t, {}


@metric("sleep_tasks_first_s", "sleep_tasks", "s", "lower", "", ("mp",))
def sleep_tasks_first_mp(c: Ctx):
    t = time.perf_counter()
    [h.get() for h in [c.pool.apply_async(_mp_sleep1) for _ in range(8)]]
    return time.perf_counter() - t, {}


@metric("sleep_tasks_s", "sleep_tasks", "s", "lower", "a second batch of 8 x sleep(1): ideal is 1 s", ("api",))
def sleep_tasks(c: Ctx):
    return sleep_tasks_first(c)


@metric("sleep_tasks_s", "sleep_tasks", "s", "lower", "", ("mp",))
def sleep_tasks_mp(c: Ctx):
    return sleep_tasks_first_mp(c)


# --------------------------------------------------------------------------- driver


def run_group(backend: str, only: str, emit) -> dict:
    grp, selected = resolve(only)
    kind = kind_of(backend)
    selected = [m for m in selected if kind in METRICS[m].impls]
    info: dict = {"group": grp.name, "notes": []}
    if not selected:
        info["notes"].append(f"no {backend} implementation")
        return info
    if grp.name == "init":
        info["notes"] += run_init(backend, selected, emit)
    else:
        ctx = start(backend, grp.num_cpus or CORES)
        try:
            for name in selected:
                try:
                    value, detail = METRICS[name].impls[kind](ctx)
                    emit(name, value, detail)
                except Exception as e:  # one failing workload must not hide the others
                    emit(name, None, {}, error=f"{type(e).__name__}: {e}", tb=traceback.format_exc())
        finally:
            info["notes"] += ctx.notes
            stop(ctx)
    gone_s, left = wait_children_gone()
    info["children_gone_after_s"] = gone_s
    info["children_left"] = [procs.cmdline(p)[:200] for p in left]
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=BACKENDS)
    p.add_argument("--only", help="a group or a metric name (see --list)")
    p.add_argument("--json", action="store_true", help="one JSON line per metric on stdout")
    p.add_argument("--list", action="store_true", help="list groups and metrics")
    args = p.parse_args(argv)
    if args.list:
        for g in GROUPS.values():
            print(f"{g.name}: {g.doc}")
            for name in g.metrics:
                m = METRICS[name]
                print(f"  {name:32} {m.unit:8} ({'/'.join(m.impls)}) {m.doc}")
        return 0
    if not args.backend or not args.only:
        p.error("--backend and --only are required (or --list)")

    def emit(name, value, detail, error=None, tb=None):
        m = METRICS[name]
        rec = {"bench": 1, "backend": args.backend, "metric": name, "value": value, "unit": m.unit,
               "detail": detail}
        if error:
            rec["error"] = error
        if args.json:
            print(json.dumps(rec), flush=True)
        elif error:
            print(f"{name:32} ERROR {error}\n{tb or ''}", flush=True)
        else:
            print(f"{name:32} {value:14.4f} {m.unit}", flush=True)

    info = run_group(args.backend, args.only, emit)
    if args.json:
        print(json.dumps({"bench": 1, "backend": args.backend, "event": "done", **info}), flush=True)
    elif info["notes"] or info.get("children_left"):
        print(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
