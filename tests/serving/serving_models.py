"""Model factories that port workers import (this directory is put on their PYTHONPATH)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def double() -> Callable[[np.ndarray], np.ndarray]:
    return lambda b: b * 2


def triple() -> Callable[[np.ndarray], np.ndarray]:
    return lambda b: b * 3


def slow_double() -> Callable[[np.ndarray], np.ndarray]:
    def model(batch: np.ndarray) -> np.ndarray:
        time.sleep(0.01)  # the model's compute time, so that kills land mid-batch
        return batch * 2

    return model


def failing() -> Callable[[np.ndarray], np.ndarray]:
    def model(batch: np.ndarray) -> np.ndarray:
        raise ValueError("bad batch")

    return model


def scale(factor: float, *, offset: float = 0.0) -> Callable[[np.ndarray], np.ndarray]:
    """A factory with arguments, for ``functools.partial`` factories."""
    return lambda batch: batch * factor + offset
