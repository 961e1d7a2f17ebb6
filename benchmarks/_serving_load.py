"""What every case of benchmarks/serving.py shares: the load (closed-loop callers), the
model's ceiling, and the options port partitions get.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from corral.serving import ServingOptions

__all__ = ["BATCH", "CALLERS", "HERE", "Load", "Runs", "ceiling", "port_options"]

HERE = Path(__file__).resolve().parent

CALLERS = 64
"""Closed-loop caller tasks of every load."""

BATCH = 64
"""``batch_size`` of every case but the unbatched one and the deadline case."""


class Runs(Protocol):
    """What a load drives: a serving, or one of the baselines."""

    def run(self, x: np.ndarray) -> Awaitable[object]: ...


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


def _workers_inherit_sys_path() -> bool:
    fields = {f.name: f.default for f in dataclasses.fields(ServingOptions)}
    return fields.get("inherit_sys_path") is True


def port_options(spares: int = 1) -> dict[str, object]:
    """Port workers run BLAS on one thread and find the benchmark's models (on their own
    when the serving passes its ``sys.path`` on to them, which has ``benchmarks/``; else
    through ``PYTHONPATH``); ``spares`` warm spares."""
    env = {"OPENBLAS_NUM_THREADS": "1"}
    if not _workers_inherit_sys_path():
        path = os.environ.get("PYTHONPATH", "")
        env["PYTHONPATH"] = f"{HERE}{os.pathsep}{path}" if path else str(HERE)
    return {"env": env, "spares": spares}


class Load:
    """Closed-loop callers; records each request's latency and failures."""

    def __init__(self, serving: Runs, width: int) -> None:
        self.serving = serving
        self.x = np.random.default_rng(2).standard_normal(width).astype(np.float32)
        self.latencies: list[float] = []
        self.failed = 0
        self.stop = False
        self.tasks: list[asyncio.Task[None]] = []

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

    def start(self) -> None:
        """Start CALLERS caller tasks."""
        self.tasks = [asyncio.create_task(self.caller()) for _ in range(CALLERS)]

    def reset(self) -> None:
        """Forget what was recorded so far (the end of a warm-up)."""
        self.latencies.clear()
        self.failed = 0

    async def finish(self) -> None:
        """Stop the callers and wait for their last requests."""
        self.stop = True
        await asyncio.gather(*self.tasks)

    async def run_for(
        self, seconds: float, during: Callable[[], Awaitable[object]] | None = None
    ) -> float:
        """Run CALLERS callers for ``seconds`` (after a short warm-up), with ``during()``
        as a side task from the start of the measured part; returns req/s."""
        self.start()
        await asyncio.sleep(min(0.5, seconds / 4))  # warm-up, not measured
        self.reset()
        start = time.perf_counter()
        if during is not None:
            side = asyncio.ensure_future(during())
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - start
        done = len(self.latencies)
        if during is not None:
            side.cancel()
            await asyncio.gather(side, return_exceptions=True)
        await self.finish()
        return done / elapsed
