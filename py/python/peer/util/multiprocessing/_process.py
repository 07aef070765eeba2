"""The pool's processes: one actor each, running the initializer once and then chunks of calls.

A chunk's result is one outcome per call, in order: ``(True, value)``, or ``(False, (exception,
formatted remote traceback))`` when the call raised, so one failing call does not hide the values
of the others. ``raise_outcome`` re-raises a failure the way the standard library does, with the
remote traceback as the exception's ``__cause__``.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, Union

from ... import _pickler
from ..._actor import ActorClass
from ..._options import Options

Failure = tuple[BaseException, Union[str, None]]
Outcome = tuple[bool, Any]  # (True, value) or (False, Failure)


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a pool process (the ``__cause__`` of the
    exception re-raised here)."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def raise_outcome(failure: Failure) -> NoReturn:
    exc, tb = failure
    if tb is not None and exc.__cause__ is None:
        exc.__cause__ = RemoteTraceback(f'\n"""\n{tb}"""')
    raise exc


def _picklable(exc: Exception) -> BaseException:
    """``exc`` if it survives a pickle round trip, else a RuntimeError that describes it."""
    try:
        pickle.loads(_pickler.dumps(exc))
        return exc
    except Exception as e:  # noqa: BLE001 - any failure means: send a description instead
        return RuntimeError(f"{type(exc).__qualname__}: {exc} (the exception itself could not be pickled: {e})")


def _failure(exc: Exception) -> Outcome:
    return False, (_picklable(exc), traceback.format_exc())


class _PoolProcess:
    """The actor behind one pool process."""

    def __init__(self, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
        if initializer is not None:
            initializer(*initargs)

    def ready(self) -> None:
        """Answered once the initializer has run."""

    def run_chunk(self, func: Callable[..., Any], items: list[Any], star: bool) -> list[Outcome]:
        """``func(item)`` (``func(*item)`` with ``star``) for each item, in order."""
        out: list[Outcome] = []
        for item in items:
            try:
                out.append((True, func(*item) if star else func(item)))
            except Exception as e:  # noqa: BLE001 - reported to the caller as the call's outcome
                out.append(_failure(e))
        return out

    def run_call(self, func: Callable[..., Any], args: Iterable[Any], kwds: dict[str, Any]) -> list[Outcome]:
        """``func(*args, **kwds)`` as a chunk of one call."""
        try:
            return [(True, func(*args, **kwds))]
        except Exception as e:  # noqa: BLE001 - reported to the caller as the call's outcome
            return [_failure(e)]


# Like Ray's pool actors, a process holds no CPU of its own (placement still looks for a free one).
PoolProcess = ActorClass(_PoolProcess, Options(num_cpus=0))
