"""Edges of the Ray API that Ray's docs and tests pin down: argument binding at the call, actor class
attributes / static / class / inherited methods, Ray-only ``init()`` options, namespaces,
``get``/``wait`` with ``timeout=0``, unpicklable exceptions and the RayTaskError shape, and an
``await`` that never resolves not holding up interpreter exit.

The tests that start a cluster with their own ``init()`` arguments come first; the rest share one
module cluster (started by the first test that asks for it).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import peer as ray
import peer._native
import peer._runtime
from peer import exceptions
from peer._remote_function import ArgSpec
from peer.exceptions import GetTimeoutError

# ---- classes and functions the workers import from this module -------------------------------


@ray.remote
def add(a: int, b: int = 1, *, c: int = 0) -> int:
    return a + b + c


@ray.remote
def sleep_then(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


class Grandparent:
    GRANDPARENT = 2

    @staticmethod
    def grandparent_static() -> int:
        assert Grandparent.GRANDPARENT == 2
        return 1


class Parent1(Grandparent):
    PARENT1 = 6

    @staticmethod
    def parent1_static() -> int:
        assert Parent1.PARENT1 == 6
        return 2

    def parent1(self, x: int) -> int:
        return x + Parent1.PARENT1


class Parent2:
    PARENT2 = 7

    def __init__(self, start: int) -> None:
        self.start = start

    def parent2(self) -> int:
        return self.start + Parent2.PARENT2


@ray.remote
class Family(Parent1, Parent2):
    """Ray's test_actor_static_attributes / test_actor_class_attributes, as one module-level actor."""

    X = 3

    @staticmethod
    def f() -> int:
        assert Family.GRANDPARENT == 2
        assert Family.PARENT1 == 6
        assert Family.PARENT2 == 7
        assert Family.X == 3
        return 4

    @classmethod
    def cm(cls, y: int) -> tuple[str, int]:
        return cls.__name__, cls.X + y

    def g(self) -> int:
        assert Family.GRANDPARENT == 2
        assert Family.PARENT1 == 6
        assert Family.PARENT2 == 7
        assert Family.f() == 4
        assert Family.cm(1) == ("Family", 4)
        assert Family.grandparent_static() == 1 and Family.parent1_static() == 2
        return Family.X


@ray.remote
class Counter:
    def __init__(self, start: int, step: int = 1) -> None:
        self.n = start
        self.step = step

    def incr(self, by: int | None = None) -> int:
        self.n += self.step if by is None else by
        return self.n

    def tag(self) -> str:
        return f"counter-{self.n}"

    @staticmethod
    def double(x: int) -> int:
        return 2 * x

    @classmethod
    def kind(cls, suffix: str) -> str:
        return cls.__name__ + suffix

    def namespace(self) -> str | None:
        return ray.get_runtime_context().namespace

    def lookup_and_tag(self, name: str) -> str:
        return str(ray.get(ray.get_actor(name).tag.remote()))


@ray.remote
class NoInit:
    def ping(self) -> str:
        return "pong"


@ray.remote
def call_with_bad_arguments(counter: Any) -> str:
    try:
        counter.incr.remote(1, 2)
    except TypeError as e:
        return str(e)
    return "no error"


@ray.remote
def namespace_in_task() -> str | None:
    return ray.get_runtime_context().namespace


@ray.remote
def tag_of_named(name: str) -> str:
    return str(ray.get(ray.get_actor(name).tag.remote()))


class NeedsTwoArgs(Exception):
    """Pickles (args holds the message) but does not unpickle: __init__ takes two arguments."""

    def __init__(self, item: str, count: int) -> None:
        super().__init__(f"{count} x {item} missing")
        self.item = item
        self.count = count


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], list[Any]]:
    """``spy(name)`` counts calls of ``peer._native.<name>`` (and still makes them)."""

    def install(name: str) -> list[Any]:
        calls: list[Any] = []
        real = getattr(peer._native, name)

        def recording(*args: Any, **kwargs: Any) -> Any:
            calls.append(args)
            return real(*args, **kwargs)

        monkeypatch.setattr(peer._native, name, recording)
        return calls

    return install


# ---- init() arguments and namespaces given to init (own clusters) -----------------------------


def test_init_accepts_ray_only_options_with_one_warning_each(
    make_cluster: Callable[..., dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    peer._runtime._warned_options.clear()
    with caplog.at_level(logging.WARNING, logger="peer"):
        make_cluster(
            num_cpus=2,
            include_dashboard=False,  # what peer does anyway: no warning
            configure_logging=False,
            log_to_driver=False,
            dashboard_host="0.0.0.0",
            _system_config={"object_timeout_milliseconds": 200},
            _temp_dir="/tmp/ray",
            logging_level="info",
        )
    warned = [r.getMessage() for r in caplog.records if r.name == "peer" and r.levelno == logging.WARNING]
    for option in ("log_to_driver", "dashboard_host", "_system_config", "_temp_dir"):
        assert sum(f"peer.init({option}=" in m for m in warned) == 1, (option, warned)
    assert not any("include_dashboard" in m or "configure_logging" in m for m in warned), warned
    assert all("\n" not in m for m in warned), "each warning is one line"
    assert ray.get(add.remote(1)) == 2, "the cluster works"


def test_init_rejects_arguments_ray_rejects_too(state_dir: str) -> None:
    for call in (
        lambda: ray.init(_state_dir=state_dir, num_cpu=2),
        lambda: ray.init(_state_dir=state_dir, _not_a_ray_option=1),
    ):
        with pytest.raises(TypeError, match="unknown keyword argument") as info:
            call()
        assert isinstance(info.value, RuntimeError), "Ray raises RuntimeError for these"
        assert not ray.is_initialized(), "rejected before any node started"
    with pytest.raises(ValueError, match="namespace"):
        ray.init(_state_dir=state_dir, namespace="")
    with pytest.raises(ValueError, match="Ray Client"):
        ray.init("ray://127.0.0.1:10001", _state_dir=state_dir)
    assert not ray.is_initialized()


def test_named_actors_live_in_namespaces(make_cluster: Callable[..., dict[str, Any]]) -> None:
    """Ray's test_actor_namespace and the namespaces guide, in one job with namespace="colors"."""
    make_cluster(num_cpus=2, namespace="colors")
    assert ray.get_runtime_context().namespace == "colors"
    orange = Counter.options(name="orange").remote(1)
    assert ray.get_actor("orange") == orange
    assert ray.get_actor("orange", namespace="colors") == orange
    with pytest.raises(ValueError, match="'orange' in namespace 'fruits'"):
        ray.get_actor("orange", namespace="fruits")
    # The same name in another namespace is another actor.
    fruit = Counter.options(name="orange", namespace="fruits").remote(100)
    assert fruit != orange and ray.get_actor("orange", namespace="fruits") == fruit
    assert ray.get([orange.tag.remote(), fruit.tag.remote()]) == ["counter-1", "counter-100"]
    with pytest.raises(ValueError, match=r"The name orange \(namespace=colors\) is already taken") as info:
        Counter.options(name="orange").remote(2)
    assert "\x00" not in str(info.value)
    # get_if_exists: the existing actor, or a new one when there is none (Ray's get-or-create).
    assert Counter.options(name="orange", get_if_exists=True).remote(3) == orange
    lime = Counter.options(name="lime", namespace="fruits", get_if_exists=True).remote(7)
    assert ray.get(ray.get_actor("lime", namespace="fruits").tag.remote()) == "counter-7"
    assert Counter.options(name="lime", namespace="fruits", get_if_exists=True).remote(8) == lime
    with pytest.raises(ValueError, match="get_if_exists"):
        Counter.options(get_if_exists=True)
    # Tasks and actors run in the job's namespace: their get_actor() finds the job's actors.
    assert ray.get(namespace_in_task.remote()) == "colors"
    assert ray.get(tag_of_named.remote("orange")) == "counter-1"
    assert ray.get(fruit.namespace.remote()) == "colors", "an actor runs in its creator's namespace"
    assert ray.get(fruit.lookup_and_tag.remote("orange")) == "counter-1"


def test_the_default_namespace_is_anonymous_per_job(make_cluster: Callable[..., dict[str, Any]]) -> None:
    info = make_cluster(num_cpus=2)
    mine = ray.get_runtime_context().namespace
    assert mine is not None and str(uuid.UUID(mine)) == mine, "a UUID, as in Ray"
    assert ray.get(namespace_in_task.remote()) == mine
    keeper = Counter.options(name="keeper").remote(5)
    assert ray.get(keeper.tag.remote()) == "counter-5"
    # A second job attached to the same node has its own anonymous namespace.
    script = textwrap.dedent(
        f"""
        import peer as ray
        ray.init(address={info["socket"]!r})
        try:
            ray.get_actor("keeper")
            print("found-in-own-namespace")
        except ValueError:
            print("not-in-own-namespace")
        other = ray.get_actor("keeper", namespace={mine!r})
        print(ray.get(other.tag.remote()))
        ray.shutdown()
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["not-in-own-namespace", "counter-5"], out.stdout


# ---- the module cluster ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(cluster: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield cluster


pytestmark_shared = pytest.mark.usefixtures("shared")


@pytestmark_shared
def test_task_arguments_are_bound_before_anything_is_submitted(spy: Callable[[str], list[Any]]) -> None:
    submitted = spy("submit_task")
    registered = spy("register_function")
    bad: list[tuple[tuple[Any, ...], dict[str, Any], str]] = [
        ((), {}, "missing a required argument: 'a'"),
        ((1, 2, 3), {}, "too many positional arguments"),
        ((1,), {"d": 4}, "got an unexpected keyword argument 'd'"),
        ((1,), {"a": 1}, "multiple values for argument 'a'"),
        ((1, 2, 3), {"c": 1}, "too many positional arguments"),
    ]
    for args, kwargs, message in bad:
        with pytest.raises(TypeError, match=message) as info:
            add.remote(*args, **kwargs)
        assert "add(a, b=..., *, c=...)" in str(info.value), "the message shows the signature"
        with pytest.raises(TypeError, match=message):
            add.options(num_cpus=0.5).remote(*args, **kwargs)
    assert submitted == [] and registered == [], "nothing reached the node"
    assert ray.get([add.remote(1), add.remote(1, 2), add.remote(1, c=5), add.remote(a=1, b=2, c=3)]) == [2, 3, 7, 6]
    assert len(submitted) == 4


@pytestmark_shared
def test_actor_constructor_and_method_arguments_are_bound_at_the_call(spy: Callable[[str], list[Any]]) -> None:
    created = spy("create_actor")
    with pytest.raises(TypeError, match="missing a required argument: 'start'"):
        Counter.remote()
    with pytest.raises(TypeError, match="too many positional arguments"):
        Counter.remote(1, 2, 3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'stride'"):
        Counter.options(num_cpus=0).remote(1, stride=2)
    with pytest.raises(TypeError, match="too many positional arguments"):
        NoInit.remote(1)  # no __init__: takes no arguments, as in Ray
    assert created == [], "no actor was created"

    counter = Counter.remote(10, step=5)
    no_init = NoInit.remote()
    assert len(created) == 2
    calls = spy("submit_actor_task")
    with pytest.raises(TypeError, match="too many positional arguments"):
        counter.incr.remote(1, 2)  # self is not counted
    with pytest.raises(TypeError, match="missing a required argument: 'x'"):
        counter.double.remote()  # a static method has no self
    with pytest.raises(TypeError, match="too many positional arguments"):
        counter.kind.remote("a", "b")  # nor does a class method (its cls is bound)
    with pytest.raises(TypeError, match="too many positional arguments"):
        counter.tag.options(name="t").remote(1)
    with pytest.raises(AttributeError):
        counter.nonexistent.remote()
    assert calls == [], "no call was queued"
    assert ray.get([counter.incr.remote(), counter.incr.remote(by=2), counter.double.remote(21)]) == [15, 17, 42]
    assert ray.get(counter.kind.remote("!")) == "Counter!"
    assert ray.get(no_init.ping.remote()) == "pong"
    ray.kill(counter)
    ray.kill(no_init)


@pytestmark_shared
def test_handles_carry_method_signatures_wherever_they_go() -> None:
    counter = Counter.options(name="signed").remote(0)
    copies = [pickle.loads(pickle.dumps(counter)), ray.get_actor("signed"), ray.get(ray.put([counter]))[0]]
    for handle in copies:
        with pytest.raises(TypeError, match="too many positional arguments"):
            handle.incr.remote(1, 2)
    assert "too many positional arguments" in ray.get(call_with_bad_arguments.remote(counter))
    assert ray.get(copies[1].incr.remote(3)) == 3
    assert "incr" in dir(counter) and "double" in dir(counter)
    ray.kill(counter)


@pytestmark_shared
def test_the_signature_is_read_once_and_plain_calls_take_the_fast_path() -> None:
    ray.get(add.remote(1, 2))
    spec = add._arg_spec
    assert isinstance(spec, ArgSpec), "read on the first call"
    assert add.options(num_cpus=1)._arg_spec is spec, "shared by .options() copies, not read again"
    start = time.perf_counter()
    for _ in range(20_000):
        spec.check((1, 2), {})
    per_call_us = (time.perf_counter() - start) / 20_000 * 1e6
    assert per_call_us < 5, f"{per_call_us:.2f} us per check"


@pytestmark_shared
def test_actor_class_attributes_static_class_and_inherited_methods() -> None:
    family = Family.remote(10)
    assert ray.get(family.g.remote()) == 3, "class attributes of the class and its bases, inside methods"
    assert ray.get(family.f.remote()) == 4, "a static method through the handle"
    assert ray.get(family.cm.remote(2)) == ("Family", 5), "a class method through the handle"
    assert ray.get(family.parent1.remote(1)) == 7, "a method of a plain Python base class"
    assert ray.get(family.parent2.remote()) == 17, "the base's __init__ ran with the constructor argument"
    assert ray.get(family.grandparent_static.remote()) == 1
    # On the driver, the actor class reads through to the class's attributes, as Ray's does.
    assert Family.X == 3 and Family.GRANDPARENT == 2 and Family.f() == 4 and Family.cm(0) == ("Family", 3)
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        Family.missing  # noqa: B018
    with pytest.raises(TypeError, match="Inheriting from actor classes is not currently supported"):

        class Derived(Family):  # type: ignore[misc, valid-type]
            pass

    ray.kill(family)


@pytestmark_shared
def test_locally_defined_actor_reads_its_class_attributes() -> None:
    """Ray's test_actor_class_attributes as written there: classes defined inside the test."""

    class Base:
        BASE = 2

        def base(self) -> int:
            return Base.BASE

    @ray.remote
    class Local(Base):
        X = 3

        @classmethod
        def f(cls) -> int:
            assert Local.BASE == 2
            return 4

        def g(self) -> int:
            assert Local.f() == 4
            return Local.X + self.base()

    local = Local.remote()
    assert ray.get([local.g.remote(), local.f.remote(), local.base.remote()]) == [5, 4, 2]
    ray.kill(local)


@pytestmark_shared
def test_get_with_timeout_zero() -> None:
    ready = ray.put("here")
    assert ray.get(ready, timeout=0) == "here"
    slow = sleep_then.remote(2.0, "late")
    start = time.monotonic()
    with pytest.raises(GetTimeoutError):
        ray.get(slow, timeout=0)
    with pytest.raises(GetTimeoutError):
        ray.get([ready, slow], timeout=0)
    assert time.monotonic() - start < 0.5, "timeout=0 does not block"
    assert ray.get(slow) == "late"
    assert ray.get([ready, slow], timeout=0) == ["here", "late"]


@pytestmark_shared
def test_wait_with_timeout_zero_fetch_local_and_num_returns() -> None:
    ready = ray.put(1)
    slow = sleep_then.remote(1.0, 2)
    start = time.monotonic()
    assert ray.wait([slow, ready], timeout=0) == ([ready], [slow])
    assert ray.wait([slow, ready], num_returns=2, timeout=0) == ([ready], [slow])
    assert ray.wait([slow, ready], timeout=0, fetch_local=False) == ([ready], [slow])
    assert time.monotonic() - start < 0.5, "timeout=0 does not block"
    # Ray's validation order: an empty list returns at once, whatever num_returns says.
    assert ray.wait([], num_returns=0) == ([], [])
    with pytest.raises(ValueError, match="num_returns"):
        ray.wait([ready], num_returns=0)
    with pytest.raises(ValueError, match="num_returns"):
        ray.wait([ready, slow], num_returns=3)
    with pytest.raises(ValueError, match="num_returns"):
        ray.wait([ready], num_returns=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unique"):
        ray.wait([ready, ready], num_returns=0)
    # Ready refs come back in input order (Ray's docs), not in completion order.
    later = sleep_then.remote(0.3, 3)
    assert ray.wait([later, ready], num_returns=2, timeout=30) == ([later, ready], [])
    assert ray.wait([slow, ready], num_returns=1, timeout=30, fetch_local=False) == ([ready], [slow])
    assert ray.get(slow) == 2


@pytestmark_shared
def test_unpicklable_exceptions_reach_the_caller_readably() -> None:
    class HoldsALock(Exception):
        def __init__(self, message: str) -> None:
            super().__init__(message)
            self.code = 42
            self.lock = threading.Lock()

    @ray.remote
    def raise_lock() -> None:
        raise HoldsALock("locked out")

    @ray.remote
    def raise_needs_args() -> None:
        raise NeedsTwoArgs("apples", 3)

    @ray.remote
    def raise_local_needs_args() -> None:
        class Local(Exception):
            def __init__(self, a: int, b: int) -> None:
                super().__init__(a + b)
                self.a = a

        raise Local(1, 2)

    @ray.remote
    def raise_unpicklable_class() -> None:
        import threading

        class UnpicklableClass(Exception):
            guard = threading.Lock()  # made in the worker, and its class cannot be pickled

        raise UnpicklableClass("nobody can send me")

    with pytest.raises(HoldsALock) as lock_info:
        ray.get(raise_lock.remote())
    err: Any = lock_info.value
    assert isinstance(err, exceptions.RayTaskError)
    assert err.args == ("locked out",) and err.code == 42 and not hasattr(err.cause, "lock")
    assert "HoldsALock: locked out" in str(err) and "could not be pickled" in str(err)

    with pytest.raises(NeedsTwoArgs) as needs_info:
        ray.get(raise_needs_args.remote())
    assert needs_info.value.item == "apples" and needs_info.value.count == 3
    assert "3 x apples missing" in str(needs_info.value)

    with pytest.raises(exceptions.RayTaskError) as local_info:
        ray.get(raise_local_needs_args.remote())
    assert type(local_info.value.cause).__name__ == "Local" and local_info.value.cause.args == (3,)

    with pytest.raises(exceptions.RayTaskError) as class_info:
        ray.get(raise_unpicklable_class.remote())
    text = str(class_info.value)
    assert "UnpicklableClass: nobody can send me" in text and 'raise UnpicklableClass("nobody can send me")' in text
    assert isinstance(class_info.value.cause, exceptions.RayError), "as Ray: the cause says what happened"
    assert "UnpicklableClass" in str(class_info.value.cause)


@pytestmark_shared
def test_task_errors_have_rays_shape() -> None:
    class CustomException(ValueError):
        pass

    @ray.remote
    def f() -> None:
        raise CustomException("This function failed.")

    with pytest.raises(CustomException) as info:
        ray.get(f.remote())
    err = info.value
    # Ray's test_failed_task, and RayTaskError's str layout: "ray::f() (pid=...)" then the traceback.
    assert isinstance(err, ray.exceptions.RayTaskError) and isinstance(err, ValueError)
    assert "RayTaskError(CustomException)" in repr(err)
    assert type(err).__name__ == "RayTaskError(CustomException)"
    assert isinstance(err.cause, CustomException) and str(err.cause) == "This function failed."
    lines = str(err).splitlines()
    assert lines[0].startswith("ray::f() (pid=") and lines[0].endswith(")")
    assert lines[-1].endswith("CustomException: This function failed.")  # as Python prints it
    assert any('raise CustomException("This function failed.")' in line for line in lines)


def test_await_of_a_ref_that_never_resolves_does_not_block_exit() -> None:
    """A driver of its own (the task it leaves running must die with it)."""
    state = tempfile.mkdtemp(prefix="pa", dir="/tmp")  # short: Unix socket paths are limited
    script = textwrap.dedent(
        f"""
        import asyncio, time
        import peer as ray

        ray.init(address="local", num_cpus=2, _state_dir={state!r})

        @ray.remote
        def forever():
            time.sleep(1000)

        async def cancelled():
            try:
                await asyncio.wait_for(forever.remote(), 0.3)
            except asyncio.TimeoutError:
                print("timed out", flush=True)

        asyncio.run(cancelled())

        async def wait_for(ref):
            return await ref

        # An await left pending on a loop that is never closed: nothing cancels it.
        loop = asyncio.new_event_loop()
        loop.create_task(wait_for(forever.remote()))
        loop.run_until_complete(asyncio.sleep(0.2))
        print("exiting", flush=True)
        """
    )
    start = time.monotonic()
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    took = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["timed", "out", "exiting"], out.stdout
    assert took < 20, f"the driver took {took:.1f} s to exit"


@pytestmark_shared
def test_await_still_returns_values_and_errors() -> None:
    @ray.remote
    def boom() -> None:
        raise KeyError("missing")

    async def main() -> tuple[Any, ...]:
        value = await sleep_then.remote(0.2, "v")
        ready = ray.put("ready")
        assert await ready == "ready"  # already there: answered without a thread
        many = await asyncio.gather(*[add.remote(i) for i in range(200)])
        assert many == [i + 1 for i in range(200)]
        try:
            await boom.remote()
        except KeyError as e:
            return value, type(e).__name__
        return value, None

    assert asyncio.run(main()) == ("v", "RayTaskError(KeyError)")
