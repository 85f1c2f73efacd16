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
"""

from __future__ import annotations

import logging
import socket
import sys

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

log = logging.getLogger("uvicorn.error")

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


def serve(app: str, *, host: str, port: int, workers: int, log_level: str) -> None:
    """Serve the ASGI app at import path ``app`` (``"package.module:attribute"``) until stopped."""
    if workers == 1 or not REUSE_PORT:
        uvicorn.run(app, host=host, port=port, workers=workers, log_level=log_level)
        return
    config = uvicorn.Config(app, host=host, port=port, workers=workers, log_level=log_level)
    try:
        sock = _bind(socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port), _PerWorkerSocket)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        sys.exit(STARTUP_FAILURE)
    log.info("Uvicorn running on http://%s:%d with %d workers, connections balanced by the kernel "
             "(SO_REUSEPORT) (Press CTRL+C to quit)", host, sock.getsockname()[1], workers)
    try:
        Multiprocess(config, sockets=[sock]).run()
    except KeyboardInterrupt:  # pragma: no cover
        pass
    finally:
        sock.close()
