"""``GatewayServer``: the process that serves a gateway's ASGI app with uvicorn, on the
node's own event loop. The only module that imports uvicorn.

``init`` binds and listens on the socket itself (so a busy port is a ``StartError`` of the
child, and ``port=0`` is known at once), then runs uvicorn's ``serve`` on that socket as a
task the process owns. uvicorn's own signal handling is turned off: the node's handles
SIGINT and SIGTERM and stops its tree, and this process's ``terminate`` drains: uvicorn
stops accepting, lets the requests in flight be answered (at most ``drain_timeout``
seconds, then cancels them) and closes. If the serve task ends on its own, the process
crashes with the reason and its supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Generator

from corral._extras import require

require("uvicorn", extra="http", by="corral's HTTP gateway")

import uvicorn  # noqa: E402

from corral.gateway.options import GatewayOptions  # noqa: E402
from corral.runtime.messages import ExitReason  # noqa: E402
from corral.runtime.process import Actor, Pid  # noqa: E402

__all__ = ["GatewayServer", "bind"]

logger = logging.getLogger("corral.gateway")


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the node owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when ``host`` has a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.setblocking(False)
    return sock


class GatewayServer(Actor):
    """Serves ``app`` on ``options.host:options.port``; ``on_bound`` hears the bound port and
    this process (in ``init``), ``on_stop`` that the server begins to stop (its drain, or a
    kill)."""

    def __init__(
        self,
        app: object,
        options: GatewayOptions,
        on_bound: Callable[[int, Pid], None],
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self._app = app
        self._options = options
        self._on_bound = on_bound
        self._on_stop = on_stop
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def init(self) -> None:
        options = self._options
        sock = bind(options.host, options.port)
        port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._app,  # type: ignore[arg-type]
            lifespan="off",
            log_config=None,
            access_log=options.access_log,
            timeout_keep_alive=int(max(1, options.keep_alive)),
            timeout_graceful_shutdown=int(options.drain_timeout),
            server_header=False,
        )
        server = self._server = _Server(config)
        task = self._task = asyncio.get_running_loop().create_task(
            server.serve(sockets=[sock]), name=f"corral gateway {options.host}:{port}"
        )
        task.add_done_callback(lambda t: self.pid.send(("served", t)) if self.pid.alive else None)
        self.pid.add_exit_callback(self._abandon)
        self._on_bound(port, self.pid)
        host = f"[{options.host}]" if ":" in options.host else options.host
        logger.info("corral gateway listening on http://%s:%d", host, port)
        logger.info("corral dashboard: http://%s:%d/dashboard", host, port)

    def handle_info(self, msg: object) -> None:
        if isinstance(msg, tuple) and msg[:1] == ("served",) and not self._stopping:
            task = msg[1]
            assert isinstance(task, asyncio.Task)
            error = None if task.cancelled() else task.exception()
            raise RuntimeError(f"the gateway's HTTP server stopped on its own ({error!r})")
        super().handle_info(msg)

    async def terminate(self, reason: ExitReason) -> None:
        self._stopping = True
        if self._on_stop is not None:
            self._on_stop()
        server, task = self._server, self._task
        if server is None or task is None or task.done():
            return
        logger.info("corral gateway draining: no new connections; answering what is in flight")
        server.should_exit = True
        await asyncio.wait((task,))
        logger.info("corral gateway stopped")

    def _abandon(self, reason: ExitReason) -> None:
        """However the process ended (a kill skips ``terminate``): stop serving now."""
        if self._on_stop is not None:
            self._on_stop()
        task = self._task
        if task is not None and not task.done():
            if self._server is not None:
                self._server.should_exit = True
                self._server.force_exit = True
            task.cancel()
