"""``RemoteFunction``: what ``@peer.remote`` makes of a function; ``.remote()`` submits a task.

The function is cloudpickled once per process (content id = blake2b of the blob) and sent to the
node once per runtime; each task then carries only the id and its arguments.

:class:`ArgSpec` checks that the arguments of ``f.remote(...)`` (and of actor constructors and
methods) bind to the function's signature before anything is submitted, as Ray does.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import _native, _pickler, _runtime, _runtime_env, _serialization
from ._object_ref import ObjectRef
from ._options import Options


def content_id(blob: bytes) -> bytes:
    """The id a pickled function or class is known by: blake2b, 16 bytes."""
    return hashlib.blake2b(blob, digest_size=16).digest()


class PickledCode:
    """A function or class pickled on first use, with its content id (cached per process)."""

    __slots__ = ("_obj", "_blob", "_id")

    def __init__(self, obj: Any) -> None:
        self._obj = obj
        self._blob: bytes | None = None
        self._id: bytes | None = None

    def registered_id(self) -> bytes:
        """The content id, after making sure the current runtime knows the blob."""
        if self._id is None or self._blob is None:
            blob = _pickler.dumps(self._obj)
            self._blob, self._id = blob, content_id(blob)
        _runtime.register_function(self._id, self._blob)
        return self._id


class TaskCode:
    """A task's function with what its worker applies to it: ``max_calls`` (after that many
    tasks the worker exits) and ``retry_exceptions`` given as exception types (others are not
    retried). Registered instead of the bare function only when one of them is set."""

    __slots__ = ("function", "max_calls", "retry_on", "calls")

    def __init__(
        self, function: Callable[..., Any], max_calls: int, retry_on: tuple[type[BaseException], ...] | None
    ) -> None:
        self.function = function
        self.max_calls = max_calls
        self.retry_on = retry_on
        self.calls = 0  # in this worker

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskCode, (self.function, self.max_calls, self.retry_on))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.max_calls and self.calls >= self.max_calls:
            _native.retire_after_task()
        if self.retry_on is None:
            return self.function(*args, **kwargs)
        try:
            return self.function(*args, **kwargs)
        except BaseException as e:
            if not isinstance(e, self.retry_on):
                from . import _worker  # this runs in a worker

                _worker.fail_for_good()
            raise


class FunctionCodes:
    """A function's code to register: the bare function, or a :class:`TaskCode` for options that
    need one. Each is pickled once per process, and shared by the copies ``.options()`` makes (so
    ``f.options(num_gpus=1).remote()`` in a loop does not pickle the function every time)."""

    __slots__ = ("_function", "plain", "_variants")

    def __init__(self, function: Callable[..., Any]) -> None:
        self._function = function
        self.plain = PickledCode(function)
        self._variants: dict[tuple[int, tuple[type[BaseException], ...] | None], PickledCode] = {}

    def for_options(self, options: Options) -> PickledCode:
        max_calls, retry_on = options.calls_per_worker(), options.retry_on()
        if not max_calls and retry_on is None:
            return self.plain
        code = self._variants.get((max_calls, retry_on))
        if code is None:
            code = self._variants[(max_calls, retry_on)] = PickledCode(TaskCode(self._function, max_calls, retry_on))
        return code


_P = inspect.Parameter
# Parameter kinds by their int value: an ArgSpec keeps ints (plain pickle, any peer version).
_KINDS: dict[int, Any] = {
    int(k): k
    for k in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD, _P.VAR_POSITIONAL, _P.KEYWORD_ONLY, _P.VAR_KEYWORD)
}
_POSITIONAL = (int(_P.POSITIONAL_ONLY), int(_P.POSITIONAL_OR_KEYWORD))


class _Default:
    """Stands for a parameter's default value: only whether there is one matters for binding."""

    def __repr__(self) -> str:
        return "..."


_DEFAULT = _Default()


class ArgSpec:
    """The parameters ``f.remote(...)`` must bind to, as Ray checks them (``Signature.bind``).

    Keeps only names, kinds and whether each has a default (no default values or annotations), so
    it is small and always picklable: actor handles carry one per method. Plain positional calls
    that fit take a fast path (two comparisons); anything else is bound by ``inspect``.
    ``no_self`` marks a method with no parameter to take ``self``: every call of it fails.
    """

    __slots__ = ("name", "params", "no_self", "_lo", "_hi", "_sig")

    def __init__(self, name: str, params: tuple[tuple[str, int, bool], ...], no_self: bool = False) -> None:
        self.name = name
        self.params = params
        self.no_self = no_self
        lo = hi = 0
        for _, kind, has_default in params:
            if kind in _POSITIONAL:
                hi += 1
                lo += not has_default
            elif kind == int(_P.VAR_POSITIONAL):
                hi = sys.maxsize
            elif kind == int(_P.KEYWORD_ONLY) and not has_default:
                lo, hi = 1, 0  # a required keyword-only parameter: no positional call fits
                break
        if no_self:
            lo, hi = 1, 0
        self._lo, self._hi = lo, hi
        self._sig: inspect.Signature | None = None

    @classmethod
    def of(cls, fn: Any, name: str, *, bound: bool = False) -> ArgSpec | None:
        """The spec of ``fn`` (``bound``: its first parameter takes ``self``/``cls``), or None when
        ``fn`` has no signature Python can read (some builtins): such calls are not checked."""
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return None
        params = list(sig.parameters.values())
        if bound:
            if params and params[0].kind == _P.VAR_POSITIONAL:
                pass  # def m(*args): self is the first of args
            elif params and params[0].kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD):
                params = params[1:]
            else:
                return cls(name, (), no_self=True)
        return cls(name, tuple((p.name, int(p.kind), p.default is not _P.empty) for p in params))

    def __reduce__(self) -> tuple[Any, ...]:
        return (ArgSpec, (self.name, self.params, self.no_self))

    def __repr__(self) -> str:
        return f"ArgSpec({self.name}{self.signature()})"

    def signature(self) -> inspect.Signature:
        sig = self._sig
        if sig is None:
            sig = self._sig = inspect.Signature(
                [_P(n, _KINDS[k], default=_DEFAULT if d else _P.empty) for n, k, d in self.params]
            )
        return sig

    def check(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError (Ray's message, plus what to do) unless the call binds."""
        if not kwargs and self._lo <= len(args) <= self._hi:
            return
        if self.no_self:
            raise TypeError(
                f"{self.name}() takes no 'self' parameter, so it cannot be called on an actor; "
                "add self as its first parameter, or make it a @staticmethod"
            )
        try:
            self.signature().bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(
                f"{self.name}() {e}; pass arguments that fit its signature {self.name}{self.signature()}"
            ) from None


def wrap_returns(ids: list[bytes], num_returns: int) -> ObjectRef | list[ObjectRef] | None:
    """Ray's return shape: one ref, a list of refs, or None for ``num_returns=0``."""
    if num_returns == 1:
        return ObjectRef(ids[0])
    if num_returns == 0:
        return None
    return [ObjectRef(i) for i in ids]


class _Unset:
    """Not computed yet (None already means: no signature to check against)."""


_UNSET = _Unset()


class RemoteFunction:
    """A function that runs as a task: call ``f.remote(*args)`` to get an ObjectRef."""

    def __init__(
        self,
        function: Callable[..., Any],
        options: Options,
        codes: FunctionCodes | None = None,
        arg_spec: ArgSpec | None | _Unset = _UNSET,
    ) -> None:
        self._function = function
        self._options = options
        self._codes = codes or FunctionCodes(function)
        self._code = self._codes.for_options(options)
        self.__name__ = getattr(function, "__name__", "remote_function")
        self.__qualname__ = getattr(function, "__qualname__", self.__name__)
        self.__doc__ = function.__doc__
        self.__module__ = getattr(function, "__module__", __name__)
        self.__wrapped__ = function
        # The signature calls must bind to: read on the first .remote() (not per call), shared by
        # the copies .options() makes.
        self._arg_spec = arg_spec
        # (the job's environment, this function's merged over it), worked out on first use.
        self._env: tuple[_runtime_env.Resolved | None, _runtime_env.Resolved | None] | None = None
        # Options are immutable: work out the submit arguments once, not per call.
        self._num_returns = 1 if options.num_returns is None else options.num_returns
        self._task_name = options.name or self.__name__
        self._submit_options: dict[str, Any] = {
            "num_returns": self._num_returns,
            "num_cpus": 1.0 if options.num_cpus is None else float(options.num_cpus),
            "resources": options.resource_demand(),
            "max_retries": options.retries(),
            # A list of types: the node retries, and the worker says which failures are final.
            "retry_exceptions": bool(options.retry_exceptions),
            "name": self._task_name,
        }

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"remote functions cannot be called directly. Instead of {self.__name__}(), "
            f"use {self.__name__}.remote()."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteFunction, (self._function, self._options))

    def __repr__(self) -> str:
        return f"<peer remote function {self.__qualname__}>"

    def options(self, **options: Any) -> RemoteFunction:
        """A copy with some options changed, e.g. ``f.options(num_cpus=2).remote()``."""
        return RemoteFunction(
            self._function, self._options.updated("function", **options), self._codes, self._arg_spec
        )

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Submit a task; returns an ObjectRef (a list of them if ``num_returns > 1``).

        Raises TypeError, before anything is submitted, if the arguments do not fit the
        function's signature.
        """
        spec = self._arg_spec
        if isinstance(spec, _Unset):
            spec = self._arg_spec = ArgSpec.of(self._function, self.__name__)
        if spec is not None:
            spec.check(args, kwargs)
        _runtime.ensure_initialized()
        data, buffers, deps, contained = _serialization.serialize_args(
            args, kwargs, self._task_name, _runtime.namespace()
        )
        env = _runtime.job_env() if self._options.runtime_env is None else self._own_env()
        if env is None:
            ids = _native.submit_task(
                self._code.registered_id(), data, buffers, deps, contained=contained, **self._submit_options
            )
        else:
            ids = _native.submit_task(
                self._code.registered_id(),
                data,
                buffers,
                deps,
                contained=contained,
                runtime_env=env.handle,
                **self._submit_options,
            )
        return wrap_returns(ids, self._num_returns)

    def _own_env(self) -> _runtime_env.Resolved | None:
        """This function's ``runtime_env`` merged over the job's (packed once per job)."""
        parent = _runtime.job_env()
        cached = self._env
        if cached is None or cached[0] is not parent:
            raw = _runtime_env.validate(self._options.runtime_env, f"{self.__name__}.options()")
            cached = self._env = (parent, _runtime_env.resolve(parent, raw))
        return cached[1]
