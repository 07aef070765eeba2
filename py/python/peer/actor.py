"""``peer.actor``: what Ray's ``ray.actor`` module offers users — ``exit_actor()``, and the actor
classes and handles under their Ray names."""

from __future__ import annotations

from typing import NoReturn

from . import _concurrency
from ._actor import ActorClass, ActorHandle, ActorMethod, method
from .exceptions import AsyncioActorExit

__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "exit_actor", "method"]


def exit_actor() -> NoReturn:
    """End the calling actor gracefully, from a method or its constructor, as Ray's does.

    The call that asks fails with ``ActorDiedError`` (saying ``exit_actor()`` was called), and so do
    calls queued behind it; calls running beside it in a concurrent actor finish first. The actor
    is not restarted; its ``__ray_shutdown__``, ``__del__`` and ``atexit`` hooks run. Raises
    ``TypeError`` outside an actor.
    """
    from . import _worker  # only workers get this far with an actor

    if not _worker.in_actor():
        raise TypeError(
            "exit_actor API is called on a non-actor worker: call it in an actor's method or "
            "constructor (to stop an actor from outside, use peer.kill(handle) or "
            "handle.__ray_terminate__.remote())"
        )
    name = _worker.actor_name()
    _worker.request_exit(f"the actor {name} exited: exit_actor() was called in it")
    if _worker.is_async_actor():
        raise AsyncioActorExit()
    raise _concurrency.ActorExit(0)
