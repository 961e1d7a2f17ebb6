"""Models for the Ray training tests (tests/cluster is on the Ray workers' PYTHONPATH); the
crashing and raising ones are the local tests' (tests/train/train_models.py, also on it)."""

from __future__ import annotations

import os

from corral.train import LinearRegression, TrainStats
from corral.train.model import Data


class StallingLinear(LinearRegression):
    """A linear regression whose worker on Ray node ``node`` (a node id) gets stuck in its
    ``stall_on``-th train call, once per ``flag`` file (created first): the test removes
    that node meanwhile. On any other node it trains normally."""

    def __init__(self, *, node: str, flag: str, stall_on: int = 2, **kw: object):
        super().__init__(**kw)  # type: ignore[arg-type]
        self.node, self.flag, self.stall_on, self.calls = node, flag, stall_on, 0

    def train(self, data: Data, *, epochs: int, seed: int) -> TrainStats:
        import threading

        import ray

        self.calls += 1
        here = ray.get_runtime_context().get_node_id()
        if self.calls == self.stall_on and here == self.node and _claim(self.flag):
            threading.Event().wait()  # until the node (and this process) is gone
        return super().train(data, epochs=epochs, seed=seed)


def _claim(flag: str) -> bool:
    try:
        os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
