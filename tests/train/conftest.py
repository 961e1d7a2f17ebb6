"""Trainer tests run real worker processes that import tests/train/train_models.py."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def worker_env() -> dict[str, str]:
    """Environment that lets a worker import train_models."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{HERE}{os.pathsep}{path}" if path else str(HERE)}


@pytest.fixture
def regression() -> dict[str, np.ndarray]:
    """203 rows of y = x @ w + 0.5 + noise over 4 features (203: shards are unequal)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(203, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.5 + rng.normal(0, 0.1, 203)
    return {"x": x, "y": y}
