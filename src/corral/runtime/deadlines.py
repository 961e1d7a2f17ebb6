"""Call timeouts without a loop timer per call.

Every ``call`` has a timeout (5 s by default). Arming one event-loop timer per call would cost
more than the rest of the call, so pending calls are kept in one FIFO per distinct timeout
value: for a fixed timeout, deadlines arrive in increasing order, so the queue is sorted by
construction. A single loop timer is armed at the earliest head. Finished calls are dropped
from the heads as new calls arrive, so a queue holds roughly the calls in flight.

Many distinct timeout values (computed deadlines, say) would make many queues; past
``MAX_QUEUES`` a call falls back to its own loop timer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from corral.errors import CallTimeout

if TYPE_CHECKING:
    from corral.runtime.process import Pid

MAX_QUEUES = 16

_Entry = tuple[float, "asyncio.Future[object]", "Pid"]


class CallDeadlines:
    """Fails pending call futures with ``CallTimeout`` when their deadline passes.

    Runs on one event loop; not thread-safe. The loop's ``time()`` is the clock.
    """

    __slots__ = ("_loop", "_queues", "_timer", "_timer_when")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queues: dict[float, deque[_Entry]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0

    def add(self, fut: asyncio.Future[object], timeout: float, pid: Pid) -> None:
        """Fail ``fut`` with ``CallTimeout`` unless it is done within ``timeout`` seconds."""
        deadline = self._loop.time() + timeout
        queue = self._queues.get(timeout)
        if queue is None:
            if len(self._queues) >= MAX_QUEUES:
                self._add_single(fut, timeout, pid)
                return
            queue = self._queues[timeout] = deque()
        else:
            while queue and queue[0][1].done():
                queue.popleft()
        queue.append((deadline, fut, pid))
        timer = self._timer
        if timer is None:
            self._arm(deadline)
        elif deadline < self._timer_when:
            timer.cancel()
            self._arm(deadline)

    def close(self) -> None:
        """Cancel the timer; pending calls keep waiting without a deadline."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queues.clear()

    def _arm(self, when: float) -> None:
        self._timer_when = when
        self._timer = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = self._loop.time()
        earliest: float | None = None
        for timeout, queue in list(self._queues.items()):
            while queue:
                deadline, fut, pid = queue[0]
                if fut.done():
                    queue.popleft()
                elif deadline <= now:
                    queue.popleft()
                    fut.set_exception(CallTimeout(pid, timeout))
                else:
                    break
            if not queue:
                del self._queues[timeout]
            elif earliest is None or queue[0][0] < earliest:
                earliest = queue[0][0]
        if earliest is not None:
            self._arm(earliest)

    def _add_single(self, fut: asyncio.Future[object], timeout: float, pid: Pid) -> None:
        def expire() -> None:
            if not fut.done():
                fut.set_exception(CallTimeout(pid, timeout))

        handle = self._loop.call_later(timeout, expire)
        fut.add_done_callback(lambda _: handle.cancel())
