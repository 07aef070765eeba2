"""cloudpickle, but keeping each code object's file name so remote tracebacks show source lines.

cloudpickle 3.1 replaces ``co_filename`` by ``"<dynamic-code>"`` for determinism; a worker on the
same machine can read the real file, so we keep it (the id of a function then also depends on the
file it was defined in, which is what one expects).
"""

from __future__ import annotations

import io
import pickle
import types
from collections import ChainMap
from collections.abc import Callable
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
from cloudpickle import cloudpickle as _cp

_code_reduce: Callable[[types.CodeType], tuple[Any, tuple[Any, ...]]] | None = getattr(_cp, "_code_reduce", None)


def _reduce_code_keeping_filename(code: types.CodeType) -> tuple[Any, tuple[Any, ...]]:
    assert _code_reduce is not None
    constructor, args = _code_reduce(code)
    args = tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)
    return constructor, args


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    if _code_reduce is not None:
        dispatch_table = ChainMap({types.CodeType: _reduce_code_keeping_filename}, cloudpickle.Pickler.dispatch_table)


def dumps(obj: Any, buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None) -> bytes:
    """``cloudpickle.dumps(obj, protocol=5, buffer_callback=...)`` keeping code file names."""
    with io.BytesIO() as file:
        _Pickler(file, protocol=5, buffer_callback=buffer_callback).dump(obj)
        return file.getvalue()
