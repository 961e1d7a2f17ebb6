"""Test doubles for serving tests: models held at a Gate, recording every batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from corral.serving import AsyncFunctionModel
from corral.testing import Gate


class Recorder:
    """A factory of gated models: each batch is recorded (rows' first column, batch
    time) and held at ``gate`` until the test releases it; the output is ``x * factor``."""

    def __init__(self, factor: float = 2.0, *, gate: Gate | None = None) -> None:
        self.factor = factor
        self.gate = gate or Gate()
        self.batches: list[list[float]] = []
        self.times: list[float] = []
        self.loads = 0
        self.fail_with: Exception | None = None

    def __call__(self) -> AsyncFunctionModel:
        self.loads += 1
        return AsyncFunctionModel(self.run)

    async def run(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append([float(v) for v in batch[:, 0]])
        self.times.append(asyncio.get_running_loop().time())
        await self.gate.enter()
        if self.fail_with is not None:
            raise self.fail_with
        return batch * self.factor


def sample(i: float) -> np.ndarray:
    return np.array([i, i], dtype=np.float32)


def double() -> Callable[[np.ndarray], np.ndarray]:
    return lambda b: b * 2
