"""Benchmarks of corral ports against a ``multiprocessing.Pipe`` + ``Process`` worker.

    python benchmarks/ports.py [--quick] [--loop uvloop|asyncio] [--verbose]

Prints one JSON object per line (see ``_common.emit``); ``ratio`` is corral / baseline, both
measured in this run on the same event loop (default: uvloop when installed).

The port under test is whatever ``Port`` does by default (only ``env`` is set, to put
``benchmarks/`` on the worker's ``PYTHONPATH``), so a faster transport or restart path shows
up here without changing this file. The baseline is the same work on a
``multiprocessing.Pipe`` to a ``multiprocessing.Process`` started with the platform's default
start method (``fork`` on Linux; every line names it in ``start_method``). Its ``send`` and
``recv`` block the event loop's thread; nothing else runs meanwhile, so that costs nothing.
The handlers of both sides live in ``_port_handlers.py``.

Cases
-----
``small_roundtrip``
    Round trips per second of one caller doing ``await pid.call(x)`` in a loop, where ``x``
    is a 1x64 float32 array the worker echoes. Baseline: ``conn.send(x); conn.recv()`` in a
    loop. Higher is better.

``small_roundtrip_pipelined``
    The same, with 32 caller tasks sharing the one port (``"in_flight": 32``): requests
    overlap and replies are matched by id. The baseline is the same sequential ``Pipe`` as
    above (``"baseline_in_flight": 1``): a ``Pipe`` carries no ids, so it cannot pipeline.

``array_4mb``
    A 1024x1024 float32 array (4 MiB) sent and echoed back, as MB/s one way:
    ``4 MiB / (round trip / 2)``, with MB = 10^6 bytes. Baseline: the same on the ``Pipe``
    (which pickles the array, so its figure also swings with how glibc's malloc happens to
    serve the 4 MiB pickles: from fresh, faulting pages or from reused ones). ``reply_buffer``
    names the type of the buffer the array corral returned is a view of: ``bytes`` when it
    came inline through the pipe, the shared-memory store's type when it came through shared
    memory. A worker that returns the array it received may let the port send the same
    buffer back without copying it (shared memory can forward a segment), which a real
    handler computing a new array cannot; so ``new_array_reply`` is the same figure for a
    worker that replies with a copy (``_port_handlers:Copy``; its ``ratio`` is against the
    same ``Pipe``). Every side's reply is checked against the array sent once, in the
    warm-up. Higher is better.

``crash_to_first_reply``
    Milliseconds from ``os.kill(worker, SIGKILL)`` to the first successful reply from its
    replacement. corral: a ``Port`` running ``_port_handlers:Model`` (its ``setup`` imports
    numpy and builds a small MLP) under a ``Supervisor``; the caller learns the worker's OS pid
    with a call, kills it, polls ``node.whereis(name)`` with ``await asyncio.sleep(0)`` until
    the supervisor registered a new port, and calls it with a 1x64 array. Crashes are 1 s
    apart (0.6 s with ``--quick``), untimed, so that whatever the port does in the
    background after a restart (refilling its pool of warm spare workers, at the time of
    writing) is done before the next crash: this measures an isolated crash, not a crash
    loop. Baseline: kill the ``Process``, ``join`` it, start a new one running
    ``pipe_model`` (same model) and get its first reply over a new ``Pipe``. Under ``fork``
    the child inherits the parent's numpy, so it skips the import that a fresh port worker
    pays; ``baseline_spawn`` is the same baseline under the ``spawn`` start method (which
    also re-imports this script, as ``spawn`` does), for comparison with figures quoted for
    ``spawn``. ``median_ms`` and ``p99_ms`` are taken over the crashes of all repeats
    pooled (a process start each, so there are few: 21 with ``--quick``, 50 without);
    ``cpu_ms`` is the same statistic of the parent thread's CPU time. ``target_ms`` is the
    issue's goal for the median. Lower is better; such lines carry
    ``"lower_is_better": true``.

Method: one warm-up of every side, then ``R`` repeats (5, or 3 with ``--quick``) with corral
and the baseline interleaved in alternating order; each throughput is the median of the
repeats. Each worker (port or ``Process``) is started once per case, outside the timing,
except in the crash case, where starting is what is measured.

The machine's 1-minute load average at the end of each case is in ``load_1min``: above
the number of CPUs, other jobs shared them with the benchmark, and its figures are noisy.

CPU: ``cpu_share`` is the median fraction of the wall-clock time the parent's thread was on
a CPU, and ``cpu_us_per_op`` (``cpu_ms`` for crashes) the parent thread's CPU time per
round trip, corral and baseline. Unlike in ``runtime.py`` the parent waits for its worker
here, so a share below 1 is expected; these say how much of each round trip the parent's
own code costs (the worker's CPU is not counted).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.context import DefaultContext, SpawnContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

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
from _port_handlers import OUTPUTS, PID, pipe_echo, pipe_model
from corral import SHUTDOWN, ChildSpec, Node, Pid, Supervisor
from corral.port import Port

BENCH: Final = "ports"
PIPE: Final = "multiprocessing.Pipe"
IN_FLIGHT: Final = 32
"""Concurrent callers in ``small_roundtrip_pipelined``."""
MODEL_INPUTS: Final = 64
SMALL_SHAPE: Final = (1, MODEL_INPUTS)
ARRAY_SHAPE: Final = (1024, 1024)
SMALL_TARGET_RATIO: Final = 2.5
"""Target: small round trips per second at least this many times the ``Pipe``'s."""
ARRAY_TARGET_MB_S: Final = 2000.0
"""Target for ``array_4mb``, in MB/s one way."""
CRASH_TARGET_MS: Final = 10.0
"""Target for the median of ``crash_to_first_reply``, in milliseconds."""
MODEL_NAME: Final = "bench-model-port"
_PORT_ENV: Final = {
    "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH")) if p
    )
}


_Context = DefaultContext | SpawnContext
"""A ``multiprocessing`` context: the default one, or ``spawn``'s."""


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """Round trips per measurement (warm-ups use a tenth), crashes per repeat, and
    ``settle``: seconds to wait, untimed, after starting a port and after each crash, so
    that work the runtime does in the background (such as starting a spare worker)
    finishes before the next measurement instead of competing with it."""

    small: int
    arrays: int
    crashes: int
    settle: float


FULL = Sizes(small=20_000, arrays=100, crashes=10, settle=1.0)
QUICK = Sizes(small=5_000, arrays=40, crashes=7, settle=0.6)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise RuntimeError(message)


def _same(reply: object, sent: npt.NDArray[np.float32]) -> bool:
    return isinstance(reply, np.ndarray) and np.array_equal(reply, sent)


# -- the two kinds of worker ---------------------------------------------------------------


class PipeWorker:
    """A ``Process`` running ``target(conn, *args)`` on the far end of a ``Pipe``."""

    def __init__(self, context: _Context, target: Callable[..., None], *args: object) -> None:
        self.conn, child = context.Pipe()
        self.process: BaseProcess = context.Process(target=target, args=(child, *args), daemon=True)
        self.process.start()
        child.close()

    @property
    def os_pid(self) -> int:
        pid = self.process.pid
        if pid is None:
            raise RuntimeError("PipeWorker: the process has no pid")
        return pid

    def kill(self) -> None:
        """SIGKILL the worker and reap it."""
        os.kill(self.os_pid, signal.SIGKILL)
        self.process.join()
        self.conn.close()

    def close(self) -> None:
        """Ask the worker to return (``None``), kill it if it does not within a second."""
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(1.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


async def _spawn_port(node: Node, handler: str, settle: float) -> Pid:
    pid = await node.spawn(Port(handler, env=_PORT_ENV))
    await asyncio.sleep(settle)
    return pid


async def _stop(pid: Pid) -> None:
    pid.exit(SHUTDOWN)
    await pid.wait_exit()


# -- round trips -----------------------------------------------------------------------------


async def corral_roundtrips(pid: Pid, msg: object, n: int) -> Timing:
    """One caller, ``n`` sequential ``call``s of ``msg``."""
    call = pid.call
    watch = Stopwatch()
    watch.start()
    for _ in range(n):
        await call(msg)
    watch.stop()
    return Timing.of(n, watch)


async def corral_pipelined(pid: Pid, msg: object, n: int, in_flight: int = IN_FLIGHT) -> Timing:
    """``in_flight`` caller tasks on one port, ``n // in_flight`` sequential calls each."""
    call = pid.call
    each = max(1, n // in_flight)

    async def caller() -> None:
        for _ in range(each):
            await call(msg)

    watch = Stopwatch()
    watch.start()
    async with asyncio.TaskGroup() as group:
        for _ in range(in_flight):
            group.create_task(caller())
    watch.stop()
    return Timing.of(each * in_flight, watch)


async def pipe_roundtrips(worker: PipeWorker, msg: object, n: int) -> Timing:
    """``n`` sequential ``send`` + ``recv`` of ``msg`` (blocking; nothing else runs)."""
    send, recv = worker.conn.send, worker.conn.recv
    watch = Stopwatch()
    watch.start()
    for _ in range(n):
        send(msg)
        recv()
    watch.stop()
    return Timing.of(n, watch)


# -- crash_to_first_reply ----------------------------------------------------------------------


@dataclass
class CrashRun:
    """One repeat of ``crash_to_first_reply``: per-crash wall-clock and CPU seconds."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, watch: Stopwatch) -> None:
        self.wall.append(watch.wall)
        self.cpu.append(watch.cpu)


def _check_prediction(reply: object, where: str) -> None:
    ok = isinstance(reply, np.ndarray) and reply.shape == (1, OUTPUTS)
    _check(ok, f"{where}: reply {reply!r:.100}, expected a (1, {OUTPUTS}) array")


async def corral_crashes(node: Node, x: npt.NDArray[np.float32], n: int, settle: float) -> CrashRun:
    """``n`` times: SIGKILL the named port's worker, time until its replacement replies,
    then wait ``settle`` seconds (untimed)."""
    whereis = node.whereis
    run = CrashRun()
    watch = Stopwatch()
    for _ in range(n):
        old = whereis(MODEL_NAME)
        if old is None:
            raise RuntimeError(f"crash_to_first_reply: no process named {MODEL_NAME!r}")
        os_pid = await old.call(PID)
        if not isinstance(os_pid, int):
            raise RuntimeError(f"crash_to_first_reply: pid reply {os_pid!r}, expected an int")
        watch.start()
        os.kill(os_pid, signal.SIGKILL)
        while True:
            new = whereis(MODEL_NAME)
            if new is not None and new is not old:
                break
            await asyncio.sleep(0)
        reply = await new.call(x)
        watch.stop()
        run.add(watch)
        _check_prediction(reply, "crash_to_first_reply (corral)")
        await asyncio.sleep(settle)
    return run


class PipeModel:
    """The baseline's "supervised" model worker: replaced by hand after each kill."""

    def __init__(self, context: _Context) -> None:
        self.context = context
        self.worker = self._start()
        self.worker.conn.send(np.zeros(SMALL_SHAPE, dtype=np.float32))
        self.worker.conn.recv()

    def _start(self) -> PipeWorker:
        return PipeWorker(self.context, pipe_model, MODEL_INPUTS)

    async def crashes(self, x: npt.NDArray[np.float32], n: int) -> CrashRun:
        """``n`` times: SIGKILL the worker, reap it, start a new one, time its first reply."""
        run = CrashRun()
        watch = Stopwatch()
        for _ in range(n):
            watch.start()
            self.worker.kill()
            self.worker = self._start()
            self.worker.conn.send(x)
            reply = self.worker.conn.recv()
            watch.stop()
            run.add(watch)
            _check_prediction(reply, "crash_to_first_reply (Pipe)")
        return run

    def close(self) -> None:
        self.worker.close()


# -- driver ----------------------------------------------------------------------------------


def _cpu_share(runs: Sequence[Timing]) -> float:
    return median([t.cpu_share for t in runs])


async def _roundtrip_case(
    settings: Settings,
    case: str,
    corral_side: Callable[[int], Awaitable[Timing]],
    pipe_side: Callable[[int], Awaitable[Timing]],
    n: int,
    *,
    start_method: str,
    to_value: Callable[[float], float] = lambda rate: rate,
    unit: str = "round trips/s",
    variants: Mapping[str, Callable[[int], Awaitable[Timing]]] | None = None,
    **extra: object,
) -> None:
    """Measure corral, the ``Pipe`` and any ``variants`` (more corral sides, reported as
    extra keys ``{"value", "ratio"}`` under their names) and print the line."""
    say(f"ports: {case} ({n} round trips x {settings.repeats} repeats, {settings.loop})")
    sides = {"corral": corral_side, PIPE: pipe_side, **(variants or {})}
    for side in sides.values():
        await side(max(1, n // 10))
    all_runs = await interleaved(
        [partial(side, n) for side in sides.values()],
        settings.repeats,
    )
    runs_of = dict(zip(sides, all_runs, strict=True))
    if settings.verbose:
        for name, runs in runs_of.items():
            say(f"  {name:20} wall {[round(to_value(t.rate)) for t in runs]}")
            say(f"  {name:20} cpu  {[round(t.cpu / t.ops * 1e6, 2) for t in runs]} us/op")
    corral_runs, pipe_runs = runs_of.pop("corral"), runs_of.pop(PIPE)
    value = to_value(median([t.rate for t in corral_runs]))
    baseline = to_value(median([t.rate for t in pipe_runs]))
    # Any: these keys are emit's free-form extras, never its typed parameters.
    fields: dict[str, Any] = dict(extra)
    for name, runs in runs_of.items():
        variant = to_value(median([t.rate for t in runs]))
        fields[name] = {"value": variant, "ratio": variant / baseline}
    emit(
        bench=BENCH,
        case=case,
        metric="throughput",
        value=value,
        unit=unit,
        baseline_name=PIPE,
        baseline_value=baseline,
        loop=settings.loop,
        start_method=start_method,
        **fields,
        cpu_us_per_op={
            "value": median([t.cpu / t.ops * 1e6 for t in corral_runs]),
            "baseline": median([t.cpu / t.ops * 1e6 for t in pipe_runs]),
        },
        cpu_share=_cpu_share(corral_runs + pipe_runs),
        load_1min=os.getloadavg()[0],
    )


async def small_cases(settings: Settings, node: Node, sizes: Sizes, context: _Context) -> None:
    x = np.arange(MODEL_INPUTS, dtype=np.float32).reshape(SMALL_SHAPE)
    pipe = PipeWorker(context, pipe_echo)
    port = await _spawn_port(node, "_port_handlers:Echo", sizes.settle)
    try:
        reply = await port.call(x)
        _check(_same(reply, x), f"small_roundtrip: port replied {reply!r:.100}")
        pipe.conn.send(x)
        _check(_same(pipe.conn.recv(), x), "small_roundtrip: the Pipe mangled x")
        method = context.get_start_method()
        await _roundtrip_case(
            settings,
            "small_roundtrip",
            lambda n: corral_roundtrips(port, x, n),
            lambda n: pipe_roundtrips(pipe, x, n),
            sizes.small,
            start_method=method,
            in_flight=1,
            target_ratio=SMALL_TARGET_RATIO,
        )
        await _roundtrip_case(
            settings,
            "small_roundtrip_pipelined",
            lambda n: corral_pipelined(port, x, n),
            lambda n: pipe_roundtrips(pipe, x, n),
            sizes.small,
            start_method=method,
            in_flight=IN_FLIGHT,
            baseline_in_flight=1,
            target_ratio=SMALL_TARGET_RATIO,
        )
    finally:
        await _stop(port)
        pipe.close()


def _root_buffer(array: object) -> str:
    """The type name of the buffer a decoded array is ultimately a view of."""
    while isinstance(array, np.ndarray) and array.base is not None:
        array = array.base
    return type(array).__name__


async def array_case(settings: Settings, node: Node, sizes: Sizes, context: _Context) -> None:
    x = np.random.default_rng(0).standard_normal(ARRAY_SHAPE, dtype=np.float32)
    nbytes = x.nbytes
    pipe = PipeWorker(context, pipe_echo)
    port = await _spawn_port(node, "_port_handlers:Echo", sizes.settle)
    copier = await _spawn_port(node, "_port_handlers:Copy", sizes.settle)
    try:
        reply = await port.call(x)
        _check(_same(reply, x), "array_4mb: the port's reply differs from x")
        reply_buffer = _root_buffer(reply)
        del reply
        reply = await copier.call(x)
        _check(_same(reply, x), "array_4mb: the copying port's reply differs from x")
        del reply
        pipe.conn.send(x)
        _check(_same(pipe.conn.recv(), x), "array_4mb: the Pipe's reply differs from x")
        await _roundtrip_case(
            settings,
            "array_4mb",
            lambda n: corral_roundtrips(port, x, n),
            lambda n: pipe_roundtrips(pipe, x, n),
            sizes.arrays,
            start_method=context.get_start_method(),
            to_value=lambda rate: 2 * nbytes * rate / 1e6,
            unit="MB/s",
            variants={"new_array_reply": lambda n: corral_roundtrips(copier, x, n)},
            bytes=nbytes,
            reply_buffer=reply_buffer,
            target_mb_s=ARRAY_TARGET_MB_S,
        )
    finally:
        await _stop(copier)
        await _stop(port)
        pipe.close()


async def crash_case(settings: Settings, node: Node, sizes: Sizes, context: _Context) -> None:
    n = sizes.crashes
    say(f"ports: crash_to_first_reply ({n} crashes x {settings.repeats} repeats, {settings.loop})")
    x = np.ones(SMALL_SHAPE, dtype=np.float32)
    spec = ChildSpec(
        id="model",
        start=lambda: Port("_port_handlers:Model", args={"inputs": MODEL_INPUTS}, env=_PORT_ENV),
        name=MODEL_NAME,
    )
    # Crash reports and the killed worker's stderr go to the "corral" loggers; formatting
    # them is not what we measure, so they are silenced here and the level restored after.
    corral_logger = logging.getLogger("corral")
    saved_level = corral_logger.level
    corral_logger.setLevel(logging.CRITICAL)
    supervisor = await node.spawn(Supervisor([spec], max_restarts=1_000_000, max_seconds=1.0))
    await asyncio.sleep(sizes.settle)
    fork = PipeModel(context)
    spawn = PipeModel(multiprocessing.get_context("spawn"))
    try:
        await corral_crashes(node, x, 1, sizes.settle)
        await fork.crashes(x, 1)
        await spawn.crashes(x, 1)
        corral_runs, fork_runs, spawn_runs = await interleaved(
            [
                lambda: corral_crashes(node, x, n, sizes.settle),
                lambda: fork.crashes(x, n),
                lambda: spawn.crashes(x, n),
            ],
            settings.repeats,
        )
    finally:
        await _stop(supervisor)
        fork.close()
        spawn.close()
        corral_logger.setLevel(saved_level)

    def pooled(runs: list[CrashRun], what: str = "wall") -> list[float]:
        return [s * 1000 for run in runs for s in getattr(run, what)]

    corral, base, spawned = pooled(corral_runs), pooled(fork_runs), pooled(spawn_runs)
    if settings.verbose:
        for side, samples in (("corral", corral), ("fork", base), ("spawn", spawned)):
            say(f"  {side:6} ms {sorted(round(v, 2) for v in samples)}")
    shares = [sum(r.cpu) / sum(r.wall) for r in corral_runs + fork_runs]
    stats: tuple[tuple[str, Callable[[list[float]], float]], ...] = (
        ("median_ms", median),
        ("p99_ms", lambda values: percentile(values, 99)),
    )
    for metric, stat in stats:
        emit(
            bench=BENCH,
            case="crash_to_first_reply",
            metric=metric,
            value=stat(corral),
            unit="ms",
            baseline_name=f"{PIPE}+Process",
            baseline_value=stat(base),
            loop=settings.loop,
            lower_is_better=True,
            start_method=context.get_start_method(),
            crashes=len(corral),
            target_ms=CRASH_TARGET_MS,
            baseline_spawn={"name": f"{PIPE}+Process (spawn)", "value": stat(spawned)},
            cpu_ms={
                "value": stat(pooled(corral_runs, "cpu")),
                "baseline": stat(pooled(fork_runs, "cpu")),
            },
            cpu_share=median(shares),
            load_1min=os.getloadavg()[0],
        )


async def run(settings: Settings) -> None:
    """Run every case on the running loop and print the results."""
    sizes = QUICK if settings.quick else FULL
    context = multiprocessing.get_context()
    async with Node(name="bench") as node:
        await small_cases(settings, node, sizes, context)
        await array_case(settings, node, sizes, context)
        await crash_case(settings, node, sizes, context)


def main() -> None:
    settings = parse_settings("Benchmarks of corral ports against multiprocessing.Pipe.")
    with asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner:
        runner.run(run(settings))


if __name__ == "__main__":
    main()
