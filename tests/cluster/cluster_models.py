"""Actor classes the Ray workers import (tests/cluster is on their PYTHONPATH)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from corral.cluster import WatchedActor


class Echo(WatchedActor):
    """Answers with its OS process id and node id; ``fail=True`` makes its constructor
    raise."""

    def __init__(self, tag: str = "", *, fail: bool = False) -> None:
        if fail:
            raise RuntimeError(f"Echo {tag}: refusing to start")
        self.tag = tag

    def where(self) -> tuple[int, str]:
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()

    def echo(self, value: object) -> object:
        return value


def picky_double() -> Callable[[np.ndarray], np.ndarray]:
    """Doubles; raises ValueError on a batch holding a sample whose first element is < 0."""

    def model(batch: np.ndarray) -> np.ndarray:
        if (batch[:, 0] < 0).any():
            raise ValueError("negative sample")
        return batch * 2

    return model


def sleepy_double(seconds: float) -> Callable[[np.ndarray], np.ndarray]:
    """Doubles after sleeping ``seconds`` per batch (the model's compute time)."""

    def model(batch: np.ndarray) -> np.ndarray:
        time.sleep(seconds)
        return batch * 2

    return model
