"""``peer.util``: ``ActorPool``, ``queue.Queue`` and ``multiprocessing.Pool``, with Ray's semantics.

The first tests run on one in-process peer (the module's ``cluster`` fixture: 4 CPUs). The last
three run each helper across two ``peer up`` daemons (``peers.py``): a driver attached to peer
``a`` pins the actors, the queue and its consumers to peer ``b`` with the custom resource ``b``,
and checks where they ran.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue as stdlib_queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import peer as ray
from peer import exceptions
from peer.util import ActorPool
from peer.util.multiprocessing import Pool, RemoteTraceback
from peer.util.queue import Empty, Full, Queue
from peers import Daemon, Launcher, cluster, run_driver

SLACK_S = 1.0  # how late a timeout may fire on a loaded 2-core machine


@ray.remote
class Doubler:
    def double(self, v: int) -> int:
        return 2 * v

    def slow_double(self, v: int, seconds: float) -> int:
        time.sleep(seconds)
        return 2 * v

    def die(self) -> None:
        os._exit(1)

    @ray.method(num_returns=2)
    def pair(self, v: int) -> tuple[int, int]:
        return v, -v


# -- ActorPool ----------------------------------------------------------------------------------


def test_actor_pool_map_keeps_order_and_map_unordered_returns_every_result(cluster: dict[str, Any]) -> None:
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    assert list(pool.map(lambda a, v: a.double.remote(v), range(8))) == [2 * v for v in range(8)]
    # Later values finish first: map still yields in input order, map_unordered in finishing order.
    delays = [0.3, 0.0, 0.0, 0.0]
    ordered = pool.map(lambda a, v: a.slow_double.remote(v, delays[v]), range(4))
    assert list(ordered) == [0, 2, 4, 6]
    unordered = list(pool.map_unordered(lambda a, v: a.slow_double.remote(v, delays[v]), range(4)))
    assert sorted(unordered) == [0, 2, 4, 6]
    assert unordered[0] != 0  # the 0.3 s call was not the first to finish
    # map drops results nobody took before submitting the new values.
    pool.submit(lambda a, v: a.double.remote(v), 100)
    assert list(pool.map(lambda a, v: a.double.remote(v), [1, 2])) == [2, 4]
    assert not pool.has_next()


def test_actor_pool_submit_get_next_timeouts_and_idle_actors(cluster: dict[str, Any]) -> None:
    a1, a2, a3 = Doubler.remote(), Doubler.remote(), Doubler.remote()
    pool: ActorPool[int] = ActorPool([a1])
    with pytest.raises(StopIteration):
        pool.get_next()
    for v in range(3):  # one actor: two of them wait in the pool
        pool.submit(lambda a, v: a.double.remote(v), v)
    assert pool.has_next() and not pool.has_free()
    assert [pool.get_next(), pool.get_next(), pool.get_next()] == [0, 2, 4]
    assert not pool.has_next() and pool.has_free()

    pool.submit(lambda a, v: a.slow_double.remote(v, 0.6), 5)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="Timed out waiting for result"):
        pool.get_next(timeout=0.1)
    assert 0.1 <= time.monotonic() - start < 0.1 + SLACK_S
    assert pool.has_next()  # still there: it was not ignored
    assert pool.get_next() == 10

    pool.submit(lambda a, v: a.slow_double.remote(v, 0.6), 6)
    pool.submit(lambda a, v: a.double.remote(v), 7)
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next(timeout=0.05, ignore_if_timedout=True)
    assert pool.get_next() == 14  # moved on past the ignored call

    pair = ActorPool([a2, a3])
    pair.submit(lambda a, v: a.slow_double.remote(v, 0.5), 1)
    pair.submit(lambda a, v: a.double.remote(v), 2)
    assert pair.get_next_unordered() == 4  # the second call finished first
    with pytest.raises(ValueError, match="get_next\\(\\) after get_next_unordered"):
        pair.get_next()
    assert pair.get_next_unordered(timeout=30) == 2

    pool.submit(lambda a, v: a.slow_double.remote(v, 0.6), 3)
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.05)
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next_unordered(timeout=0.05, ignore_if_timedout=True)
    assert not pool.has_next()

    # pop_idle / push, as in Ray's tests.
    pool = ActorPool([a1])
    pool.submit(lambda a, v: a.double.remote(v), 1)
    assert pool.pop_idle() is None
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(a1)
    pool.push(a2)
    assert pool.has_free()
    pool.submit(lambda a, v: a.double.remote(v), 2)
    pool.submit(lambda a, v: a.double.remote(v), 3)
    assert not pool.has_free()
    pool.push(a3)  # takes the waiting value at once
    assert not pool.has_free()
    assert sorted(pool.get_next_unordered() for _ in range(3)) == [2, 4, 6]
    assert pool.pop_idle() in (a1, a2, a3)
    with pytest.raises(TypeError, match="must return the ObjectRef"):
        pool.submit(lambda a, v: v, 1)


def test_actor_pool_multiple_returns_and_a_dead_actor_leaves_the_pool(cluster: dict[str, Any]) -> None:
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    for v in range(4):
        pool.submit(lambda a, v: a.pair.remote(v), v)
    assert [pool.get_next(timeout=30) for _ in range(4)] == [[v, -v] for v in range(4)]

    doomed, healthy = Doubler.remote(), Doubler.remote()
    pool = ActorPool([healthy, doomed])  # submit() takes the last idle actor first
    pool.submit(lambda a, v: a.die.remote(), None)
    with pytest.raises(exceptions.ActorDiedError):
        pool.get_next()
    assert list(pool.map(lambda a, v: a.double.remote(v), range(4))) == [0, 2, 4, 6]
    assert pool.pop_idle() == healthy and pool.pop_idle() is None


# -- queue.Queue --------------------------------------------------------------------------------


def test_queue_fifo_sizes_batches_and_errors(cluster: dict[str, Any]) -> None:
    assert issubclass(Empty, stdlib_queue.Empty) and issubclass(Full, stdlib_queue.Full)
    q = Queue(maxsize=3)
    assert q.empty() and not q.full() and q.qsize() == 0 and len(q) == 0
    for item in ["a", {"b": 1}, None]:
        q.put(item)
    assert q.full() and q.size() == 3 and len(q) == 3
    with pytest.raises(Full):
        q.put_nowait("d")
    with pytest.raises(Full):
        q.put("d", block=False)
    assert q.peek() == "a" and q.qsize() == 3
    assert [q.get(), q.get_nowait(), q.get(block=False)] == ["a", {"b": 1}, None]
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(Empty):
        q.peek()

    with pytest.raises(Full, match="Cannot add 4 items to queue of size 0 and maxsize 3"):
        q.put_nowait_batch([1, 2, 3, 4])
    q.put_nowait_batch(iter([1, 2]))
    with pytest.raises(Empty, match="Cannot get 3 items from queue of size 2"):
        q.get_nowait_batch(3)
    assert q.get_nowait_batch(0) == [] and q.qsize() == 2
    assert q.get_nowait_batch(2) == [1, 2]
    big = Queue()
    big.put_nowait_batch(range(100))
    assert big.get_nowait_batch(100) == list(range(100))

    ref = ray.put("in the store")
    q.put(ref)  # stored as the ref, not its value
    out = q.get()
    assert isinstance(out, ray.ObjectRef) and ray.get(out) == "in the store"
    q.put(1)
    q.clear()
    assert q.empty()

    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)
    with pytest.raises(ValueError, match="non-negative"):
        q.put(1, timeout=-1)
    with pytest.raises(TypeError):
        q.put_nowait_batch(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        q.get_nowait_batch("2")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        q.get_nowait_batch(-1)
    with pytest.raises(TypeError):
        Queue(maxsize="3")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Queue(maxsize=-1)
    with pytest.raises(TypeError):
        Queue(actor_options=[1, 2])  # type: ignore[arg-type]

    actor = q.actor
    assert actor is not None
    q.shutdown()
    q.shutdown()  # a second time does nothing
    assert q.actor is None
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(actor.qsize.remote(), timeout=30)
    with pytest.raises(RuntimeError, match="shut down"):
        q.put(1)
    big.shutdown(force=True)


def test_queue_timeouts_are_honoured(cluster: dict[str, Any]) -> None:
    q = Queue(maxsize=1)
    for timeout in (0.0, 0.3):
        start = time.monotonic()
        with pytest.raises(Empty):
            q.get(timeout=timeout)
        took = time.monotonic() - start
        assert timeout <= took < timeout + SLACK_S, took
    q.put("x")
    start = time.monotonic()
    with pytest.raises(Full):
        q.put("y", timeout=0.3)
    assert 0.3 <= time.monotonic() - start < 0.3 + SLACK_S
    assert q.get(timeout=0.3) == "x"
    q.shutdown()


@ray.remote
def put_later(q: Queue, items: list[Any], delay: float) -> None:
    time.sleep(delay)
    for item in items:
        q.put(item)


@ray.remote
def get_later(q: Queue, n: int, delay: float) -> list[Any]:
    time.sleep(delay)
    return [q.get(timeout=30) for _ in range(n)]


def test_queue_blocking_calls_wake_when_a_task_acts(cluster: dict[str, Any]) -> None:
    q = Queue(maxsize=2)
    start = time.monotonic()
    done = put_later.remote(q, ["late"], 0.3)
    assert q.get(timeout=30) == "late"
    assert 0.3 <= time.monotonic() - start < 0.3 + 5
    ray.get(done)

    q.put_nowait_batch([1, 2])
    taken = get_later.remote(q, 3, 0.3)
    start = time.monotonic()
    q.put(3, timeout=30)  # blocks until the task has taken one
    assert time.monotonic() - start >= 0.25
    assert ray.get(taken) == [1, 2, 3]
    q.shutdown()


@ray.remote
class Consumer:
    def drain(self, q: Queue) -> list[tuple[int, int]]:
        got = []
        while True:
            item = q.get(timeout=30)
            if item is None:
                return got
            got.append(item)


@ray.remote
def produce(q: Queue, producer: int, n: int) -> None:
    for i in range(n):
        q.put((producer, i))


def test_queue_many_producers_and_consumers_lose_nothing_and_keep_fifo(cluster: dict[str, Any]) -> None:
    q = Queue(maxsize=4)  # small: producers block and poll
    consumers = [Consumer.remote() for _ in range(2)]
    drained = [c.drain.remote(q) for c in consumers]
    producers, n = 3, 40
    ray.get([produce.remote(q, p, n) for p in range(producers)], timeout=60)
    for _ in consumers:
        q.put(None)
    got = ray.get(drained, timeout=60)
    assert sorted(item for part in got for item in part) == [(p, i) for p in range(producers) for i in range(n)]
    for part in got:  # each consumer saw each producer's items in the order they were put
        for p in range(producers):
            seen = [i for pp, i in part if pp == p]
            assert seen == sorted(seen)
    q.shutdown()


def test_queue_async_put_and_get(cluster: dict[str, Any]) -> None:
    q = Queue(maxsize=1)

    async def main() -> list[Any]:
        await q.put_async(1)
        with pytest.raises(Full):
            await q.put_async(2, block=False)
        with pytest.raises(Full):
            await q.put_async(2, timeout=0.1)
        first = await q.get_async()
        with pytest.raises(Empty):
            await q.get_async(block=False)
        start = time.monotonic()
        with pytest.raises(Empty):
            await q.get_async(timeout=0.2)
        assert 0.2 <= time.monotonic() - start < 0.2 + SLACK_S
        return [first]

    assert asyncio.run(main()) == [1]
    q.shutdown()


# -- multiprocessing.Pool -----------------------------------------------------------------------

_process_state: dict[str, Any] = {}


def remember(tag: str) -> None:
    _process_state["tag"] = tag
    _process_state["inits"] = _process_state.get("inits", 0) + 1


def whoami(_: object = None) -> tuple[int, str, int]:
    return os.getpid(), _process_state.get("tag", ""), _process_state.get("inits", 0)


def square(x: int) -> int:
    return x * x


def add(a: int, b: int, c: int = 0) -> int:
    return a + b + c


def fail_on_three(x: int) -> int:
    if x == 3:
        raise KeyError(f"no {x}")
    return x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_pool_map_apply_starmap_imap_and_initializer(cluster: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="only 4 CPUs"):
        Pool(processes=5)
    with pytest.raises(ValueError):
        Pool(processes=0)
    with Pool(processes=3, initializer=remember, initargs=("ready",)) as pool:
        assert pool.map(square, range(100)) == [x * x for x in range(100)]
        assert pool.map(square, iter(range(10)), chunksize=3) == [x * x for x in range(10)]
        assert pool.map(square, []) == []
        assert pool.starmap(add, [(1, 2), (3, 4, 5)]) == [3, 12]
        assert pool.apply(add, (1, 2), {"c": 3}) == 6
        assert pool.apply(add, (1,), kwargs={"b": 2}) == 3
        assert list(pool.imap(square, iter(range(20)), chunksize=3)) == [x * x for x in range(20)]
        assert sorted(pool.imap_unordered(square, range(20))) == [x * x for x in range(20)]
        seen = pool.map(whoami, range(30), chunksize=1)
        assert len({pid for pid, _, _ in seen}) == 3  # the chunks were spread over every process
        assert {(tag, inits) for _, tag, inits in seen} == {("ready", 1)}  # initializer ran once each
        assert os.getpid() not in {pid for pid, _, _ in seen}


def test_pool_errors_reraise_at_get_and_async_results(cluster: dict[str, Any]) -> None:
    with Pool(processes=2) as pool:
        with pytest.raises(KeyError, match="no 3") as info:
            pool.map(fail_on_three, range(6))
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "fail_on_three" in str(info.value.__cause__)
        with pytest.raises(TypeError):
            pool.apply(add, (1,))

        events: list[Any] = []
        ok = pool.map_async(square, range(10), callback=events.append)
        assert ok.get(timeout=30) == [x * x for x in range(10)]
        assert ok.ready() and ok.successful()
        assert events == [[x * x for x in range(10)]]  # ran before get() returned
        bad = pool.map_async(fail_on_three, range(6), error_callback=events.append)
        bad.wait(timeout=30)
        assert bad.ready() and not bad.successful()
        assert isinstance(events[-1], KeyError)
        with pytest.raises(KeyError):
            bad.get()

        slow = pool.apply_async(nap, (0.8,))
        with pytest.raises(ValueError, match="not ready"):
            slow.successful()
        start = time.monotonic()
        with pytest.raises(multiprocessing.TimeoutError):
            slow.get(timeout=0.1)
        assert 0.1 <= time.monotonic() - start < 0.1 + SLACK_S
        slow.wait(0.05)
        assert not slow.ready()
        assert slow.get(timeout=30) == 0.8

        it = pool.imap(nap, [0.8, 0.0])
        with pytest.raises(multiprocessing.TimeoutError):
            it.next(timeout=0.1)
        assert list(it) == [0.8, 0.0]
        it = pool.imap(fail_on_three, range(5))  # an error raises at its place; the rest go on
        assert [next(it), next(it), next(it)] == [0, 1, 2]
        with pytest.raises(KeyError):
            next(it)
        assert list(it) == [4]

    # close: the work given finishes; terminate: it fails.
    pool = Pool(processes=2)
    with pytest.raises(ValueError, match="still running"):
        pool.join()
    given = pool.map_async(nap, [0.3, 0.3])
    rest = pool.imap(square, range(6))
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(square, [1])
    pool.join()
    assert given.ready() and given.get() == [0.3, 0.3]
    assert list(rest) == [x * x for x in range(6)]

    pool = Pool(processes=2)
    stuck = pool.map_async(nap, [30, 30])
    pool.terminate()
    pool.join()
    stuck.wait(timeout=30)
    assert stuck.ready() and not stuck.successful()
    with pytest.raises(exceptions.ActorDiedError):
        stuck.get()


def test_pool_maxtasksperchild_replaces_processes(cluster: dict[str, Any]) -> None:
    with Pool(processes=2, maxtasksperchild=1, initializer=remember, initargs=("fresh",)) as pool:
        seen = pool.map(whoami, range(6), chunksize=1)
        assert len({pid for pid, _, _ in seen}) == 6
        assert {(tag, inits) for _, tag, inits in seen} == {("fresh", 1)}
        pool.close()
        pool.join()


# -- across two peers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    """Peer ``a`` (1 CPU, runs the drivers) and peer ``b`` (2 CPUs and the resource ``b``)."""
    launcher = Launcher(Path(tmp_path_factory.mktemp("util-peers")))
    try:
        a, b = cluster(launcher, [("a", ["--num-cpus", "1"]), ("b", ["--num-cpus", "2", "--resource", "b=4"])])
        yield a, b
    finally:
        launcher.close()


ACTOR_POOL_DRIVER = """
from peer.util import ActorPool

@ray.remote(resources={"b": 1})
class Worker:
    def work(self, v):
        time.sleep(0.05 * (v % 3))
        return v * 10, ray.get_runtime_context().get_node_id()

pool = ActorPool([Worker.remote(), Worker.remote()])
ordered = list(pool.map(lambda a, v: a.work.remote(v), range(12)))
unordered = list(pool.map_unordered(lambda a, v: a.work.remote(v), range(12)))
print(json.dumps({"ordered": ordered, "unordered": unordered,
                  "here": ray.get_runtime_context().get_node_id()}))
"""


def test_actor_pool_across_two_peers(two_peers: tuple[Daemon, Daemon]) -> None:
    a, b = two_peers
    out = run_driver(a, ACTOR_POOL_DRIVER, timeout=60)
    assert out["here"] == a.peer_id
    assert [v for v, _ in out["ordered"]] == [v * 10 for v in range(12)]
    assert sorted(v for v, _ in out["unordered"]) == [v * 10 for v in range(12)]
    assert {node for _, node in out["ordered"] + out["unordered"]} == {b.peer_id}


QUEUE_DRIVER = """
from peer.util.queue import Empty, Queue

@ray.remote(resources={"b": 1})
def consume(q, replies):
    got = []
    while True:
        try:
            item = q.get(timeout=0.5)
        except Empty:
            break
        got.append(item)
        replies.put(item * 2)
    return got, ray.get_runtime_context().get_node_id()

q = Queue(actor_options={"resources": {"b": 1}})
replies = Queue(maxsize=2)
where = ray.get_runtime_context().get_node_id()
done = consume.remote(q, replies)
doubled = []
for i in range(20):
    q.put(i)
    if i % 2:
        doubled.append(replies.get(timeout=30))
while len(doubled) < 20:
    doubled.append(replies.get(timeout=30))
got, node = ray.get(done, timeout=60)
start = time.monotonic()
try:
    replies.get(timeout=0.3)
    late = None
except Empty:
    late = time.monotonic() - start
print(json.dumps({"got": got, "doubled": doubled, "consumer": node, "here": where, "late": late}))
"""


def test_queue_across_two_peers(two_peers: tuple[Daemon, Daemon]) -> None:
    a, b = two_peers
    out = run_driver(a, QUEUE_DRIVER, timeout=90)
    assert out["here"] == a.peer_id and out["consumer"] == b.peer_id
    assert out["got"] == list(range(20))
    assert out["doubled"] == [2 * i for i in range(20)]
    assert 0.3 <= out["late"] < 0.3 + SLACK_S


POOL_DRIVER = """
import os
from peer.util.multiprocessing import Pool

def init(tag):
    # Functions defined in __main__ travel by value, each with its own copy of this module's
    # globals: the initializer leaves its mark in the process's environment instead.
    os.environ["POOL_TAG"] = tag

def where(x):
    return x * x, os.environ["POOL_TAG"], os.getpid(), ray.get_runtime_context().get_node_id()

def boom(x):
    raise ZeroDivisionError(f"boom {x}")

with Pool(processes=2, initializer=init, initargs=("on b",),
          ray_remote_args={"resources": {"b": 1}}) as pool:
    mapped = pool.map(where, range(16), chunksize=2)
    imapped = list(pool.imap(where, range(6)))
    try:
        pool.apply(boom, (7,))
        error = None
    except ZeroDivisionError as e:
        error = str(e)
print(json.dumps({"mapped": mapped, "imapped": imapped, "error": error}))
"""


def test_pool_across_two_peers(two_peers: tuple[Daemon, Daemon]) -> None:
    a, b = two_peers
    out = run_driver(a, POOL_DRIVER, timeout=60)
    rows = out["mapped"] + out["imapped"]
    assert [r[0] for r in out["mapped"]] == [x * x for x in range(16)]
    assert [r[0] for r in out["imapped"]] == [x * x for x in range(6)]
    assert {r[1] for r in rows} == {"on b"}
    assert {r[3] for r in rows} == {b.peer_id}
    assert len({r[2] for r in rows}) == 2
    assert out["error"] == "boom 7"
