"""An asyncio event loop whose clock jumps ahead whenever every task is waiting.

``VirtualTimeLoop`` is a plain ``asyncio.SelectorEventLoop`` with two changes, both made through
public API: ``time()`` reads a virtual clock, and the loop's selector is wrapped. The loop asks
its selector to wait (``select(timeout)`` with a timeout above zero, or ``None``) only when it
has no ready callbacks, that is, when every task is waiting on a timer, on I/O or on another
thread. At that moment the wrapper

1. wakes the ``wait_all_tasks_blocked()`` waiters, if there are any, and lets the loop run
   their callbacks in that same iteration, without moving the clock;
2. otherwise polls the real selector for ``autojump_threshold`` real seconds (0.0 by default:
   a poll that does not wait) and hands back any I/O events it sees;
3. otherwise, if a timer is pending, moves the clock forward to that timer's deadline and
   returns no events, so the loop fires the timer in that same iteration. A timer more than a
   day away is reached in steps of one day (asyncio's longest selector wait).

With no timer pending, the selector blocks on real I/O (including the loop's self-pipe, which
is how ``call_soon_threadsafe`` and executor results wake the loop). A test in which nothing
can ever happen blocks there: a genuine deadlock, which the per-test timeout of pytest-timeout
reports.

So ``asyncio.sleep``, ``call_later``, ``call_at``, ``asyncio.timeout``, ``wait_for`` and
everything built on ``loop.time()`` run on virtual time and take no real time, and after
``await asyncio.sleep(d)`` begun at ``t``, ``loop.time() == t + d`` exactly (the float sum).
Two limits come from asyncio itself: when it fires timers, it also fires those due less than
its clock resolution (1 ns) later, as on a real clock; and past 2**24 s (about 194 days) of
virtual time, where floats are coarser than 1 ns, a timer fires one float step after its
deadline.

Threads and subprocesses do not hold the clock back. Work in an executor, a subprocess's output
or a socket that another program writes to arrives in real time; while it is on its way the
loop is idle, so with a timer pending the clock jumps to it (a ``wait_for`` around an executor
call times out at once, in virtual time). Set ``autojump_threshold`` to the real seconds the loop
should wait for such I/O before it jumps: the clock then moves only after that much real time
without any I/O. This is the behaviour of trio's ``MockClock(autojump_threshold=...)``.
``wait_all_tasks_blocked()`` never waits for I/O: a task waiting for a thread counts as blocked.

Only the loop's clock is virtual: ``time.monotonic()``, ``time.time()`` and ``time.sleep()``
stay real, so code under test must read time from ``loop.time()``.

Nothing here is thread-safe beyond what asyncio itself promises: call ``advance`` and set
``autojump_threshold`` from the loop's thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import math
import selectors
import time
from collections.abc import Callable, Coroutine
from typing import TypeVar, TypeVarTuple, Unpack

__all__ = [
    "VirtualTimeLoop",
    "check_main",
    "new_event_loop",
    "run",
    "run_and_close",
    "wait_all_tasks_blocked",
]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

# Below this many tracked timers, cancelled ones are not worth sweeping out.
_MIN_PRUNE = 256


def _check_seconds(where: str, name: str, value: object, *, minimum: float | None) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number (>= ``minimum``)."""
    rule = "a finite number" if minimum is None else f"a finite number >= {minimum:g}"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or (minimum is not None and value < minimum)
    ):
        raise ValueError(f"{where}: {name} must be {rule}; got {value!r}")
    return float(value)


class _VirtualClock:
    """The state a ``VirtualTimeLoop`` shares with its selector."""

    __slots__ = (
        "_deadlines",
        "_prune_at",
        "_seq",
        "autojump_threshold",
        "idle_waiters",
        "now",
        "resolution",
    )

    def __init__(self, start: float, autojump_threshold: float) -> None:
        self.now = start
        # The resolution asyncio's BaseEventLoop uses to decide which timers are due.
        self.resolution = time.get_clock_info("monotonic").resolution
        self.autojump_threshold = autojump_threshold
        self.idle_waiters: list[asyncio.Future[None]] = []
        # Every timer the loop has armed, as (deadline, tie-break, handle), so that a jump can
        # land exactly on a deadline instead of on ``now + (deadline - now)``, which floats
        # may round to a neighbour of the deadline.
        self._deadlines: list[tuple[float, int, asyncio.TimerHandle]] = []
        self._seq = itertools.count()
        self._prune_at = _MIN_PRUNE

    def track(self, handle: asyncio.TimerHandle) -> None:
        heapq.heappush(self._deadlines, (handle.when(), next(self._seq), handle))
        if len(self._deadlines) >= self._prune_at:
            # Cancelled and already fired timers leave only when the clock passes them; sweep
            # them out now and then, so a test that arms and cancels many long timeouts stays
            # small. Amortised O(1) per timer. A timer due at exactly ``now`` stays: unstick
            # may need it.
            now = self.now
            live = [e for e in self._deadlines if e[0] >= now and not e[2].cancelled()]
            heapq.heapify(live)
            self._deadlines = live
            self._prune_at = max(_MIN_PRUNE, 2 * len(live))

    def jump(self, timeout: float) -> None:
        """Move the clock ``timeout`` seconds on, landing exactly on a deadline near there."""
        now = self.now
        target = now + timeout
        tolerance = 4 * math.ulp(max(abs(now), abs(target)))
        deadlines = self._deadlines
        # Every live timer is due after ``now`` and at or after the loop's next deadline (about
        # ``target``); what lies before has fired or was cancelled. Landing strictly after
        # ``now`` guarantees progress.
        while deadlines:
            when, _, handle = deadlines[0]
            if when > now and when >= target - tolerance and not handle.cancelled():
                break
            heapq.heappop(deadlines)
        if deadlines and deadlines[0][0] <= target + tolerance:
            target = deadlines[0][0]
        self.now = target

    def unstick(self) -> None:
        """Nudge the clock one float step on if a due timer could never fire.

        The loop fires timers due before ``time() + resolution``. Past 2**24 s (about 194 days)
        that sum rounds back to ``time()``, so a timer due at exactly ``time()`` would wait for
        a clock that never moves on its own; the loop would spin. Real monotonic clocks always
        move on; a virtual one is moved here by the smallest step that lets the timer fire.
        """
        now = self.now
        if now + self.resolution != now:
            return
        deadlines = self._deadlines
        while deadlines and (deadlines[0][0] < now or deadlines[0][2].cancelled()):
            heapq.heappop(deadlines)
        if deadlines and deadlines[0][0] == now:
            self.now = math.nextafter(now, math.inf)

    def clear(self) -> None:
        self.idle_waiters.clear()
        self._deadlines.clear()

    def wake_idle_waiters(self) -> bool:
        """Resolve the pending ``wait_all_tasks_blocked`` futures; say whether there were any."""
        woke = False
        for waiter in self.idle_waiters:
            if not waiter.done():
                waiter.set_result(None)
                woke = True
        self.idle_waiters.clear()
        return woke


class _AutojumpSelector(selectors.DefaultSelector):
    """The platform's default selector, made to move a virtual clock when the loop is idle."""

    def __init__(self, clock: _VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            self._clock.unstick()
            return super().select(timeout)
        # asyncio's _run_once passes a positive timeout or None only when it has no ready
        # callbacks (and is not stopping): every task is waiting.
        clock = self._clock
        if clock.idle_waiters:
            events = super().select(0)
            if events:
                return events
            if clock.wake_idle_waiters():
                # Their wake-up callbacks are now ready; the loop runs them this iteration.
                return []
        if timeout is None:
            # No timer is pending, so only I/O or another thread can make progress.
            return super().select(None)
        events = super().select(clock.autojump_threshold)
        if events:
            return events
        # _run_once then reads time() and fires every timer due before time() + resolution.
        clock.jump(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop on a virtual clock that jumps when every task is waiting.

    ``start`` is the clock's first reading, in seconds. ``autojump_threshold`` is the real time,
    in seconds, that an idle loop waits for I/O (threads, subprocesses, sockets) before it moves
    the clock to the next timer; 0.0 (the default) jumps at once. See the module docstring for
    the whole contract.
    """

    def __init__(self, *, start: float = 0.0, autojump_threshold: float = 0.0) -> None:
        clock = self._virtual_clock = _VirtualClock(0.0, 0.0)
        # Initialise the loop before validating, so that a rejected loop can close itself
        # instead of meeting BaseEventLoop.__del__ half-made.
        super().__init__(selector=_AutojumpSelector(clock))
        try:
            clock.now = _check_seconds("VirtualTimeLoop", "start", start, minimum=None)
            clock.autojump_threshold = _check_seconds(
                "VirtualTimeLoop", "autojump_threshold", autojump_threshold, minimum=0
            )
        except BaseException:
            self.close()
            raise

    def time(self) -> float:
        """The virtual clock, in seconds. It moves only by jumps and ``advance``."""
        return self._virtual_clock.now

    def advance(self, seconds: float) -> None:
        """Move the virtual clock ``seconds`` (>= 0) forward, without waiting for anything.

        Timers that become due fire in the loop's next iteration, after the callback that called
        ``advance``. Does not block.
        """
        seconds = _check_seconds("VirtualTimeLoop.advance", "seconds", seconds, minimum=0)
        self._virtual_clock.now += seconds

    @property
    def autojump_threshold(self) -> float:
        """Real seconds an idle loop waits for I/O before it jumps to the next timer (>= 0)."""
        return self._virtual_clock.autojump_threshold

    @autojump_threshold.setter
    def autojump_threshold(self, value: float) -> None:
        self._virtual_clock.autojump_threshold = _check_seconds(
            "VirtualTimeLoop.autojump_threshold", "value", value, minimum=0
        )

    def call_at(
        self,
        when: float,
        callback: Callable[[Unpack[_Ts]], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        # call_later, asyncio.sleep and asyncio.timeout all arm their timers through here.
        handle = super().call_at(when, callback, *args, context=context)
        self._virtual_clock.track(handle)
        return handle

    def close(self) -> None:
        super().close()
        self._virtual_clock.clear()


def new_event_loop(*, start: float = 0.0, autojump_threshold: float = 0.0) -> VirtualTimeLoop:
    """A new ``VirtualTimeLoop``; it is not made the current loop. The caller closes it."""
    return VirtualTimeLoop(start=start, autojump_threshold=autojump_threshold)


async def wait_all_tasks_blocked() -> None:
    """Wait until every task on the loop is waiting (on a timer, a future, I/O or a thread).

    The waiter wakes before the clock moves, so the timers that are due next have not fired
    yet. Waiters are all woken together. A task waiting for I/O or a thread counts as blocked:
    this does not wait for them. Cancellable.

    Only a ``VirtualTimeLoop`` can tell; on any other loop this raises ``RuntimeError``.
    """
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualTimeLoop):
        raise RuntimeError(
            "wait_all_tasks_blocked: the running loop must be a corral.testing.VirtualTimeLoop; "
            f"got {type(loop).__name__}. Run the coroutine with corral.testing.run(), or drop "
            "@pytest.mark.realtime from the test"
        )
    waiter: asyncio.Future[None] = loop.create_future()
    waiters = loop._virtual_clock.idle_waiters
    waiters.append(waiter)
    try:
        await waiter
    finally:
        if waiter in waiters:
            waiters.remove(waiter)


def run(
    main: Coroutine[object, None, _T],
    *,
    start: float = 0.0,
    autojump_threshold: float = 0.0,
    debug: bool = False,
) -> _T:
    """Run ``main`` on a fresh ``VirtualTimeLoop`` and return its result, like ``asyncio.run``.

    Blocks the calling thread until ``main`` finishes (in real time, that is as long as ``main``
    spends on real I/O and threads). Then cancels the tasks still running and waits for them,
    finalises async generators, shuts the default executor down (joining its threads) and
    closes the loop. The loop is the thread's current event loop while it runs. Cannot be
    called from a running loop.

    ``start`` and ``autojump_threshold`` are as for ``VirtualTimeLoop``; ``debug`` turns on
    asyncio's debug mode.
    """
    check_main("corral.testing.run", main)
    try:
        loop = VirtualTimeLoop(start=start, autojump_threshold=autojump_threshold)
    except BaseException:
        main.close()
        raise
    loop.set_debug(debug)
    return run_and_close(loop, main)


def check_main(where: str, main: object) -> None:
    """Raise unless ``main`` is a coroutine and no loop runs; close ``main`` when raising."""
    if not asyncio.iscoroutine(main):
        raise TypeError(f"{where}: main must be a coroutine; got {main!r}")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    main.close()  # never awaited, and saying so in a warning would only add noise
    raise RuntimeError(
        f"{where}: cannot be called from a running event loop; await the coroutine instead"
    )


def run_and_close(loop: asyncio.AbstractEventLoop, main: Coroutine[object, None, _T]) -> _T:
    """Run ``main`` on ``loop``, clean up as ``asyncio.run`` does, and close ``loop``."""
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during corral.testing.run() shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
