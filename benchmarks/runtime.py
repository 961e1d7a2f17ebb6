"""Benchmarks of corral's process runtime against plain asyncio doing the same job.

    python benchmarks/runtime.py [--quick] [--loop uvloop|asyncio] [--verbose]

Prints one JSON object per line (see ``_common.emit``); ``ratio`` is corral / baseline, both
measured in this run on the same event loop (default: uvloop when installed).

Cases
-----
``call``
    Round trips per second of one caller task doing ``await pid.call(i)`` in a loop against
    an actor whose synchronous ``handle_call`` returns the message. Baseline
    ``asyncio.Queue+Future``: a server task reads ``(msg, future)`` pairs from an
    ``asyncio.Queue`` and answers with ``future.set_result(msg)``; the client does
    ``queue.put_nowait((i, future)); await future``. Higher is better.

``cast``
    Messages per second from a producer that casts N messages to an actor whose
    ``handle_cast`` counts them, until the actor has handled all N (it resolves a future at
    the N-th). Baseline ``asyncio.Queue``: the producer ``put_nowait``s N items into an
    ``asyncio.Queue(maxsize=N)`` and a consumer task counts them with ``await queue.get()``.
    Higher is better.

    Mailboxes are bounded (10,000 by default; a cast to a full one raises ``MailboxFull``).
    We spawn the actor with ``mailbox_size=N`` so that the whole burst fits, and the producer
    never yields; the baseline queue is bounded at N too and its producer never yields
    either. Both sides therefore measure the same thing: enqueue N messages back to back,
    then drain them. (The alternative, yielding every K casts, would measure corral's
    fairness budget -- a process yields after 128 messages in a row -- against a consumer
    that never yields, rather than the cost per message.)

``crash_to_first_reply``
    Milliseconds from the moment a supervised, named actor crashes (a cast makes its
    ``handle_cast`` raise; the time is taken just before the ``raise``) to the first
    successful ``call`` reply from the replacement its supervisor started. The caller finds
    the replacement by name, polling ``node.whereis(name)`` with ``await asyncio.sleep(0)``
    between tries. Reported as the median and the p99 of each repeat's crashes (then the
    median over repeats). There is no asyncio equivalent to measure, so the baseline is the
    target of 0.3 ms and ``ratio`` is value / target: lower is better, and such lines carry
    ``"lower_is_better": true``.

Method: one warm-up run of every side, then ``R`` repeats (5, or 3 with ``--quick``) with
corral and the baseline interleaved in alternating order; each reported number is the median
of the repeats.

Noise: ``value``, ``baseline`` and ``ratio`` are wall-clock numbers, as asked. Each line also
carries ``cpu``: the same numbers computed on the thread's CPU time (``time.thread_time``),
and ``cpu_share``: the median fraction of the wall-clock time the thread was on a CPU. All
of this is single-threaded and never waits for I/O, so on an idle machine ``cpu_share`` is
~1.0 and the two agree. When ``cpu_share`` is well below 1 the OS descheduled the loop
(other jobs on a shared machine) and the ``cpu`` numbers are the ones to believe: in
particular a p99 of ~4 ms (one scheduler time slice) is then a preemption, not corral.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from _common import (
    Settings,
    Stopwatch,
    Timing,
    emit,
    interleaved,
    loop_factory,
    median,
    parse_settings,
    percentile,
    say,
)
from corral import SHUTDOWN, Actor, ChildSpec, Node, Pid, Supervisor

BENCH = "runtime"
CRASH_TARGET_MS = 0.3
"""The target for crash-to-first-reply (median), in milliseconds."""
CRASHING_NAME = "bench-fragile"


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """Operations per measurement (warm-ups use a tenth)."""

    calls: int
    casts: int
    crashes: int


FULL = Sizes(calls=300_000, casts=1_000_000, crashes=5_000)
QUICK = Sizes(calls=100_000, casts=300_000, crashes=1_000)


# -- call ------------------------------------------------------------------------------------


class Echo(Actor):
    """Replies to every call with the message itself."""

    def handle_call(self, msg: object) -> object:
        return msg


async def _stop(pid: Pid) -> None:
    pid.exit(SHUTDOWN)
    await pid.wait_exit()


async def corral_calls(node: Node, n: int) -> Timing:
    """One caller, ``n`` sequential round trips to an ``Echo`` process."""
    pid = await node.spawn(Echo())
    watch = Stopwatch()
    try:
        call = pid.call
        reply: object = None
        watch.start()
        for i in range(n):
            reply = await call(i)
        watch.stop()
    finally:
        await _stop(pid)
    _check(reply == n - 1, f"corral call: last reply {reply!r}, expected {n - 1}")
    return Timing.of(n, watch)


_Request = tuple[object, "asyncio.Future[object]"]


async def _queue_server(queue: asyncio.Queue[_Request | None]) -> None:
    while True:
        item = await queue.get()
        if item is None:
            return
        msg, fut = item
        fut.set_result(msg)


async def baseline_calls(n: int) -> Timing:
    """``n`` round trips through an ``asyncio.Queue`` of ``(msg, future)`` and a server task."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[_Request | None] = asyncio.Queue()
    server = asyncio.create_task(_queue_server(queue))
    watch = Stopwatch()
    try:
        put = queue.put_nowait
        create_future = loop.create_future
        reply: object = None
        watch.start()
        for i in range(n):
            fut = create_future()
            put((i, fut))
            reply = await fut
        watch.stop()
    finally:
        queue.put_nowait(None)
        await server
    _check(reply == n - 1, f"baseline call: last reply {reply!r}, expected {n - 1}")
    return Timing.of(n, watch)


# -- cast ------------------------------------------------------------------------------------


class Counter(Actor):
    """Counts casts and resolves ``done`` at the ``n``-th."""

    def __init__(self, n: int, done: asyncio.Future[None]) -> None:
        self.n = n
        self.count = 0
        self.done = done

    def handle_cast(self, msg: object) -> None:
        self.count += 1
        if self.count == self.n:
            self.done.set_result(None)


async def corral_casts(node: Node, n: int) -> Timing:
    """``n`` casts back to back, until the actor has handled them all."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    # mailbox_size=n: the burst fits in the mailbox (see the module docstring).
    pid = await node.spawn(Counter(n, done), mailbox_size=n)
    watch = Stopwatch()
    try:
        cast = pid.cast
        watch.start()
        for i in range(n):
            cast(i)
        await done
        watch.stop()
    finally:
        await _stop(pid)
    return Timing.of(n, watch)


async def _counting_consumer(
    queue: asyncio.Queue[object], n: int, done: asyncio.Future[None]
) -> None:
    count = 0
    while True:
        await queue.get()
        count += 1
        if count == n:
            done.set_result(None)
            return


async def baseline_casts(n: int) -> Timing:
    """``n`` items through an ``asyncio.Queue(maxsize=n)`` to a counting consumer task."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=n)
    consumer = asyncio.create_task(_counting_consumer(queue, n, done))
    watch = Stopwatch()
    try:
        put = queue.put_nowait
        watch.start()
        for i in range(n):
            put(i)
        await done
        watch.stop()
    finally:
        await consumer
    return Timing.of(n, watch)


# -- crash_to_first_reply ----------------------------------------------------------------------


class Crash(Exception):
    """The injected failure."""


class CrashClock:
    """Where a crashing actor notes when it crashed: ``wall`` (``time.perf_counter``) and
    ``cpu`` (``time.thread_time``) seconds."""

    __slots__ = ("cpu", "wall")

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0


class Fragile(Actor):
    """Answers calls with the message; any cast makes it crash."""

    def __init__(self, clock: CrashClock) -> None:
        self.clock = clock

    def handle_call(self, msg: object) -> object:
        return msg

    def handle_cast(self, msg: object) -> None:
        # CPU clock first: its ~0.7 us system call stays out of the wall-clock interval.
        self.clock.cpu = time.thread_time()
        self.clock.wall = time.perf_counter()
        raise Crash(msg)


@dataclass(frozen=True)
class CrashRun:
    """One repeat of ``crash_to_first_reply``: per-crash wall-clock and CPU seconds."""

    wall: list[float]
    cpu: list[float]

    @property
    def cpu_share(self) -> float:
        return sum(self.cpu) / sum(self.wall)


async def crash_latencies(node: Node, n: int) -> CrashRun:
    """Seconds from each of ``n`` crashes to the replacement's first reply."""
    clock = CrashClock()
    spec = ChildSpec(id="fragile", start=lambda: Fragile(clock), name=CRASHING_NAME)
    # At most a few thousand restarts a second: the intensity window never fills.
    supervisor = await node.spawn(Supervisor([spec], max_restarts=1_000_000, max_seconds=1.0))
    whereis = node.whereis
    run = CrashRun([], [])
    try:
        for _ in range(n):
            old = whereis(CRASHING_NAME)
            if old is None:
                raise RuntimeError(f"crash_to_first_reply: no process named {CRASHING_NAME!r}")
            old.cast("crash")
            while True:
                new = whereis(CRASHING_NAME)
                if new is not None and new is not old:
                    break
                await asyncio.sleep(0)
            reply = await new.call("ping")
            wall = time.perf_counter()
            cpu = time.thread_time()
            run.wall.append(wall - clock.wall)
            run.cpu.append(cpu - clock.cpu)
            _check(reply == "ping", f"crash_to_first_reply: reply {reply!r}, expected 'ping'")
    finally:
        await _stop(supervisor)
    return run


# -- driver ----------------------------------------------------------------------------------


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise RuntimeError(message)


async def _throughput_case(
    settings: Settings,
    case: str,
    unit: str,
    baseline_name: str,
    corral_side: Callable[[int], Awaitable[Timing]],
    baseline_side: Callable[[int], Awaitable[Timing]],
    n: int,
) -> None:
    say(f"runtime: {case} ({n} operations x {settings.repeats} repeats, {settings.loop})")
    await corral_side(max(1, n // 10))
    await baseline_side(max(1, n // 10))
    corral_runs, baseline_runs = await interleaved(
        [lambda: corral_side(n), lambda: baseline_side(n)], settings.repeats
    )
    if settings.verbose:
        for side, runs in (("corral", corral_runs), ("baseline", baseline_runs)):
            say(f"  {side:8} wall {[round(t.rate) for t in runs]}")
            say(f"  {side:8} cpu  {[round(t.cpu_rate) for t in runs]}")
    value = median([t.rate for t in corral_runs])
    baseline = median([t.rate for t in baseline_runs])
    cpu_value = median([t.cpu_rate for t in corral_runs])
    cpu_baseline = median([t.cpu_rate for t in baseline_runs])
    emit(
        bench=BENCH,
        case=case,
        metric="throughput",
        value=value,
        unit=unit,
        baseline_name=baseline_name,
        baseline_value=baseline,
        loop=settings.loop,
        cpu={"value": cpu_value, "baseline": cpu_baseline, "ratio": cpu_value / cpu_baseline},
        cpu_share=median([t.cpu_share for t in corral_runs + baseline_runs]),
    )


async def _crash_case(settings: Settings, node: Node, n: int) -> None:
    say(f"runtime: crash_to_first_reply ({n} crashes x {settings.repeats} repeats)")
    # Crash reports go to the "corral" loggers (ERROR, with the traceback). Formatting and
    # writing them would dominate what we measure, the runtime's own restart path, so they
    # are silenced for the measurement (level CRITICAL) and the level restored after.
    corral_logger = logging.getLogger("corral")
    saved_level = corral_logger.level
    corral_logger.setLevel(logging.CRITICAL)
    try:
        await crash_latencies(node, max(1, n // 10))
        (runs,) = await interleaved([lambda: crash_latencies(node, n)], settings.repeats)
    finally:
        corral_logger.setLevel(saved_level)
    stats: tuple[tuple[str, Callable[[list[float]], float]], ...] = (
        ("median_ms", median),
        ("p99_ms", lambda values: percentile(values, 99)),
    )
    for metric, stat in stats:
        walls = [stat(run.wall) * 1000 for run in runs]
        cpus = [stat(run.cpu) * 1000 for run in runs]
        if settings.verbose:
            say(f"  {metric} wall {[round(v, 4) for v in walls]}")
            say(f"  {metric} cpu  {[round(v, 4) for v in cpus]}")
        value, cpu_value = median(walls), median(cpus)
        emit(
            bench=BENCH,
            case="crash_to_first_reply",
            metric=metric,
            value=value,
            unit="ms",
            baseline_name="target",
            baseline_value=CRASH_TARGET_MS,
            loop=settings.loop,
            lower_is_better=True,
            cpu={"value": cpu_value, "ratio": cpu_value / CRASH_TARGET_MS},
            cpu_share=median([run.cpu_share for run in runs]),
        )


async def run(settings: Settings) -> None:
    """Run every case on the running loop and print the results."""
    sizes = QUICK if settings.quick else FULL
    async with Node(name="bench") as node:
        await _throughput_case(
            settings,
            "call",
            "calls/s",
            "asyncio.Queue+Future",
            lambda n: corral_calls(node, n),
            baseline_calls,
            sizes.calls,
        )
        await _throughput_case(
            settings,
            "cast",
            "casts/s",
            "asyncio.Queue",
            lambda n: corral_casts(node, n),
            baseline_casts,
            sizes.casts,
        )
        await _crash_case(settings, node, sizes.crashes)


def main() -> None:
    settings = parse_settings("Benchmarks of corral's process runtime against plain asyncio.")
    with asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner:
        runner.run(run(settings))


if __name__ == "__main__":
    main()
