"""Seeing what the cluster did: ``peer.timeline()`` (Chrome trace events gathered from every
peer) and the progress bar of ``peer.get(refs, progress=True)``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from . import _native, _runtime

# How often the progress bar is redrawn while refs are pending (seconds).
_PROGRESS_EVERY = 0.25
_BAR_WIDTH = 30


def timeline(filename: str | None = None) -> list[dict[str, Any]] | None:
    """The task runs, actor calls, gets, puts and object transfers every peer kept, as Chrome
    trace events (load them in https://ui.perfetto.dev or ``chrome://tracing``).

    One process per peer and one thread row per worker process (``tid`` is the worker's pid; the
    ``node`` row holds transfers, and get/put spans sit on the row of the process that made
    them). Times are wall-clock microseconds of each peer's clock. Each peer keeps its last
    10,000 runs and 4,000 spans. As ``ray.timeline``: with ``filename`` the events are written
    there as JSON and None is returned; otherwise they are returned.
    """
    _runtime.ensure_initialized()
    events = _native.timeline()
    if filename is None:
        return events
    with open(filename, "w") as f:
        json.dump(events, f)
    return None


def show_progress(ids: Sequence[bytes], out: TextIO | None = None) -> None:
    """Wait for ``ids`` while drawing ``[####....] ready/total`` on stderr; returns once all are
    ready (values or errors: the get that follows raises them). Redrawn in place on a terminal;
    elsewhere one line each time another tenth is ready, so logs stay readable."""
    stream = out if out is not None else sys.stderr
    total = len(ids)
    pending = list(ids)
    interactive = stream.isatty()
    shown = -1
    start = time.monotonic()
    while True:
        ready = total - len(pending)
        tenth = ready * 10 // max(total, 1)
        if interactive or tenth != shown or not pending:
            filled = ready * _BAR_WIDTH // max(total, 1)
            bar = "#" * filled + "." * (_BAR_WIDTH - filled)
            line = f"peer.get [{bar}] {ready}/{total} ready, {time.monotonic() - start:.1f}s"
            stream.write(("\r" + line) if interactive else (line + "\n"))
            stream.flush()
            shown = tenth
        if not pending:
            break
        done = _native.wait(pending, len(pending), _PROGRESS_EVERY, True)
        if done:
            finished = set(done)
            pending = [p for i, p in enumerate(pending) if i not in finished]
    if interactive:
        stream.write("\n")
        stream.flush()
