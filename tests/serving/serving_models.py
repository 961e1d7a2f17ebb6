"""Model factories that port workers import (this directory is put on their PYTHONPATH)."""

from __future__ import annotations

import os
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


def poisoned_double() -> Callable[[np.ndarray], np.ndarray]:
    """Doubles; a sample whose first element is negative kills the worker (SIGABRT)."""

    def model(batch: np.ndarray) -> np.ndarray:
        if (batch[:, 0] < 0).any():
            os.abort()
        return batch * 2

    return model


def meeting(directory: str, parties: int) -> Callable[[np.ndarray], np.ndarray]:
    """Loads only once ``parties`` workers are loading at the same time: each leaves a file
    in ``directory`` and waits (at most 60 s) for the others' files. Partitions started one
    after another never meet."""
    mine = os.path.join(directory, f"loading-{os.getpid()}")
    with open(mine, "w"):
        pass
    waited_until = time.monotonic() + 60.0
    while len(os.listdir(directory)) < parties:
        if time.monotonic() > waited_until:
            raise TimeoutError(f"{len(os.listdir(directory))} of {parties} partitions loading")
        time.sleep(0.01)
    return lambda batch: batch * 2


def triple_once(marker: str) -> Callable[[np.ndarray], np.ndarray]:
    """Triples; loads once: a second load with the same ``marker`` file (another worker)
    raises, as a model whose weights went missing after the first read."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        raise OSError(f"weights missing ({os.path.basename(marker)} was read already)") from None
    return lambda b: b * 3


def two_outputs() -> Callable[[object], object]:
    """A dict-in, dict-out model: per-token ``ids * 2`` and the masked sum per row."""

    def model(batch: object) -> object:
        assert isinstance(batch, dict)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        return {"tokens": ids * 2, "total": (ids * mask).sum(axis=1)}

    return model


def pair_outputs() -> Callable[[object], object]:
    """A tuple-in, tuple-out model: ``(a + b, a * b)``."""

    def model(batch: object) -> object:
        assert isinstance(batch, tuple)
        a, b = batch
        return a + b, a * b

    return model


def thread_env() -> Callable[[np.ndarray], np.ndarray]:
    """Answers each row with the worker's OMP_NUM_THREADS (0 when unset)."""
    value = float(os.environ.get("OMP_NUM_THREADS", "0"))
    return lambda batch: np.full(len(batch), value)
