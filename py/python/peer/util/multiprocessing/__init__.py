"""``peer.util.multiprocessing``: a drop-in for ``multiprocessing.Pool`` that runs on the cluster.

``from peer.util.multiprocessing import Pool`` instead of ``from multiprocessing import Pool``;
``TimeoutError`` and ``JoinableQueue`` are the standard library's, as in Ray's module.
"""

from __future__ import annotations

from multiprocessing import JoinableQueue, TimeoutError

from ._process import RemoteTraceback
from .pool import Pool
from .results import AsyncResult, IMapIterator

__all__ = ["AsyncResult", "IMapIterator", "JoinableQueue", "Pool", "RemoteTraceback", "TimeoutError"]
