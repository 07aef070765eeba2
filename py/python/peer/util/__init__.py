"""``peer.util``: Ray's ``ray.util`` helpers on peer's core API.

``ActorPool`` (``actor_pool``) schedules calls over a fixed set of actors, ``queue.Queue`` is a FIFO
queue held by an actor that any task on any peer can use, and ``multiprocessing.Pool`` is the
standard library's ``multiprocessing.Pool`` with actors as its processes.
"""

from __future__ import annotations

from . import multiprocessing, queue
from .actor_pool import ActorPool

__all__ = ["ActorPool", "multiprocessing", "queue"]
