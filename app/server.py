"""Running an ASGI app with uvicorn on one or several worker processes, connections balanced over the workers.

uvicorn's multi-worker mode binds one listening socket in the parent and every worker accepts from it: the
worker that wakes first takes every connection waiting (asyncio accepts up to the backlog at once), so
keep-alive clients (a load balancer, a connection pool, a benchmark's connections) all land on one worker
while the others idle. Measured here: 16 connections opened together to two workers, one held all 16.

On Linux each worker here listens on its own ``SO_REUSEPORT`` socket instead, and the kernel spreads new
connections over the workers by address hash (as nginx's ``reuseport`` and gunicorn's ``--reuse-port``
do). uvicorn's supervisor still starts, watches, restarts and stops the workers: the only change is the
socket it hands them (see :class:`_PerWorkerSocket`). Elsewhere, and with one worker, it is plain
``uvicorn.run``.

Also set up here, before any worker starts: Prometheus's multiprocess mode (a fresh metrics folder per start,
shared by the workers; see app/metrics.py), and an exit status of 0 after a graceful shutdown on SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from app.logs import uvicorn_log_config

log = logging.getLogger("uvicorn.error")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's variable (app.metrics is not imported here)

REUSE_PORT = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def _bind(family: int, address: tuple, cls: type[socket.socket] = socket.socket) -> socket.socket:
    """A TCP socket bound to ``address`` in the address's ``SO_REUSEPORT`` group (not yet listening).

    ``IPPROTO_TCP`` is given explicitly: asyncio sets ``TCP_NODELAY`` on accepted connections only when the
    listening socket says it is TCP, and a socket made with protocol 0 does not (uvicorn issue 3149: without
    it each keep-alive response can wait for the client's delayed ACK).
    """
    sock = cls(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.set_inheritable(True)
    return sock


class _PerWorkerSocket(socket.socket):
    """The parent's socket: bound (so the port is taken, and a port in use fails at start) but never listening,
    so the kernel gives it no connections. uvicorn hands the parent's sockets to each worker it spawns by
    pickling them; this one unpickles as a new socket bound to the same address in that worker's process,
    and the worker's server listens on it. Restarted workers get theirs the same way."""

    def __reduce_ex__(self, protocol):
        return _bind, (self.family, self.getsockname())


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, telling prometheus-client about each worker that exited (died, or stopped by a
    signal such as SIGTTOU or SIGHUP's restart), so that its live gauges (the queue depth) stop counting."""

    def keep_subprocess_alive(self) -> None:
        self._forgetting_exited(super().keep_subprocess_alive)

    def handle_signals(self) -> None:
        self._forgetting_exited(super().handle_signals)

    def _forgetting_exited(self, step) -> None:
        before = {process.pid for process in self.processes}
        step()
        exited = before - {process.pid for process in self.processes}
        if exited and os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            for pid in exited:
                multiprocess.mark_process_dead(pid)


@contextlib.contextmanager
def _metrics_folder(workers: int):
    """With several workers, a folder where each writes its metrics (``PROMETHEUS_MULTIPROC_DIR``, inherited
    by the workers): the operator's, emptied of a previous run's files, or a fresh temporary one, removed at
    exit. Counts from a previous run would otherwise be summed with this run's."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        for stale in Path(given).glob("*.db"):
            stale.unlink()
        yield
        return
    if workers == 1:  # one process: its own registry, nothing to share
        yield
        return
    folder = tempfile.mkdtemp(prefix="ser-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)


def serve(app: str, *, host: str, port: int, workers: int, log_level: str, log_format: str = "text",
          graceful_timeout: float | None = None, keep_alive: float = 5) -> None:
    """Serve the ASGI app at import path ``app`` (``"package.module:attribute"``) until stopped.

    On SIGTERM, uvicorn stops accepting connections, lets the requests in flight finish (at most
    ``graceful_timeout`` seconds, then cancels them) and runs the app's shutdown; this returns then. The
    service's own access log replaces uvicorn's (one line per request, app/middleware.py).
    """
    options = {"host": host, "port": port, "workers": workers, "log_level": log_level, "access_log": False,
               "timeout_graceful_shutdown": graceful_timeout, "timeout_keep_alive": keep_alive}
    if (log_config := uvicorn_log_config(log_format)) is not None:
        options["log_config"] = log_config
    # A single uvicorn server raises the signal that stopped it again once it has shut down gracefully,
    # and Python's default SIGTERM action would then end the process with status -15: exit 0 instead.
    # (With several workers the supervisor handles SIGTERM itself and returns.)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    with _metrics_folder(workers):
        if workers == 1 or not REUSE_PORT:
            uvicorn.run(app, **options)
            return
        config = uvicorn.Config(app, **options)
        try:
            sock = _bind(socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port), _PerWorkerSocket)
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", host, port, exc)
            sys.exit(STARTUP_FAILURE)
        log.info("Uvicorn running on http://%s:%d with %d workers, connections balanced by the kernel "
                 "(SO_REUSEPORT) (Press CTRL+C to quit)", host, sock.getsockname()[1], workers)
        try:
            _Supervisor(config, sockets=[sock]).run()
        except KeyboardInterrupt:  # pragma: no cover
            pass
        finally:
            sock.close()
