"""The live dashboard: ``/dashboard`` (a page shipped in the package, no build step, no CDN)
and ``/dashboard/events``, a server-sent-events stream of ``corral.gateway.snapshot``
snapshots, one every ``INTERVAL`` seconds.

**Access.** The dashboard shows internals (pids, OS pids, crash reasons), so it follows the
gateway's access rule: it is served on the gateway's bind (loopback by default), and when
the gateway has an ``admin_token`` the page and the stream need it, as the header
``Authorization: Bearer <token>`` or as the query ``?token=<token>`` (a browser's
``EventSource`` cannot set headers; the page passes its own ``token`` on to the stream).
The script and style sheet hold no data and need no token.

**Lifetime.** ``Dashboard.started(node)`` (when the gateway's server process starts) attaches
the crash log to the node's supervisors and the training log to trainers' round events;
``stopping()`` (when it stops) ends every open
stream at once, so a drain never waits on a dashboard left open; ``stopped()`` detaches.
Each stream is the response task of its request, owned by uvicorn's connection; it is
cancelled when the client goes away.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import TYPE_CHECKING

from corral.gateway.problems import HttpProblem
from corral.gateway.snapshot import CrashLog, Rates, TrainingLog, snapshot
from corral.runtime.node import Node
from corral.serving import Serving

if TYPE_CHECKING:
    from corral.pipeline import Pipeline

__all__ = ["HEADERS", "INTERVAL", "STATIC", "Dashboard", "check_token", "static_file"]

INTERVAL = 0.5
"""Seconds between two snapshots on a dashboard's event stream."""

STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
"""The page's script and style sheet by file name, with their media types."""

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
}
"""Headers of every dashboard answer: no caching, no referrer (the address may hold the
token), and a content security policy that runs only the page's own script."""


def static_file(name: str) -> bytes:
    """A file of the page shipped in the package (``corral/gateway/static``)."""
    return resources.files("corral.gateway").joinpath("static", name).read_bytes()


def check_token(token: str | None, authorization: str, query_token: str) -> None:
    """Pass when ``token`` is None (no admin token: the bind is the access rule) or when
    the header ``authorization`` is ``Bearer <token>`` or ``query_token`` is the token
    (compared in constant time); else ``HttpProblem`` 401."""
    if token is None:
        return
    scheme, _, credential = authorization.partition(" ")
    given = (credential if scheme.lower() == "bearer" else "") or query_token
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HttpProblem(
            401,
            "the dashboard needs the admin token: the header Authorization: Bearer <token>, "
            "or ?token=<token> in the address",
            {"WWW-Authenticate": 'Bearer realm="corral"'},
        )


class Dashboard:
    """The dashboard of a gateway: its servings and pipelines, the node once started, the
    crash log."""

    def __init__(
        self,
        servings: Sequence[Serving],
        pipelines: Sequence[Pipeline] = (),
        *,
        interval: float = INTERVAL,
    ) -> None:
        self.servings = tuple(servings)
        self.pipelines = tuple(pipelines)
        self.interval = interval
        self.crashes = CrashLog()
        self.training = TrainingLog()
        self.node: Node | None = None
        self._closing: asyncio.Event | None = None

    def started(self, node: Node) -> None:
        """The gateway runs on ``node``: listen to its crash reports and training rounds
        (call on the node's loop)."""
        self.node = node
        self._closing = asyncio.Event()
        self.crashes.attach(node)
        self.training.attach()

    def stopping(self) -> None:
        """End every open stream now (the gateway drains)."""
        if self._closing is not None:
            self._closing.set()

    def stopped(self) -> None:
        """The gateway's server process ended."""
        self.stopping()
        self.crashes.detach()
        self.training.detach()

    async def events(self) -> AsyncIterator[bytes]:
        """One ``data:`` event per snapshot until the gateway stops (or the client goes
        away, which cancels this generator)."""
        node, closing = self.node, self._closing
        if node is None or closing is None:
            return
        rates = Rates()
        yield b"retry: 1000\n\n"
        while not closing.is_set() and node.running:
            doc = await snapshot(
                node,
                self.servings,
                pipelines=self.pipelines,
                rates=rates,
                crashes=self.crashes,
                training=self.training,
            )
            yield b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"
            try:
                await asyncio.wait_for(closing.wait(), self.interval)
            except TimeoutError:
                pass
