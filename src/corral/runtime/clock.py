"""The one clock the runtime reads.

The clock is the running event loop's monotonic ``time()``, in float seconds, and every
timer in the runtime (call timeouts, ``send_after``, shutdown timeouts) is a timer of that
loop. Running a node on ``corral.testing``'s virtual-time loop therefore puts all of it on
virtual time.
"""

from __future__ import annotations

import asyncio

__all__ = ["Clock"]


class Clock:
    """Reads and waits on the loop's time. Not thread-safe (loop thread only)."""

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def now(self) -> float:
        """Seconds on the loop's monotonic clock (virtual under corral.testing)."""
        return self._loop.time()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock. Cancellable."""
        await asyncio.sleep(seconds)

    def call_later(self, delay: float, callback: object) -> asyncio.TimerHandle:
        """Run ``callback()`` after ``delay`` seconds on the loop."""
        if not callable(callback):
            raise TypeError(f"Clock.call_later: callback must be callable; got {callback!r}")
        return self._loop.call_later(delay, callback)
