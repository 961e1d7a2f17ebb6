"""The hot-swap, deadline and poison cases of benchmarks/serving.py (issue 12).

``swap_slow_import_port``
    Two port partitions of the tiny MLP, 64 closed-loop callers; mid-load, ``swap()`` to a
    version whose module's import costs ~1 s of CPU (``_serving_slow_model``). Time from the call
    to the flip (the ``("corral", "serving", "swapped")`` event) and to the call's return,
    and requests failed (must be 0). Baseline: one worker's cold start (a fresh interpreter
    importing the module), measured idle in the same run. No warm spares here (a spare of
    the new version would load the model too, during the swap, on the same two cores).
``deadline_overload_port``
    One port partition of a model whose every batch takes ``SLOW_BATCH`` s (a sleep),
    ``batch_size=16``. First its throughput under closed-loop load; then requests with
    ``deadline=0.5`` offered open loop (one task each, issued on a 1 ms tick) at 10x that
    for a bounded time. For each ``DeadlineExceeded``: when the caller got it, less submit
    time, less 0.5 s. Baseline: the same for ``asyncio.sleep(0.5)`` on the same loop during
    the same load (a probe every 5 ms): the lateness any loop-timed deadline starts from.
    Also: goodput (requests answered in time per second, against the throughput), how many
    expired while their batch ran, and the garbage collector's pauses meanwhile.
``poison_1pct_port``
    Two port partitions of a model that calls ``os.abort()`` on a batch holding a sample
    whose first element is ``POISON``; 64 closed-loop callers, every 100th request (counted
    across callers) poisoned. Innocent requests failed (target 0), poison requests failed
    (all expected, with ``PartitionCrashed``), worker restarts and serving restarts (from
    the supervisors' ``child_exited`` events), whether a supervisor gave up, throughput and
    the longest time without any answer. Partition restart intensity options are passed
    when ``ServingOptions`` has them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping

import numpy as np

from _common import Settings, emit, percentile, say
from _serving_fault_models import POISON, SLOW_BATCH
from _serving_load import BATCH, CALLERS, HERE, Load, port_options
from corral import Node, telemetry
from corral.errors import DeadlineExceeded, ServingNotRunning
from corral.serving import Serving, ServingOptions

__all__ = ["deadline_case", "poison_case", "swap_case"]

BENCH = "serving"
SWAPPED = ("corral", "serving", "swapped")
CHILD_EXITED = ("corral", "supervisor", "child_exited")
GAVE_UP = ("corral", "supervisor", "gave_up")

DEADLINE = 0.5
"""Seconds: the deadline of every request of the deadline case."""
DEADLINE_TARGET = 0.010
"""Seconds: the p99 of DeadlineExceeded's lateness the deadline case aims at."""
OVERLOAD = 10.0
"""The deadline case offers this many times the partition's measured throughput."""
DEADLINE_BATCH = 16

POISON_EVERY = 100
"""One request in this many is poisoned."""
PARTITION_INTENSITY = {"partition_max_restarts": 100, "partition_max_seconds": 1.0}
"""Partition restart intensity for the poison case, used where ServingOptions has it: a
model known to crash on some inputs restarts often, by design."""


def _fields() -> set[str]:
    return {f.name for f in dataclasses.fields(ServingOptions)}


# -- swap -------------------------------------------------------------------------------------


def cold_start() -> float:
    """Seconds for a fresh interpreter to import the serving's port handler and
    ``_serving_slow_model`` and build the model, as a port worker does before it is ready."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{HERE}{os.pathsep}{path}" if path else str(HERE)
    start = time.perf_counter()
    code = "import corral.serving.port_handler, _serving_slow_model as m; m.model()"
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - start


async def swap_case(settings: Settings, partitions: int = 2) -> None:
    before, after = (0.4, 0.25) if settings.quick else (2.0, 2.0)
    cold = cold_start()
    serving = Serving(
        "_serving_models:tiny_mlp",  # quick to start; the version swapped in is the slow one
        name="swap",
        kind="port",
        partitions=partitions,
        batch_size=BATCH,
        batch_timeout=0.002,
        port_options=port_options(spares=0),
        # The all-at-once swap this case has measured since issue 12, where the option
        # exists: a rolling swap (the port default since issue 16) flips partition by
        # partition; benchmarks/swap.py compares the two.
        **({"swap": "all_at_once"} if "swap" in _fields() else {}),
    )
    flips: list[float] = []

    def on_swapped(
        event: object, measurements: object, metadata: Mapping[str, object], config: object
    ) -> None:
        if metadata.get("serving") == "swap":
            flips.append(time.perf_counter())

    telemetry.attach("bench-serving-swap", SWAPPED, on_swapped)
    try:
        async with Node([serving.child_spec()]):
            load = Load(serving, 64)
            load.start()
            await asyncio.sleep(0.25)  # warm-up, not measured
            load.reset()
            start = time.perf_counter()
            await asyncio.sleep(before)
            served_before = len(load.latencies)
            called = time.perf_counter()
            await serving.swap(
                "_serving_slow_model:model", version="2", warmup=np.zeros(64, np.float32)
            )
            returned = time.perf_counter()
            served_during = len(load.latencies) - served_before
            await asyncio.sleep(after)
            await load.finish()
            stats = serving.statistics()
            version = serving.version
    finally:
        telemetry.detach("bench-serving-swap")
    flip = flips[0] - called if flips else float("nan")
    failed = load.failed + stats.failed
    emit(
        bench=BENCH,
        case="swap_slow_import_port",
        metric="time_to_flip",
        value=flip,
        unit="s",
        baseline_name="one worker's cold start: a fresh interpreter importing the model "
        "module (~1 s of CPU), idle, same run",
        baseline_value=cold,
        loop=settings.loop,
        lower_is_better=True,
        time_to_return_s=returned - called,
        failed=failed,
        target_failed=0,
        target_met=failed == 0,
        version_after=version,
        p99_ms=percentile(load.latencies, 99) * 1e3,
        max_latency_ms=max(load.latencies) * 1e3,
        req_per_s_before=served_before / (called - start),
        req_per_s_during=served_during / (returned - called),
        partitions=partitions,
        spares=0,
    )
    say(
        f"swap_slow_import_port: flip after {flip:.3f} s, returned after "
        f"{returned - called:.3f} s (cold start {cold:.3f} s), failed={failed}"
    )


# -- deadline ---------------------------------------------------------------------------------


class GcPauses:
    """Records the cyclic garbage collector's pauses while entered (``gc.callbacks``): at
    10x overload thousands of requests wait, and a full collection walks them all while
    the loop, its timers and every deadline wait."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0

    def __call__(self, phase: str, info: Mapping[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)

    def longest(self, generation: int) -> float:
        return max((p for g, p in self.pauses if g == generation), default=0.0)


class OpenLoop:
    """Requests with a deadline issued at a fixed rate, each in its own task."""

    def __init__(self, serving: Serving, rate: float) -> None:
        self.serving = serving
        self.rate = rate
        self.x = np.zeros(64, np.float32)
        self.late: list[float] = []
        self.probes: list[float] = []
        self.served = 0
        self.other: Counter[str] = Counter()
        self.issued = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.elapsed = 0.0
        self.ran = 0

    async def one(self) -> None:
        t0 = time.perf_counter()
        try:
            await self.serving.run(self.x, deadline=DEADLINE)
        except DeadlineExceeded as exc:
            self.late.append(time.perf_counter() - t0 - DEADLINE)
            self.ran += getattr(exc, "ran", False) is True  # expired while its batch ran
        except Exception as exc:
            self.other[type(exc).__name__] += 1
        else:
            self.served += 1

    async def probe(self) -> None:
        t0 = time.perf_counter()
        await asyncio.sleep(DEADLINE)
        self.probes.append(time.perf_counter() - t0 - DEADLINE)

    def spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def offer(self, seconds: float) -> float:
        """Issue requests for ``seconds``, then wait for every answer; returns the rate
        actually offered (req/s). ``elapsed``: seconds until the last answer."""
        start = time.perf_counter()
        next_probe = 0.0
        while (now := time.perf_counter() - start) < seconds:
            due = int(self.rate * now)
            while self.issued < due:
                self.spawn(self.one())
                self.issued += 1
            if now >= next_probe:
                self.spawn(self.probe())
                next_probe += 0.005
            await asyncio.sleep(0.001)
        offered = self.issued / (time.perf_counter() - start)
        await asyncio.wait(set(self.tasks), timeout=DEADLINE + 5.0)
        self.elapsed = time.perf_counter() - start
        return offered


async def deadline_case(settings: Settings) -> None:
    measure, offer = (0.6, 1.5) if settings.quick else (1.5, 5.0)
    serving = Serving(
        "_serving_fault_models:slow_batch",
        name="deadline",
        kind="port",
        batch_size=DEADLINE_BATCH,
        batch_timeout=0.002,
        max_queue=1 << 16,
        port_options=port_options(),
    )
    async with Node([serving.child_spec()]):
        capacity = await Load(serving, 64).run_for(measure)
        loop = OpenLoop(serving, OVERLOAD * capacity)
        with GcPauses() as gcs:
            offered = await loop.offer(offer)
        stats = serving.statistics()
        left = len(loop.tasks)
        for task in list(loop.tasks):
            task.cancel()
    late = loop.late
    if not late:
        say(f"deadline_overload_port: no DeadlineExceeded ({loop.served} served, {loop.other})")
        return
    p99 = percentile(late, 99)
    emit(
        bench=BENCH,
        case="deadline_overload_port",
        metric="deadline_lateness_p99",
        value=p99 * 1e3,
        unit="ms",
        baseline_name=f"the loop's own lateness for asyncio.sleep({DEADLINE}) under the same "
        "load (p99)",
        baseline_value=percentile(loop.probes, 99) * 1e3,
        loop=settings.loop,
        lower_is_better=True,
        p50_ms=percentile(late, 50) * 1e3,
        max_ms=max(late) * 1e3,
        min_ms=min(late) * 1e3,
        early=sum(1 for t in late if t < 0),
        target_ms=DEADLINE_TARGET * 1e3,
        target_met=p99 <= DEADLINE_TARGET,
        deadline_s=DEADLINE,
        capacity_req_per_s=capacity,
        offered_req_per_s=offered,
        overload=offered / capacity,
        expired=len(late),
        expired_while_running=loop.ran,
        served=loop.served,
        goodput_req_per_s=loop.served / loop.elapsed,
        goodput_to_capacity=loop.served / loop.elapsed / capacity,
        other_failures=dict(loop.other),
        unanswered=left,
        expired_by_serving=stats.expired,
        batches=stats.batches,
        mean_batch_size=stats.mean_batch_size,
        batch_s=SLOW_BATCH,
        batch_size=DEADLINE_BATCH,
        gc_full_collections=sum(1 for g, _ in gcs.pauses if g == 2),
        gc_longest_full_ms=gcs.longest(2) * 1e3,
        gc_longest_young_ms=max(gcs.longest(0), gcs.longest(1)) * 1e3,
    )
    say(
        f"deadline_overload_port: {len(late)} expired, lateness p50 "
        f"{percentile(late, 50) * 1e3:.2f} ms p99 {p99 * 1e3:.2f} ms max {max(late) * 1e3:.2f} "
        f"ms at {offered / capacity:.1f}x of {capacity:.0f} req/s; longest full gc "
        f"{gcs.longest(2) * 1e3:.1f} ms"
    )


# -- poison -----------------------------------------------------------------------------------


class PoisonLoad:
    """Closed-loop callers; every POISON_EVERY-th request (across callers) is poisoned."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self.x = np.random.default_rng(2).standard_normal(64).astype(np.float32)
        self.poison = self.x.copy()
        self.poison[0] = POISON
        self.count = itertools.count(1)
        self.ok = {False: 0, True: 0}
        self.failed: dict[bool, Counter[str]] = {False: Counter(), True: Counter()}
        self.stop = False
        self.down_since: float | None = None
        self.down = 0.0
        self.last = time.perf_counter()
        self.gap = 0.0
        """The longest time between two answers (any caller): how long the serving stood
        still, e.g. with every partition down."""

    async def caller(self) -> None:
        run = self.serving.run
        while not self.stop:
            poisoned = next(self.count) % POISON_EVERY == 0
            try:
                await run(self.poison if poisoned else self.x)
            except Exception as exc:
                self.failed[poisoned][type(exc).__name__] += 1
                if isinstance(exc, ServingNotRunning):
                    if self.down_since is None:
                        self.down_since = time.perf_counter()
                    await asyncio.sleep(0.01)  # a client's back-off while it restarts
            else:
                self.ok[poisoned] += 1
                self.up()
                now = time.perf_counter()
                self.gap = max(self.gap, now - self.last)
                self.last = now

    def up(self) -> None:
        """End the current outage (callers getting ServingNotRunning), if any."""
        if self.down_since is not None:
            self.down += time.perf_counter() - self.down_since
            self.down_since = None


async def poison_case(settings: Settings, spares: int = 1) -> None:
    seconds = 2.0 if settings.quick else 8.0
    options: dict[str, object] = {
        "kind": "port",
        "partitions": 2,
        "batch_size": BATCH,
        "batch_timeout": 0.002,
        "port_options": port_options(spares=spares),
    }
    intensity = {k: v for k, v in PARTITION_INTENSITY.items() if k in _fields()}
    options.update(intensity)
    serving = Serving("_serving_fault_models:poison_mlp", name="poison", **options)  # type: ignore[arg-type]
    exits: Counter[str] = Counter()
    gave_up: list[str] = []

    def on_exit(
        event: object, measurements: object, metadata: Mapping[str, object], config: object
    ) -> None:
        child = str(metadata.get("child_id"))
        exits["worker" if child.startswith("partition-") else child] += 1

    def on_gave_up(
        event: object, measurements: object, metadata: Mapping[str, object], config: object
    ) -> None:
        gave_up.append(str(metadata.get("supervisor")))

    telemetry.attach("bench-serving-poison-exit", CHILD_EXITED, on_exit)
    telemetry.attach("bench-serving-poison-gave-up", GAVE_UP, on_gave_up)
    quiet = logging.getLogger("corral")
    level = quiet.level
    if not settings.verbose:
        quiet.setLevel(logging.CRITICAL)  # one crash report per worker restart otherwise
    load = PoisonLoad(serving)
    node_error = ""
    elapsed = 0.0
    try:
        async with asyncio.timeout(seconds + 60.0), Node([serving.child_spec()]):
            tasks = [asyncio.create_task(load.caller()) for _ in range(CALLERS)]
            start = load.last = time.perf_counter()
            await asyncio.sleep(seconds)
            elapsed = time.perf_counter() - start
            load.stop = True
            load.up()
            await asyncio.gather(*tasks)
    except Exception as exc:  # a supervisor that gave up takes the node down: report it
        node_error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        quiet.setLevel(level)
        telemetry.detach("bench-serving-poison-exit")
        telemetry.detach("bench-serving-poison-gave-up")
    innocent_failed = sum(load.failed[False].values())
    innocent = load.ok[False] + innocent_failed
    poison_failed = sum(load.failed[True].values())
    emit(
        bench=BENCH,
        case="poison_1pct_port",
        metric="innocent_failed",
        value=innocent_failed,
        unit="requests",
        baseline_name="innocent requests sent",
        baseline_value=innocent,
        loop=settings.loop,
        lower_is_better=True,
        target=0,
        target_met=innocent_failed == 0,
        innocent_errors=dict(load.failed[False]),
        poison_sent=load.ok[True] + poison_failed,
        poison_failed=poison_failed,
        poison_errors=dict(load.failed[True]),
        poison_succeeded=load.ok[True],
        worker_restarts=exits["worker"],
        restarts_per_poison=exits["worker"] / max(load.ok[True] + poison_failed, 1),
        serving_restarts=exits["poison"],
        other_exits={k: v for k, v in exits.items() if k not in ("worker", "poison")},
        supervisors_gave_up=len(gave_up),
        not_running_s=load.down,
        longest_stall_s=load.gap,
        node_error=node_error,
        req_per_s=(load.ok[False] + load.ok[True]) / elapsed if elapsed else 0.0,
        seconds=seconds,
        spares=spares,
        **intensity,
    )
    say(
        f"poison_1pct_port: innocent failed {innocent_failed}/{innocent} "
        f"{dict(load.failed[False])}, poison failed {poison_failed} {dict(load.failed[True])}, "
        f"worker restarts {exits['worker']}, serving restarts {exits['poison']}"
        + (f", node: {node_error}" if node_error else "")
    )
