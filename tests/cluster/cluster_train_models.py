"""Models for the Ray training tests (tests/cluster is on the Ray workers' PYTHONPATH)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from corral.train import LinearRegression, TrainStats
from corral.train.model import Data


class KillingLinear(LinearRegression):
    """A linear regression that SIGKILLs its own process (a Ray actor's) in its
    ``crash_on``-th train call (1-based): once per ``flag`` file, created just before dying,
    or every time with ``always``."""

    def __init__(self, *, flag: str, crash_on: int = 2, always: bool = False, **kw: object):
        super().__init__(**kw)  # type: ignore[arg-type]
        self.flag, self.crash_on, self.always, self.calls = Path(flag), crash_on, always, 0

    def train(self, data: Data, *, epochs: int, seed: int) -> TrainStats:
        self.calls += 1
        if self.calls >= self.crash_on and (self.always or self._claim()):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().train(data, epochs=epochs, seed=seed)

    def _claim(self) -> bool:
        # O_EXCL: of the workers in one round, exactly one claims the flag and dies.
        try:
            os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True


class Raising(LinearRegression):
    """A model with a bug: its train raises."""

    def train(self, data: Data, *, epochs: int, seed: int) -> TrainStats:
        raise ValueError("model bug")


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
