"""Where a ``Serving``'s callers find its server, and what they are told when it is away.

A ``Door`` is shared by the inert ``Serving`` value and the server process running it: the
server ``open``s it once its partitions are up and ``close``s it when it ends. Callers ask
``server()`` for the running server, or ``await wait(...)`` when it is away:

- never started, or stopped cleanly (``normal``/``shutdown``): ``ServingNotRunning`` at once,
  saying how to start it;
- restarting after a crash: the caller waits for the server to come back, at most its own
  deadline or ``restart_wait`` seconds, then gets ``ServingRestarting`` naming the crash.

Nothing here imports the server: the door holds it as a ``RunningServer``, so the serving's
modules import each other in one direction only.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from corral.errors import ServingNotRunning, ServingRestarting, describe_reason
from corral.runtime.messages import ExitReason, is_clean_exit
from corral.runtime.process import Pid
from corral.serving.policy import Request
from corral.serving.records import Result, ServingStatistics

__all__ = ["Door", "RunningServer"]


class RunningServer(Protocol):
    """What a ``Serving`` needs of its server (``ServingServer`` is one)."""

    @property
    def pid(self) -> Pid: ...

    @property
    def version(self) -> str: ...

    def statistics(self, window: float = 10.0) -> ServingStatistics: ...

    def partition_pids(self) -> tuple[Pid, ...]: ...

    def submit(
        self, x: object, single: bool, deadline: float | None
    ) -> tuple[Request, asyncio.Future[Result]]: ...

    def withdraw(self, request: Request) -> None: ...


class Door:
    """The way in to one serving (see the module docstring). Loop thread only, except
    ``loop`` and ``running``, which any thread may read."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.current: RunningServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._crash: str | None = None  # the reason of the last crash, while restarting
        self._back: asyncio.Event | None = None

    @property
    def running(self) -> bool:
        """Whether a server is in (its partitions are up)."""
        return self.current is not None

    @property
    def restarting(self) -> bool:
        """Whether the server crashed and its supervisor may bring it back."""
        return self.current is None and self._crash is not None

    def open(self, server: RunningServer, loop: asyncio.AbstractEventLoop) -> None:
        """The server is up: callers reach it from now on."""
        self.current = server
        self.loop = loop
        self._crash = None
        if self._back is not None:
            self._back.set()
            self._back = None

    def close(self, server: RunningServer, reason: ExitReason) -> None:
        """``server`` ended with ``reason``: a clean stop closes the door; a crash leaves
        it ajar for the restart."""
        if self.current is not server:
            return
        self.current = None
        self._crash = None if is_clean_exit(reason) else describe_reason(reason)

    def not_running(self) -> ServingNotRunning:
        """The error for a caller who finds no server and may not wait."""
        if self._crash is not None:
            return ServingRestarting(self.name, 0.0, self._crash)
        return ServingNotRunning(self.name, "start it with child_spec() or start(node)")

    async def wait(self, deadline: float | None, restart_wait: float) -> RunningServer:
        """The running server; while it restarts after a crash, wait for it at most
        ``deadline`` (if given) or ``restart_wait`` seconds. Raises ``ServingRestarting``
        when it does not come back in time, ``ServingNotRunning`` when it is not started."""
        server = self.current
        if server is not None:
            return server
        crash = self._crash
        if crash is None:
            raise self.not_running()
        limit = restart_wait if deadline is None else min(deadline, restart_wait)
        if self._back is None:
            self._back = asyncio.Event()
        try:
            await asyncio.wait_for(self._back.wait(), limit)
        except TimeoutError:
            raise ServingRestarting(self.name, limit, crash) from None
        if self.current is None:
            raise self.not_running()
        return self.current
