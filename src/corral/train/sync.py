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

Pure functions here; the trainer and the port handler call them.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from corral.train.model import Data, Model, Parameters, rows

__all__ = ["GradientModel", "epoch_order", "gradient_step", "steps_per_epoch"]


@runtime_checkable
class GradientModel(Model, Protocol):
    """A model that can split a training step into computing and applying gradients."""

    batch_size: int
    """Rows per batch (per worker, in synchronous training)."""

    def batch_gradients(self, batch: Data) -> tuple[float, dict[str, npt.NDArray[np.float64]]]:
        """The batch's mean loss and the gradient of every parameter, at the current
        parameters; changes nothing."""
        ...

    def apply_gradients(self, gradients: Mapping[str, npt.NDArray[np.generic]]) -> None:
        """One optimizer step with ``gradients`` (the model's own rule, l2 and momentum
        included)."""
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
    out: Parameters = dict(grads)
    return {"grads": out, "samples": len(index), "loss": loss}
