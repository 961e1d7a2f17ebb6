"""A model module whose import costs ~1 s of CPU, for the hot-swap case of
benchmarks/serving.py; port workers import it (benchmarks/ is on their path).

Importing it does ``IMPORT_CPU`` seconds of real work on this process's CPU clock (matrix
products, as deserialising and checking weights or compiling a graph would): on an idle
core that is ~1 s of wall-clock time, on a busy machine more, as a real model's load would
be. It reads the CPU clock rather than counting iterations so that the cost is the same on
a fast and a slow machine. Set ``OPENBLAS_NUM_THREADS=1`` before importing numpy (the
benchmark does, and its workers inherit it) so the work stays on one core.
"""

from __future__ import annotations

import time

import numpy as np

from _serving_models import Mlp, tiny_mlp

IMPORT_CPU = 1.0
"""Seconds of this process's CPU time the import spends working."""


def _work(seconds: float) -> float:
    start = time.process_time()
    a = np.random.default_rng(3).standard_normal((256, 256)).astype(np.float32)
    while time.process_time() - start < seconds:
        a = np.tanh(a @ a.T / 16)
    return float(a[0, 0])


_work(IMPORT_CPU)


def model() -> Mlp:
    """The tiny MLP (64 -> 256 -> 256 -> 10), from this slow module."""
    return tiny_mlp()
