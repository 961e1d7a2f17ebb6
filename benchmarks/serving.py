"""Benchmarks of corral.serving against the model's own batched throughput (the ceiling).

    python benchmarks/serving.py [--quick] [--loop uvloop|asyncio] [--verbose] [--cases tiny]

``--cases`` picks groups of cases (comma-separated: ``tiny``, ``big``, ``fault``, ``floor``;
default ``tiny,big,fault``), e.g. ``--cases tiny`` to measure only the tiny MLP while tuning
the hot path.

Prints one JSON object per line (see ``_common.emit``). Every case runs in this process: the
ceiling is the model called in a tight loop on batches of ``batch_size`` on one thread,
measured right before and right after each run (their mean), so a shared machine's load
hits both alike; ``ratio`` is served samples/s over that ceiling. The tiny cases run
3 (``--quick``) or 5 interleaved repeats of 1.25 s or 5 s each (thread, port, unbatched,
rotated); their lines give medians, ``ratio`` is the median of the per-run ``ratios``.

Method (issue 4): ``OPENBLAS_NUM_THREADS=1``; 64 caller tasks on the node's loop, closed loop
(each awaits its result, then sends the next), one sample per request, ``batch_size=64``,
``batch_timeout=0.002``, one partition. Latency is per request, from ``run()`` to its result.

Cases
-----
``tiny_mlp_thread`` / ``tiny_mlp_port``
    The 64->256->256->10 MLP on a thread partition / a port partition (worker process).
``tiny_mlp_unbatched``
    The same with ``batch_size=1`` (thread): what serving without batching gives.
``big_mlp_thread`` / ``big_mlp_port``
    A compute-bound 1024->4096->4096->1024 MLP against its own ceiling.
``fault_sigkill_port``
    Two port partitions; one worker SIGKILLed every 2 s: failed requests and p99.
``fault_swap``
    Thread partition; a hot swap to a new version every 5 s: failed requests and p99.
``tiny_mlp_bare`` / ``tiny_mlp_thread_vs_bare`` (``--cases floor`` only)
    The same load on ``Bare``: a bare asyncio batcher with one model thread, no corral. Its
    ratio to the ceiling is what the machine's thread hand-off and asyncio leave for any
    thread-partition design; ``_vs_bare`` is corral's thread partition against it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy is imported

import argparse
import asyncio
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from queue import SimpleQueue

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    Settings,
    emit,
    interleaved,
    loop_factory,
    median,
    parse_settings,
    percentile,
    say,
)
from _serving_models import big_mlp, tiny_mlp  # noqa: E402
from corral import Node  # noqa: E402
from corral.serving import Serving  # noqa: E402

BENCH = "serving"
CALLERS = 64
BATCH = 64
CEILING_WINDOW = 0.5
"""Seconds the tiny model's ceiling is measured for, right before and right after each run
(the big model's: 1 s, or 2.5 s without --quick)."""


def ceiling(model: Callable[[np.ndarray], np.ndarray], width: int, seconds: float) -> float:
    """Samples/s of the model alone on batches of BATCH, in a tight loop."""
    x = np.random.default_rng(1).standard_normal((BATCH, width)).astype(np.float32)
    model(x)
    n = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        model(x)
        n += BATCH
    return n / elapsed


def port_options() -> dict[str, object]:
    """Port workers find the benchmark's models and run BLAS on one thread; one warm spare."""
    path = os.environ.get("PYTHONPATH", "")
    value = f"{HERE}{os.pathsep}{path}" if path else str(HERE)
    return {"env": {"PYTHONPATH": value, "OPENBLAS_NUM_THREADS": "1"}, "spares": 1}


class Bare:
    """The least an event loop can do for the same load, as a floor to compare with: callers
    append ``(x, future)`` to a list; the one that fills a batch stacks it and hands it to one
    model thread (a ``SimpleQueue``), which answers with one ``call_soon_threadsafe`` that
    resolves the futures. No policy, deadlines, statistics, supervision or timeout (a batch
    waits until it is full): what asyncio and the thread hand-off alone cost on this machine.
    """

    def __init__(self, model: Callable[[np.ndarray], np.ndarray]) -> None:
        self.loop = asyncio.get_running_loop()
        self.model = model
        self.pending: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self.jobs: SimpleQueue[tuple[list[asyncio.Future[np.ndarray]], np.ndarray] | None]
        self.jobs = SimpleQueue()
        self.thread = threading.Thread(target=self.work, name="bare-model")
        self.thread.start()

    def work(self) -> None:
        while (job := self.jobs.get()) is not None:
            futs, xs = job
            self.loop.call_soon_threadsafe(self.deliver, futs, self.model(xs))

    @staticmethod
    def deliver(futs: list[asyncio.Future[np.ndarray]], out: np.ndarray) -> None:
        for fut, row in zip(futs, out, strict=False):
            if not fut.done():
                fut.set_result(row)

    async def run(self, x: np.ndarray) -> np.ndarray:
        fut = self.loop.create_future()
        pending = self.pending
        pending.append((x, fut))
        if len(pending) >= BATCH:
            self.pending = []
            self.jobs.put(([p[1] for p in pending], np.array([p[0] for p in pending])))
        return await fut

    def close(self) -> None:
        for _, fut in self.pending:  # the callers stopped with a part batch queued
            fut.set_result(np.zeros(0, np.float32))
        self.jobs.put(None)
        self.thread.join()


class Load:
    """Closed-loop callers; records each request's latency and failures."""

    def __init__(self, serving: Serving | Bare, width: int) -> None:
        self.serving = serving
        self.x = np.random.default_rng(2).standard_normal(width).astype(np.float32)
        self.latencies: list[float] = []
        self.failed = 0
        self.stop = False

    async def caller(self) -> None:
        run, x, lat = self.serving.run, self.x, self.latencies
        clock = time.perf_counter
        while not self.stop:
            t0 = clock()
            try:
                await run(x)
            except Exception:
                self.failed += 1
                continue
            lat.append(clock() - t0)

    async def run_for(self, seconds: float, during: Callable[[], object] | None = None) -> float:
        """Run CALLERS callers for ``seconds`` (after a short warm-up); returns req/s."""
        tasks = [asyncio.create_task(self.caller()) for _ in range(CALLERS)]
        await asyncio.sleep(min(0.5, seconds / 4))  # warm-up, not measured
        self.latencies.clear()
        self.failed = 0
        start = time.perf_counter()
        if during is not None:
            side = asyncio.create_task(during())  # type: ignore[arg-type]
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - start
        done = len(self.latencies)
        self.stop = True
        if during is not None:
            side.cancel()
            await asyncio.gather(side, return_exceptions=True)
        await asyncio.gather(*tasks)
        return done / elapsed


async def measure(
    factory: str,
    width: int,
    seconds: float,
    model: Callable[[np.ndarray], np.ndarray],
    window: float = CEILING_WINDOW,
    **options: object,
) -> dict[str, float]:
    """One run: the serving under load for ``seconds``, and the model's ceiling measured for
    ``window`` s right before and right after it (their mean), so that the ratio compares
    the two under the same conditions on a shared machine."""
    options.setdefault("batch_size", BATCH)
    options.setdefault("batch_timeout", 0.002)
    if options.get("kind") == "port":
        options["port_options"] = port_options()
    serving = Serving(factory, name="bench", max_queue=4096, **options)  # type: ignore[arg-type]
    before = ceiling(model, width, window)
    async with Node([serving.child_spec()]):
        load = Load(serving, width)
        rate = await load.run_for(seconds)
        stats = serving.statistics()
    ceil = (before + ceiling(model, width, window)) / 2
    lat = load.latencies
    return {
        "rate": rate,
        "ceiling": ceil,
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "mean_batch_size": stats.mean_batch_size,
        "failed": float(load.failed + stats.failed),
    }


async def measure_bare(
    width: int, seconds: float, model: Callable[[np.ndarray], np.ndarray]
) -> dict[str, float]:
    """As ``measure``, for ``Bare`` instead of a serving."""
    before = ceiling(model, width, CEILING_WINDOW)
    bare = Bare(model)
    load = Load(bare, width)
    stopping = asyncio.create_task(load.run_for(seconds))
    while not stopping.done():
        await asyncio.sleep(0.01)
        if load.stop:
            bare.close()  # answers the callers left waiting for a batch that never fills
            break
    rate = await stopping
    ceil = (before + ceiling(model, width, CEILING_WINDOW)) / 2
    lat = load.latencies
    return {
        "rate": rate,
        "ceiling": ceil,
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "mean_batch_size": float(BATCH),
        "failed": float(load.failed),
    }


def report(settings: Settings, case: str, runs: list[dict[str, float]]) -> dict[str, float]:
    """Emit one line for ``runs`` of a case: medians, and the median of the per-run ratios."""

    def mid(key: str) -> float:
        return median([run[key] for run in runs])

    ratios = [run["rate"] / run["ceiling"] for run in runs]
    result = {key: mid(key) for key in ("rate", "ceiling", "p50_ms", "p99_ms", "mean_batch_size")}
    result["failed"] = sum(run["failed"] for run in runs)
    emit(
        bench=BENCH,
        case=case,
        metric="throughput",
        value=result["rate"],
        unit="req/s",
        baseline_name=f"model ceiling (tight loop, batches of {BATCH}, around each run)",
        baseline_value=result["ceiling"],
        loop=settings.loop,
        ratio=median(ratios),
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        mean_batch_size=result["mean_batch_size"],
        failed=result["failed"],
        repeats=len(runs),
        ratios=ratios,
    )
    say(f"{case}: {result['rate']:,.0f} req/s, ratios {[round(r, 3) for r in ratios]}")
    return result


async def fault_case(
    settings: Settings, case: str, seconds: float, steady_p99: float, ceil: float, **kw: object
) -> None:
    kind = kw.pop("kind")
    options: dict[str, object] = {"batch_size": BATCH, "batch_timeout": 0.002, "kind": kind}
    if kind == "port":
        options["port_options"] = port_options()
        options["partitions"] = 2
    serving = Serving("_serving_models:tiny_mlp", name=case, **options)  # type: ignore[arg-type]
    events = 0

    async def kill_every_2s() -> None:
        nonlocal events
        while True:
            await asyncio.sleep(2.0)
            pid = serving.statistics().partitions[events % 2].os_pid
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                events += 1

    async def swap_every_5s() -> None:
        nonlocal events
        versions = ["_serving_models:tiny_mlp_b", "_serving_models:tiny_mlp"]
        while True:
            await asyncio.sleep(5.0 if not settings.quick else 2.0)
            events += 1
            await serving.swap(
                versions[events % 2], version=str(events + 1), warmup=np.zeros(64, np.float32)
            )

    async with Node([serving.child_spec()]):
        load = Load(serving, 64)
        during = kill_every_2s if kind == "port" else swap_every_5s
        rate = await load.run_for(seconds, during)
        stats = serving.statistics()
    p99 = percentile(load.latencies, 99) * 1e3
    emit(
        bench=BENCH,
        case=case,
        metric="p99_latency",
        value=p99,
        unit="ms",
        baseline_name="steady-state p99 (same partition kind)",
        baseline_value=steady_p99,
        loop=settings.loop,
        lower_is_better=True,
        failed=load.failed + stats.failed,
        events=events,
        req_per_s=rate,
        retried_batches=stats.retried_batches,
        ratio_to_ceiling=rate / ceil,
    )
    say(f"{case}: failed={load.failed + stats.failed} p99={p99:.2f} ms events={events}")


GROUPS = ("tiny", "big", "fault", "floor")
DEFAULT_GROUPS = ("tiny", "big", "fault")


def parse_cases(argv: list[str]) -> tuple[frozenset[str], list[str]]:
    """Take ``--cases a,b`` out of ``argv``; returns the groups and the other arguments."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--cases", default=",".join(DEFAULT_GROUPS))
    args, rest = parser.parse_known_args(argv)
    cases = frozenset(c for c in args.cases.split(",") if c)
    if not cases or not cases <= set(GROUPS):
        parser.error(f"--cases: comma-separated groups of {', '.join(GROUPS)}; got {args.cases!r}")
    return cases, rest


async def main(settings: Settings, cases: frozenset[str]) -> None:
    quick = settings.quick
    if "tiny" in cases or "fault" in cases:  # the fault cases compare with the tiny p99s
        thread, port = await tiny_cases(settings, 1.25 if quick else 5.0)
    if "big" in cases:
        seconds = 3.0 if quick else 10.0
        model = big_mlp()
        for kind in ("thread", "port"):
            run = await measure(
                "_serving_models:big_mlp", 1024, seconds, model, 1.0 if quick else 2.5, kind=kind
            )
            report(settings, f"big_mlp_{kind}", [run])
    if "floor" in cases:
        await floor_cases(settings, 1.25 if quick else 5.0)
    if "fault" in cases:
        fault_seconds = 5.5 if quick else 20.0
        tiny_ceiling = ceiling(tiny_mlp(), 64, 1.0)
        await fault_case(
            settings, "fault_sigkill_port", fault_seconds, port["p99_ms"], tiny_ceiling, kind="port"
        )
        await fault_case(
            settings, "fault_swap", fault_seconds, thread["p99_ms"], tiny_ceiling, kind="thread"
        )


async def floor_cases(settings: Settings, seconds: float) -> None:
    """The tiny MLP on a thread partition against ``Bare``, interleaved repeats."""
    model = tiny_mlp()
    sides = [
        lambda: measure("_serving_models:tiny_mlp", 64, seconds, model),
        lambda: measure_bare(64, seconds, model),
    ]
    runs = await interleaved(sides, settings.repeats)
    thread = report(settings, "tiny_mlp_thread", runs[0])
    bare = report(settings, "tiny_mlp_bare", runs[1])
    emit(
        bench=BENCH,
        case="tiny_mlp_thread_vs_bare",
        metric="throughput",
        value=thread["rate"],
        unit="req/s",
        baseline_name="bare asyncio batching on one model thread (the floor; see Bare)",
        baseline_value=bare["rate"],
        loop=settings.loop,
        ratio=median([t["rate"] / b["rate"] for t, b in zip(runs[0], runs[1], strict=True)]),
    )


async def tiny_cases(
    settings: Settings, seconds: float
) -> tuple[dict[str, float], dict[str, float]]:
    """The tiny MLP on a thread, a port, and unbatched, ``settings.repeats`` interleaved
    runs each; returns the thread and port medians."""
    model = tiny_mlp()
    factory = "_serving_models:tiny_mlp"
    sides = [
        lambda: measure(factory, 64, seconds, model),
        lambda: measure(factory, 64, seconds, model, kind="port"),
        lambda: measure(factory, 64, seconds, model, batch_size=1, batch_timeout=0.0),
    ]
    runs = await interleaved(sides, settings.repeats)
    thread = report(settings, "tiny_mlp_thread", runs[0])
    port = report(settings, "tiny_mlp_port", runs[1])
    unbatched = report(settings, "tiny_mlp_unbatched", runs[2])
    for name, res in (("thread", thread), ("port", port)):
        emit(
            bench=BENCH,
            case=f"tiny_mlp_{name}_vs_unbatched",
            metric="throughput",
            value=res["rate"],
            unit="req/s",
            baseline_name="unbatched serving (batch_size=1, thread)",
            baseline_value=unbatched["rate"],
            loop=settings.loop,
        )
    return thread, port


if __name__ == "__main__":
    cases, argv = parse_cases(sys.argv[1:])
    settings = parse_settings(__doc__.splitlines()[0], argv)
    with asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner:
        runner.run(main(settings, cases))
