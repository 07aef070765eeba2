"""Options of remote functions, actor classes and actor methods: one dataclass, validated once.

``@remote(...)``, ``.options(...)`` and ``@method(...)`` all go through :meth:`Options.updated`,
which checks the keyword names against what the target kind accepts and the values' types.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["function", "actor", "method"]

# Ray's "infinite" (-1) for retries/restarts, as the native layer's integer.
INFINITE = 2**31 - 1

_COMMON = frozenset(
    {"num_cpus", "num_gpus", "accelerator_type", "memory", "resources", "name", "scheduling_strategy"}
)
# How much of a node's `accelerator_type:<model>` resource an `accelerator_type=` option takes
# (Ray's amount: a constraint on the model, not a count of devices).
ACCELERATOR_TYPE_SHARE = 0.001
VALID: dict[Kind, frozenset[str]] = {
    "function": _COMMON | {"num_returns", "max_retries", "retry_exceptions", "max_calls", "runtime_env"},
    "actor": _COMMON
    | {
        "runtime_env",
        "max_restarts",
        "max_task_retries",
        "namespace",
        "lifetime",
        "get_if_exists",
        "max_concurrency",
        "concurrency_groups",
    },
    "method": frozenset({"num_returns", "name", "concurrency_group"}),
}


@dataclass(frozen=True)
class Options:
    """Every option a remote function, actor class or actor method can carry (None = default)."""

    num_cpus: float | None = None
    num_gpus: float | None = None
    # The GPU model the work must run on (Ray's ``accelerator_type``, e.g. "H100").
    accelerator_type: str | None = None
    memory: float | None = None
    resources: Mapping[str, float] | None = None
    num_returns: int | None = None
    max_retries: int | None = None
    # True: retry on any exception; a list of exception types: retry on those only.
    retry_exceptions: bool | tuple[type[BaseException], ...] | None = None
    # How many tasks of the function one worker runs before it exits (0: no limit).
    max_calls: int | None = None
    max_restarts: int | None = None
    max_task_retries: int | None = None
    name: str | None = None
    namespace: str | None = None
    lifetime: str | None = None
    get_if_exists: bool | None = None
    max_concurrency: int | None = None
    concurrency_groups: Mapping[str, int] | None = None
    concurrency_group: str | None = None
    scheduling_strategy: Any = None
    # Ray's runtime_env, as given (checked); merged over the job's when submitted.
    runtime_env: Mapping[str, Any] | None = None

    def updated(self, kind: Kind, **kwargs: Any) -> Options:
        """A copy with ``kwargs`` applied; raises ValueError/TypeError on a bad name or value."""
        valid = VALID[kind]
        for key, value in kwargs.items():
            if key not in valid:
                raise ValueError(
                    f"invalid option {key!r} for {'an actor method' if kind == 'method' else 'a remote ' + kind}; "
                    f"valid options are: {', '.join(sorted(valid))}"
                )
            _check(key, value)
        new = dataclasses.replace(self, **kwargs)
        if new.get_if_exists and not new.name:
            raise ValueError("The actor name must be specified to use `get_if_exists`: pass name= too")
        return new

    def resource_demand(self) -> dict[str, float]:
        """Custom resources plus GPU and memory, as the native layer takes them."""
        demand = {str(k): float(v) for k, v in (self.resources or {}).items()}
        if self.num_gpus:
            demand["GPU"] = float(self.num_gpus)
        if self.accelerator_type:
            demand[f"accelerator_type:{self.accelerator_type}"] = ACCELERATOR_TYPE_SHARE
        if self.memory:
            demand["memory"] = float(self.memory)
        return demand

    def retries(self) -> int:
        n = 3 if self.max_retries is None else self.max_retries
        return INFINITE if n < 0 else n

    def restarts(self) -> int:
        n = 0 if self.max_restarts is None else self.max_restarts
        return INFINITE if n < 0 else n

    def retry_on(self) -> tuple[type[BaseException], ...] | None:
        """The exception types a task is retried on, when ``retry_exceptions`` lists them."""
        r = self.retry_exceptions
        return None if r is None or isinstance(r, bool) else tuple(r)

    def calls_per_worker(self) -> int:
        """``max_calls``: Ray's default is no limit, but 1 for tasks that use GPUs (so that a
        worker gives back GPU memory after each such task)."""
        if self.max_calls is not None:
            return self.max_calls
        return 1 if self.num_gpus else 0

    def task_retries(self) -> int:
        """How often an actor's call runs again when the actor dies under it (Ray's default: 0)."""
        n = 0 if self.max_task_retries is None else self.max_task_retries
        return INFINITE if n < 0 else n


def _check(key: str, value: Any) -> None:
    if value is None:
        return
    if key == "runtime_env":
        from . import _runtime_env

        _runtime_env.validate(value, "options(runtime_env=...)")
        return
    if key in ("num_cpus", "num_gpus", "memory"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{key} must be a non-negative number, got {value!r}")
        if key == "num_gpus" and value > 1 and not float(value).is_integer():
            # A share of one device, or whole devices: never 1.5 devices (as in Ray).
            raise ValueError(f"num_gpus greater than 1 must be a whole number, got {value!r}")
    elif key == "accelerator_type":
        if not isinstance(value, str) or not value:
            raise TypeError(f"accelerator_type must be a model name such as 'H100', got {value!r}")
    elif key == "resources":
        if not isinstance(value, Mapping):
            raise TypeError(f"resources must be a dict of name -> amount, got {type(value).__name__}")
        for name, amount in value.items():
            if name in ("CPU", "GPU"):
                raise ValueError(f"use num_cpus / num_gpus instead of resources[{name!r}]")
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                raise ValueError(f"resources[{name!r}] must be a non-negative number, got {amount!r}")
    elif key == "num_returns":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"num_returns must be a non-negative int, got {value!r}")
    elif key in ("max_retries", "max_restarts", "max_task_retries"):
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise ValueError(f"{key} must be an int >= -1 (-1: without limit), got {value!r}")
    elif key == "retry_exceptions":
        if isinstance(value, bool):
            return
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in value
        ):
            raise TypeError(f"retry_exceptions must be True, False or a list of exception types, got {value!r}")
    elif key == "max_calls":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"max_calls must be an int >= 0 (0: no limit), got {value!r}")
    elif key == "get_if_exists":
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be True or False, got {value!r}")
    elif key == "max_concurrency":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_concurrency must be an int >= 1, got {value!r}")
    elif key == "concurrency_groups":
        if not isinstance(value, Mapping):
            raise TypeError(f"concurrency_groups must be a dict of group name -> limit, got {type(value).__name__}")
        for group, limit in value.items():
            if not isinstance(group, str) or not group:
                raise ValueError(f"concurrency group names must be non-empty strings, got {group!r}")
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(f"concurrency_groups[{group!r}] must be an int >= 1, got {limit!r}")
    elif key == "concurrency_group":
        if not isinstance(value, str) or not value:
            raise ValueError(f"concurrency_group must be a non-empty string, got {value!r}")
    elif key == "lifetime":
        if value not in ("detached", "non_detached"):
            raise ValueError(f"lifetime must be 'detached' or 'non_detached', got {value!r}")
    elif key in ("name", "namespace"):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key} must be a non-empty string, got {value!r}")
