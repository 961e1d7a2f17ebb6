"""Synchronous data parallelism: average gradients every step instead of parameters every
round (``Trainer(sync="gradients")``).

Each step, every worker takes batch ``step`` of its shard in epoch ``epoch`` (the shard's
``epoch``-th permutation from ``round_seed(seed, round, worker)``, exactly the order a
model's own ``train`` would use), computes that batch's mean loss and gradients at the
parameters it was sent, and replies with them and the batch's rows. The trainer averages the
gradients weighted by rows (so the result is the mean gradient over the union of the
workers' batches) and applies one optimizer step in its own model. One worker therefore
equals plain SGD bit for bit; N workers whose batches are their whole, equal shards equal
full-batch gradient descent on the union (up to float summation order).

Sparse gradients: a model with embedding tables (``MatrixFactorization``) may return, for a
table, a ``SparseRows``: the batch's per-sample terms ``values[j]`` to add at rows
``rows[j]`` (rows may repeat; the batch's sum, uncoalesced, like an uncoalesced sparse COO
tensor), instead of a dense array the size of the table. ``combine_gradients`` averages
dense gradients by batch rows and concatenates sparse ones in worker order, so the model's
``apply_gradients`` performs exactly one step of its own SGD on the union of the workers'
batches: one worker is still plain training bit for bit, and N workers equal plain training
whose batches are the workers' batches put end to end. On the wire (``encode_gradients``) a
``SparseRows`` is a map ``{"rows", "values"}``.

Pure functions here; the trainer and the port handler call them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from corral.train.averaging import weighted_average
from corral.train.model import Data, Model, rows

__all__ = [
    "GradientModel",
    "Gradients",
    "SparseRows",
    "combine_gradients",
    "decode_gradients",
    "encode_gradients",
    "epoch_order",
    "gradient_step",
    "steps_per_epoch",
]


@dataclass(frozen=True)
class SparseRows:
    """A sparse gradient of a table: add ``values[j]`` at row ``rows[j]`` (see the module
    doc). ``rows`` is 1-D, ``values`` has one entry (or row) per entry of ``rows``."""

    rows: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]


Gradients = Mapping[str, "npt.NDArray[np.float64] | SparseRows"]
"""A batch's gradients by parameter name: dense (the batch mean) or ``SparseRows``."""


@runtime_checkable
class GradientModel(Model, Protocol):
    """A model that can split a training step into computing and applying gradients."""

    batch_size: int
    """Rows per batch (per worker, in synchronous training)."""

    def batch_gradients(self, batch: Data) -> tuple[float, Gradients]:
        """The batch's mean loss and the gradient of every trained parameter (dense: the
        batch mean; or ``SparseRows``), at the current parameters; changes nothing."""
        ...

    def apply_gradients(self, gradients: Gradients) -> None:
        """One optimizer step with ``gradients`` as ``combine_gradients`` makes them (the
        model's own rule, l2 and momentum included)."""
        ...


@lru_cache(maxsize=8)
def epoch_order(n: int, seed: int, epoch: int) -> npt.NDArray[np.int64]:
    """The row order of ``epoch`` (0-based) for a shard of ``n`` rows shuffled with
    ``seed``: the ``epoch``-th ``permutation`` of ``default_rng(seed)``, as in ``train``."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    for _ in range(epoch):
        order = rng.permutation(n)
    order.flags.writeable = False
    return order


def steps_per_epoch(shard_rows: list[int], batch_size: int) -> int:
    """Steps in one synchronous epoch: the largest shard's batch count (workers whose shard
    has run out sit the last steps out)."""
    return max(-(-n // batch_size) for n in shard_rows)


def gradient_step(model: Model, data: Data, request: Mapping[str, object]) -> dict[str, object]:
    """The worker side of one step. ``request``: ``params``, ``seed``, ``epoch``, ``step``.
    Reply: ``grads`` (empty when the shard has no batch ``step``), ``samples`` (the batch's
    rows, the averaging weight) and ``loss`` (the batch's mean loss). Blocks."""
    if not isinstance(model, GradientModel):
        raise TypeError(
            f"sync='gradients': the model must have batch_size, batch_gradients and "
            f"apply_gradients; got {type(model).__qualname__}"
        )
    params, seed, epoch, step = (request.get(k) for k in ("params", "seed", "epoch", "step"))
    if not (
        isinstance(params, Mapping)
        and isinstance(seed, int)
        and isinstance(epoch, int)
        and isinstance(step, int)
    ):
        raise TypeError(f"gradient_step: malformed request {sorted(request)}")
    order = epoch_order(rows(data), seed, epoch)
    start = step * model.batch_size
    index = order[start : start + model.batch_size]
    if len(index) == 0:
        return {"grads": {}, "samples": 0, "loss": 0.0}
    model.set_parameters(params)
    loss, grads = model.batch_gradients({name: column[index] for name, column in data.items()})
    return {"grads": encode_gradients(grads), "samples": len(index), "loss": loss}


def combine_gradients(parts: Sequence[tuple[Gradients, int]]) -> Gradients:
    """The union batch's gradients from each worker's (``gradients``, batch rows): dense
    ones averaged by rows (``weighted_average``), ``SparseRows`` concatenated in order. One
    part comes back as it is. ``ValueError`` when the parts disagree on names or kinds."""
    if not parts:
        raise ValueError("combine_gradients: needs at least one part; got none")
    if len(parts) == 1:
        return parts[0][0]
    first = parts[0][0]
    sparse = sorted(name for name, g in first.items() if isinstance(g, SparseRows))
    for grads, _ in parts:
        kinds = sorted(name for name, g in grads.items() if isinstance(g, SparseRows))
        if sorted(grads) != sorted(first) or kinds != sparse:
            raise ValueError(
                f"combine_gradients: every part must have the names {sorted(first)} with "
                f"{sparse} sparse; got {sorted(grads)} with {kinds} sparse"
            )
    dense = [({k: g for k, g in grads.items() if k not in sparse}, n) for grads, n in parts]
    out: dict[str, npt.NDArray[np.float64] | SparseRows] = {}
    if dense[0][0]:
        out.update(weighted_average(dense))  # type: ignore[arg-type]
    for name in sparse:
        pieces = [grads[name] for grads, _ in parts]
        out[name] = SparseRows(
            np.concatenate([p.rows for p in pieces]),  # type: ignore[union-attr]
            np.concatenate([p.values for p in pieces]),  # type: ignore[union-attr]
        )
    return out


def encode_gradients(grads: Gradients) -> dict[str, object]:
    """``grads`` for the wire: ``SparseRows`` as ``{"rows", "values"}`` maps."""
    return {
        name: {"rows": g.rows, "values": g.values} if isinstance(g, SparseRows) else g
        for name, g in grads.items()
    }


def decode_gradients(wire: Mapping[str, object]) -> Gradients:
    """``encode_gradients`` undone; ``TypeError`` naming a malformed entry."""
    out: dict[str, npt.NDArray[np.float64] | SparseRows] = {}
    for name, g in wire.items():
        if isinstance(g, np.ndarray):
            out[name] = g
        elif isinstance(g, Mapping) and isinstance(g.get("rows"), np.ndarray):
            values = g.get("values")
            if isinstance(values, np.ndarray) and len(values) == len(g["rows"]):
                out[name] = SparseRows(g["rows"], values)
                continue
            raise TypeError(f"gradient '{name}': sparse values must match its rows")
        else:
            raise TypeError(f"gradient '{name}': must be an array or a rows/values map")
    return out
