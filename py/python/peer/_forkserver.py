"""Fork server: ``python -m peer._forkserver`` forks a ready-to-run worker for each id read on stdin.

The node starts it once with ``PEER_SOCKET`` in the environment, a pipe as stdin, the driver's
``sys.path`` as ``PYTHONPATH`` and the driver's working directory. It imports the worker code
(and cloudpickle) once, so a new worker costs a ``fork`` instead of an interpreter start. Children are reaped automatically (SIGCHLD ignored); EOF on stdin — the
node went away — ends the server. Neither the server nor its workers react to Ctrl-C: the node
shuts them down.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import traceback

SOCKET_ENV = "PEER_SOCKET"


def _preload() -> None:
    """Import what every worker needs. Not numpy or other user libraries: a worker imports
    those on first use, so an idle cluster stays small (every pre-imported page is resident in
    each worker) and the first worker is up sooner."""
    import cloudpickle  # type: ignore[import-untyped]  # noqa: F401 - loaded once for all workers

    import peer._worker  # noqa: F401

    # What is loaded now lives as long as every worker: the collector need not scan it again (and
    # scanning it would dirty pages each forked worker shares with this server).
    import gc

    gc.collect()
    gc.freeze()


def _child(socket_path: str, worker_id: str) -> None:
    """In the forked child: become the worker; never returns."""
    code = 1
    try:
        # Exit hooks the server registered are not the worker's: a worker runs only its own.
        atexit._clear()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # let user code wait for its own children
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.close(0)
        sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            numpy.random.seed()  # forked children would otherwise share the server's random state
        from peer import _worker

        _worker.main(socket_path, worker_id)
        code = 0
    except BaseException:  # noqa: BLE001 - report and exit with a failure code
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _wait_for_children() -> None:
    """Block until every forked worker has exited, so that this server's own exit tells the node
    that all of its workers are gone. With SIGCHLD ignored, wait() returns only when no child is
    left (then fails with ECHILD)."""
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return
        except InterruptedError:
            continue


class _Stop(Exception):
    """SIGTERM from the node: stop forking, wait for the workers, exit."""


_stopping = False


def _on_term(signum: int, frame: object) -> None:
    # Raise once: a second SIGTERM (the node may repeat it) must not interrupt the clean exit.
    global _stopping
    if not _stopping:
        _stopping = True
        raise _Stop


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_term)
    socket_path = os.environ[SOCKET_ENV]
    global _stopping
    try:
        _preload()
        _serve(socket_path)
        # Stdin closed: the node is stopping. Its SIGTERM may still arrive; from
        # here on the handler must not raise (that would skip waiting).
        _stopping = True
    except _Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _wait_for_children()


def _serve(socket_path: str) -> None:
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return
        worker_id = line.strip().decode("utf-8", "replace")
        if not worker_id:
            continue
        # SIGTERM waits while forking: raised inside the fork hooks (logging's lock release, say)
        # it would be swallowed there, and the worker half made.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            pid = os.fork()
        except OSError as e:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            print(f"peer fork server: cannot fork worker {worker_id}: {e}", file=sys.stderr, flush=True)
            continue
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            _child(socket_path, worker_id)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


if __name__ == "__main__":
    main()
