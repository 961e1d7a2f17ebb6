"""The generic trainer worker: a port handler that trains any model on its shard.

Run by ``Port("corral.train.handler:TrainHandler", args={...})``. ``setup`` imports the
model (``model`` 'module:Class' and ``model_args``) and maps its shard read-only from
``data_dir``, one ``<column>.npy`` file per column: the data crosses to the worker once, as
a file in the page cache, and a restarted worker maps the same file again (a Ray worker,
which may run on another machine, gets its shard through Ray's object store instead and
hands it to ``load``). Calls:

- ``["round", request]`` -> ``train_round``'s reply (blocks for the whole local training),
  or ``gradient_step``'s for a request with ``"sync": "gradients"`` (one batch);
- ``["os_pid"]`` -> the worker's OS pid (for tests and benchmarks that kill it).

A model that raises fails that call with ``PortCallError``; the worker goes on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from corral.train.model import Data, Model, load_model
from corral.train.rounds import train_round
from corral.train.sync import gradient_step

__all__ = ["HANDLER", "TrainHandler", "load_shard"]

HANDLER = "corral.train.handler:TrainHandler"


def load_shard(data_dir: str) -> Data:
    """Map every ``<column>.npy`` in ``data_dir`` read-only; ``ValueError`` if none."""
    files = sorted(Path(data_dir).glob("*.npy"))
    if not files:
        raise ValueError(f"trainer worker: no <column>.npy files in data_dir {data_dir!r}")
    return {file.stem: np.load(file, mmap_mode="r", allow_pickle=False) for file in files}


class TrainHandler:
    """The worker side of ``Trainer`` (see the module doc)."""

    def __init__(self) -> None:
        self._model: Model | None = None
        self._data: Data = {}

    def setup(self, *, model: str, model_args: Mapping[str, object] | None, data_dir: str) -> None:
        self.load(model=model, model_args=model_args, data=load_shard(data_dir))

    def load(self, *, model: str, model_args: Mapping[str, object] | None, data: Data) -> None:
        """Import the model and hold ``data`` as the shard: ``setup`` with the shard
        already in memory (a Ray training worker decodes it from the object store,
        ``corral.cluster.training``). Blocks while the model imports."""
        self._model = load_model(model, model_args)
        self._data = data

    def handle_call(self, msg: object) -> object:
        match msg:
            case ["round", Mapping() as request] if self._model is not None:
                if request.get("sync") == "gradients":
                    return gradient_step(self._model, self._data, request)
                return train_round(self._model, self._data, request)
            case ["os_pid"]:
                return os.getpid()
        raise ValueError(f"trainer worker: unknown request {msg!r}")
