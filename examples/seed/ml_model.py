"""The model program that seed sketch 2 drives through a port (examples/seed/python_port.py).

In the seed, Erlang runs ``open_port({spawn, "python3 ml_model.py"}, [binary])``. Here the
port runs ``python -m corral.port ml_model:NearestCentroid`` in this directory: corral's
worker reads length-prefixed frames, hands each decoded message to ``handle_call`` and writes
the return value back. numpy arrays cross the pipe without pickle.

The model is a nearest-centroid classifier, trained in ``setup`` on three synthetic
Gaussian clusters (the same data for the same ``seed``, so every restart loads the same model).
"""

from __future__ import annotations

import asyncio
import os

import numpy as np

from corral.port import Handler

CENTERS = np.array([[0.0, 0.0], [4.0, 0.0], [2.0, 3.5]])


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points per class around CENTERS and their labels."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c, 0.8, size=(n, 2)) for c in CENTERS])
    return x, np.repeat(np.arange(len(CENTERS)), n)


class NearestCentroid(Handler):
    def setup(self, **args: object) -> None:
        seed = args.get("seed", 0)
        assert isinstance(seed, int)
        x, y = blobs(200, seed)
        self.centroids = np.stack([x[y == k].mean(axis=0) for k in range(len(CENTERS))])

    async def handle_call(self, msg: object) -> object:
        # async: the worker serves calls concurrently, so a slow one does not hold up others
        assert isinstance(msg, dict)
        if msg["op"] == "predict":  # rows of 2 features -> class labels
            x = np.asarray(msg["x"], dtype=np.float64)
            distances = np.linalg.norm(x[:, None, :] - self.centroids[None, :, :], axis=2)
            return distances.argmin(axis=1).astype(np.int64)
        if msg["op"] == "info":  # which OS process answers, and what it learned
            return {"os_pid": os.getpid(), "centroids": self.centroids}
        if msg["op"] == "sleep":  # a slow request, to be in flight when the worker dies
            await asyncio.sleep(float(msg["seconds"]))
            return "woke up"
        raise ValueError(f"unknown op {msg['op']!r}")
