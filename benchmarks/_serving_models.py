"""Models for benchmarks/serving.py; port workers import them (benchmarks/ is on their path).

Weights come from ``numpy.random.default_rng(0)``; the caller sets ``OPENBLAS_NUM_THREADS=1``
before numpy is imported (the benchmark does, and its port workers inherit it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

Mlp = Callable[[np.ndarray], np.ndarray]


def _mlp(sizes: Sequence[int]) -> Mlp:
    rng = np.random.default_rng(0)
    layers = [
        (
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
            np.zeros(b, np.float32),
        )
        for a, b in itertools.pairwise(sizes)
    ]

    def run(x: np.ndarray) -> np.ndarray:
        for i, (w, b) in enumerate(layers):
            x = x @ w + b
            if i < len(layers) - 1:
                np.maximum(x, 0, out=x)
        return x

    return run


def tiny_mlp() -> Mlp:
    """64 -> 256 -> 256 -> 10, ReLU, float32."""
    return _mlp((64, 256, 256, 10))


def big_mlp() -> Mlp:
    """1024 -> 4096 -> 4096 -> 1024, ReLU, float32: compute-bound."""
    return _mlp((1024, 4096, 4096, 1024))


def tiny_mlp_b() -> Mlp:
    """The tiny MLP again, as a second version for swaps."""
    return _mlp((64, 256, 256, 10))
