"""Models for the gateway tests, importable by port workers and by `corral serve` (this
folder goes on their PYTHONPATH)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def double() -> Callable[[np.ndarray], np.ndarray]:
    return lambda b: b * 2


def triple() -> Callable[[np.ndarray], np.ndarray]:
    return lambda b: b * 3


def broken_load() -> Callable[[np.ndarray], np.ndarray]:
    raise RuntimeError("weights missing at /srv/models/rank/v3.npz")


def failing() -> Callable[[np.ndarray], np.ndarray]:
    def run(batch: np.ndarray) -> np.ndarray:
        if (batch < 0).any():
            raise ValueError("negative input refused by /home/user/models/rank.py")
        return batch * 2

    return run


def _wait_gone(path: Path, limit: float = 30.0) -> None:
    # Inside the worker: wait (bounded) for the test to remove its hold file.
    end = time.monotonic() + limit
    while path.exists() and time.monotonic() < end:
        time.sleep(0.01)


def held_load() -> Callable[[np.ndarray], np.ndarray]:
    """Loads only while the file named by $GATEWAY_HOLD does not exist."""
    hold = os.environ.get("GATEWAY_HOLD")
    if hold:
        _wait_gone(Path(hold))
    return lambda b: b * 2


def file_gated() -> Callable[[np.ndarray], np.ndarray]:
    """Each batch appends a line to $GATEWAY_DIR/entered, then waits until
    $GATEWAY_DIR/release exists."""
    where = Path(os.environ["GATEWAY_DIR"])

    def run(batch: np.ndarray) -> np.ndarray:
        with open(where / "entered", "a") as f:
            f.write(f"{len(batch)}\n")
        end = time.monotonic() + 30.0
        while not (where / "release").exists() and time.monotonic() < end:
            time.sleep(0.01)
        return batch * 2

    return run
