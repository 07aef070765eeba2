"""``get_runtime_context()``: where the calling code runs (node, worker, task, actor)."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

from . import _native, _runtime


@dataclass(frozen=True)
class CurrentTask:
    """What the worker is running right now (set by the worker's executor)."""

    task_id: str | None = None
    actor_id: str | None = None
    name: str | None = None


NO_TASK = CurrentTask()

# A context variable, not a global: calls of a threaded actor run in threads, and an async actor's
# calls in asyncio tasks, each with its own current task.
_current: contextvars.ContextVar[CurrentTask] = contextvars.ContextVar("peer_current_task", default=NO_TASK)


def set_current(task: CurrentTask) -> None:
    _current.set(task)


def current() -> CurrentTask:
    return _current.get()


@dataclass(frozen=True)
class RuntimeContext:
    """Ids (hex strings) of the node, worker, task and actor the caller runs in (None if not in one)."""

    node_id: str | None
    worker_id: str | None
    task_id: str | None
    actor_id: str | None
    namespace: str | None

    def get_node_id(self) -> str | None:
        return self.node_id

    def get_worker_id(self) -> str | None:
        return self.worker_id

    def get_task_id(self) -> str | None:
        return self.task_id

    def get_actor_id(self) -> str | None:
        return self.actor_id

    def is_canceled(self) -> bool:
        """Whether ``cancel()`` was called on the task or actor call running here (Ray's flag for
        calls that are not interrupted: those of regular and threaded actors). RuntimeError in a
        driver or an async actor, as in Ray."""
        if self.task_id is None:
            raise RuntimeError("is_canceled() is called from a driver: call it inside a task or an actor method")
        from . import _worker  # only workers run tasks

        if _worker.is_async_actor():
            raise RuntimeError(
                "is_canceled() is not supported in async actors: a cancelled call gets asyncio.CancelledError"
            )
        return _worker.cancel_requested(bytes.fromhex(self.task_id))

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        """The accelerator ids the caller holds, as strings (``{"GPU": ["0"]}``), as in Ray."""
        from . import _gpus

        return {"GPU": [str(i) for i in _gpus.get_gpu_ids()]}

    def get(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "worker_id": self.worker_id,
            "task_id": self.task_id,
            "actor_id": self.actor_id,
            "namespace": self.namespace,
        }


def get_runtime_context() -> RuntimeContext:
    """The runtime context of the caller: the driver, or the task/actor a worker is running."""
    _runtime.ensure_initialized()
    native = _native.runtime_context()
    here = _current.get()
    return RuntimeContext(
        node_id=native.get("node_id"),
        worker_id=native.get("worker_id"),
        # This call's own task first: a concurrent actor runs several at once.
        task_id=here.task_id or native.get("task_id"),
        actor_id=native.get("actor_id") or here.actor_id,
        namespace=_runtime.namespace(),
    )
