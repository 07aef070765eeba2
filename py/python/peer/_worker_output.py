"""Worker stdout/stderr: each line goes to the inherited fd prefixed ``(<task or actor> pid=<pid>) ``.

This is how a task's ``print`` shows up in the driver's terminal, labelled like Ray labels it: the
worker's terminal is the embedded driver's; for a driver attached to a ``peer up`` daemon the lines
go to the node, which forwards them to that driver.
Whole lines are written with one ``os.write`` each batch, so lines of concurrent workers do not mix.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable

from . import _native


class PrefixedStream(io.TextIOBase):
    """A text stream that writes complete lines, each with a prefix, to a file descriptor."""

    def __init__(self, fd: int, prefix: Callable[[], str]) -> None:
        super().__init__()
        self._fd = fd
        self._prefix = prefix
        self._pending = ""
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "replace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        with self._lock:
            lines = (self._pending + s).split("\n")
            self._pending = lines.pop()
            if lines:
                self._emit(lines)
        return len(s)

    def flush(self) -> None:
        """Write out a pending partial line (as a line of its own)."""
        with self._lock:
            if self._pending:
                pending, self._pending = self._pending, ""
                self._emit([pending])

    def _emit(self, lines: list[str]) -> None:
        prefix = self._prefix()
        data = "".join(f"{prefix}{line}\n" for line in lines).encode("utf-8", "replace")
        if _native.emit_output(self._fd, data):
            return  # the task's driver is attached from another process: the node forwards it
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except OSError:
                return  # the terminal or pipe is gone; output is best effort
            view = view[written:]
