"""Models that misbehave on purpose, for the deadline and poison cases of
benchmarks/serving.py; port workers import them (benchmarks/ is on their path).
"""

from __future__ import annotations

import os
import time

import numpy as np

from _serving_models import Mlp, tiny_mlp

POISON = -1.0
"""A sample whose first element is this makes ``poison_mlp`` abort its process."""

SLOW_BATCH = 0.02
"""Seconds every batch of ``slow_batch`` takes, whatever its size."""


def poison_mlp() -> Mlp:
    """The tiny MLP, except that a batch holding a sample whose first element is ``POISON``
    calls ``os.abort()``: a native crash (SIGABRT) that takes the whole process down, as a
    segfault in an extension module would."""
    mlp = tiny_mlp()

    def run(x: np.ndarray) -> np.ndarray:
        if (x[:, 0] == POISON).any():
            os.abort()
        return mlp(x)

    return run


def slow_batch() -> Mlp:
    """A model whose every batch takes ``SLOW_BATCH`` s (a sleep: it holds the partition,
    not a CPU, so an overloaded serving is measured rather than the machine's cores) and
    returns zeros of shape ``(n, 10)``."""

    def run(x: np.ndarray) -> np.ndarray:
        time.sleep(SLOW_BATCH)
        return np.zeros((x.shape[0], 10), np.float32)

    return run
