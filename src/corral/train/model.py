"""The model protocol every trainer worker runs, and what one local training run reports.

A model is a plain object with four methods; nothing here imports an engine::

    class Model(Protocol):
        def get_parameters(self) -> dict[str, np.ndarray]: ...
        def set_parameters(self, parameters: Mapping[str, np.ndarray]) -> None: ...
        def train(self, data: Mapping[str, np.ndarray], *, epochs: int,
                  seed: int) -> TrainStats: ...
        def evaluate(self, data: Mapping[str, np.ndarray]) -> dict[str, float]: ...

``train`` must be a pure function of the parameters set before it, the data and ``seed``:
the trainer relies on that to re-run a shard after a crash and to resume from a checkpoint
with the same result bit for bit. A model with optimizer state (momentum, Adam moments) may
add ``get_optimizer_state`` / ``set_optimizer_state`` with the same dict shape; the trainer
averages that state too when asked (``average_optimizer_state=True``). A model whose
parameters include embedding tables (rows that belong to keys of the data, such as users)
may add ``row_counts(data)`` (``SparseModel``): the trainer then averages those tables row by
row, weighting each worker by how many of its samples touch the row
(``corral.train.averaging``).

All four run synchronously, in the worker's only thread; an exception from ``train`` fails
the round's call with ``PortCallError`` and the trainer fails the run (a bug, not a crash:
re-running the same shard would raise again).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "Data",
    "Model",
    "Parameters",
    "SparseModel",
    "StatefulModel",
    "TrainStats",
    "load_model",
    "rows",
]

Parameters = dict[str, npt.NDArray[np.generic]]
"""Named parameter arrays; names are stable across calls."""

Data = Mapping[str, npt.NDArray[np.generic]]
"""A data set or shard: named column arrays with the same number of rows."""


@dataclass(frozen=True, slots=True)
class TrainStats:
    """What ``Model.train`` reports: the mean training ``loss`` of its last epoch and the
    number of ``samples`` it processed (rows times epochs)."""

    loss: float
    samples: int


@runtime_checkable
class Model(Protocol):
    """What a trainer worker needs from a model (see the module doc)."""

    def get_parameters(self) -> Parameters:
        """The current parameters (the trainer does not mutate them)."""
        ...

    def set_parameters(self, parameters: Mapping[str, npt.NDArray[np.generic]]) -> None:
        """Replace every parameter; arrays may be read-only (copy before updating)."""
        ...

    def train(self, data: Data, *, epochs: int, seed: int) -> TrainStats:
        """Train on ``data`` for ``epochs`` passes, shuffling with ``seed``; blocks."""
        ...

    def evaluate(self, data: Data) -> dict[str, float]:
        """Metrics on ``data`` (``loss`` and model-specific ones such as ``rmse``)."""
        ...


@runtime_checkable
class StatefulModel(Model, Protocol):
    """A model whose optimizer state can be read, replaced and so averaged."""

    def get_optimizer_state(self) -> Parameters:
        """The optimizer state as named arrays."""
        ...

    def set_optimizer_state(self, state: Mapping[str, npt.NDArray[np.generic]]) -> None:
        """Replace the optimizer state."""
        ...


@runtime_checkable
class SparseModel(Model, Protocol):
    """A model with embedding tables, averaged row by row (see the module doc)."""

    def row_counts(self, data: Data) -> Parameters:
        """For each embedding-table parameter, an int vector with one entry per row of it:
        how many rows of ``data`` touch that row in training. Pure; parameters not named are
        averaged whole."""
        ...


def rows(data: Data) -> int:
    """The number of rows of ``data``; ``ValueError`` if the columns disagree or it is empty."""
    counts = {name: len(column) for name, column in data.items()}
    if not counts:
        raise ValueError("training data: it must have at least one column; got none")
    if len(set(counts.values())) != 1:
        raise ValueError(f"training data: every column must have the same rows; got {counts}")
    return next(iter(counts.values()))


def load_model(spec: str, args: Mapping[str, object] | None = None) -> Model:
    """Import ``'module:Factory'`` and call it with ``args``; ``ValueError`` for a bad spec,
    ``TypeError`` when the result does not follow the ``Model`` protocol."""
    module_name, sep, attr = spec.partition(":")
    if not (sep and module_name and attr):
        raise ValueError(f"trainer model: must be a str like 'module:Class'; got {spec!r}")
    factory: Callable[..., object] = getattr(importlib.import_module(module_name), attr)
    model = factory(**dict(args or {}))
    if not isinstance(model, Model):
        raise TypeError(
            f"trainer model {spec!r}: it must have get_parameters, set_parameters, train and "
            f"evaluate; got {type(model).__qualname__}"
        )
    return model
