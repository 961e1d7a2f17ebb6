"""Models for the trainer tests: a linear regression that SIGKILLs its own worker."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from corral.train import LinearRegression, TrainStats
from corral.train.model import Data


class CrashingLinear(LinearRegression):
    """Kills its own process with SIGKILL in its ``crash_on``-th train call (1-based),
    once per ``flag`` file (created just before dying), or every time with ``always``."""

    def __init__(self, *, flag: str, crash_on: int = 2, always: bool = False, **kw: object):
        super().__init__(**kw)  # type: ignore[arg-type]
        self.flag, self.crash_on, self.always, self.calls = Path(flag), crash_on, always, 0

    def train(self, data: Data, *, epochs: int, seed: int) -> TrainStats:
        self.calls += 1
        if self.calls >= self.crash_on and (self.always or self._first_to_claim_the_flag()):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().train(data, epochs=epochs, seed=seed)

    def _first_to_claim_the_flag(self) -> bool:
        # O_EXCL makes the claim atomic: with several workers in the same round, exactly
        # one of them dies (a check-then-touch let two die under load).
        try:
            os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True


class Raising(LinearRegression):
    """A model with a bug: its train raises."""

    def train(self, data: Data, *, epochs: int, seed: int) -> TrainStats:
        raise ValueError("model bug")


class NoGradients:
    """A model without batch gradients (so no sync='gradients'): a constant predictor."""

    def __init__(self) -> None:
        self.c = np.zeros(1)

    def get_parameters(self) -> dict[str, np.ndarray]:
        return {"c": self.c.copy()}

    def set_parameters(self, parameters: Mapping[str, np.ndarray]) -> None:
        self.c = np.array(parameters["c"], dtype=np.float64)

    def train(self, data: Data, *, epochs: int, seed: int) -> TrainStats:
        self.c = np.array([float(np.mean(data["y"]))])
        return TrainStats(loss=0.0, samples=len(data["y"]) * epochs)

    def evaluate(self, data: Data) -> dict[str, float]:
        return {"loss": float(np.mean((data["y"] - self.c[0]) ** 2))}
