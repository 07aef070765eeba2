"""The GPU devices the running task or actor holds, and its ``CUDA_VISIBLE_DEVICES``.

The node sends each task the ids of the devices it holds (none when it asked for no GPU). Before
the task runs, the worker sets ``CUDA_VISIBLE_DEVICES`` to exactly those ids, as Ray does: a task
without GPUs sees ``""``, so it never touches another task's device. CUDA reads the variable when
it starts in a process, which is why a GPU task's worker is fresh (``max_calls`` is 1 for GPU
tasks unless set otherwise) and why the fork server never loads CUDA.

Ray's ``RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES=1`` (or ``PEER_NOSET_CUDA_VISIBLE_DEVICES=1``)
in the node's environment leaves the variable alone, for fractional requests too; so does a
``CUDA_VISIBLE_DEVICES`` among the ``env_vars`` of the task's ``runtime_env`` (the user's own
choice is never overwritten, unlike Ray #28215).
"""

from __future__ import annotations

import os

CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
_NOSET = ("PEER_NOSET_CUDA_VISIBLE_DEVICES", "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES")

_held: list[str] = []
_noset = any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in _NOSET)


def leave_alone(user_set: bool) -> None:
    """Whether this worker's environment sets ``CUDA_VISIBLE_DEVICES`` itself (then it stays)."""
    global _noset
    _noset = _noset or user_set


def hold(ids: list[str]) -> None:
    """The running task (or this worker's actor) holds devices ``ids``."""
    global _held
    _held = ids
    if _noset:
        return
    value = ",".join(ids)
    if os.environ.get(CUDA_VISIBLE_DEVICES) != value:
        os.environ[CUDA_VISIBLE_DEVICES] = value


def get_gpu_ids() -> list[int] | list[str]:
    """The ids of the GPUs the calling task or actor holds (``[]`` in the driver), like
    ``ray.get_gpu_ids()``: ints when the node names its devices by index, else the names it uses
    (UUIDs)."""
    if all(i.isdigit() for i in _held):
        return [int(i) for i in _held]
    return list(_held)
