"""Mini-batch SGD with optional momentum, shared by the numpy models.

A subclass names its parameters, gives their initial values and computes a batch's loss
and gradients; ``train`` does the rest: a seeded permutation per epoch, fixed-size batches
(the last one may be shorter), ``v = momentum * v + g`` and ``p -= lr * v``. With momentum
the velocities are the optimizer state (``get_optimizer_state``), which the trainer may
average. Everything runs in the calling thread and is deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from corral.train.model import Data, Parameters, TrainStats, rows

__all__ = ["SgdModel", "check_hyper"]

_F64 = npt.NDArray[np.float64]


def check_hyper(model: str, name: str, value: object, low: float, *, strict: bool) -> None:
    """``ValueError`` naming the option unless ``value`` is a number above ``low``."""
    ok = type(value) in (int, float) and (
        value > low if strict else value >= low  # type: ignore[operator]
    )
    if not ok:
        rule = f"> {low:g}" if strict else f">= {low:g}"
        raise ValueError(
            f"invalid options for model {model}: {name} must be a number {rule}; got {value!r}"
        )


class SgdModel:
    """Base class: mini-batch SGD over named float64 parameters (see the module doc)."""

    _name = "sgd"

    def __init__(self, *, lr: float, batch_size: int, momentum: float, l2: float) -> None:
        check_hyper(self._name, "lr", lr, 0, strict=True)
        check_hyper(self._name, "momentum", momentum, 0, strict=False)
        check_hyper(self._name, "l2", l2, 0, strict=False)
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(
                f"invalid options for model {self._name}: batch_size must be an "
                f"int >= 1; got {batch_size!r}"
            )
        self.lr = float(lr)
        self.batch_size = batch_size
        self.momentum = float(momentum)
        self.l2 = float(l2)
        self._params: dict[str, _F64] = {}
        self._velocity: dict[str, _F64] = {}

    # -- to override -----------------------------------------------------------------------

    def batch_gradients(self, batch: Data) -> tuple[float, dict[str, _F64]]:
        """The batch's mean loss and the gradient of every parameter."""
        raise NotImplementedError

    # -- the protocol ----------------------------------------------------------------------

    def get_parameters(self) -> Parameters:
        return {name: value.copy() for name, value in self._params.items()}

    def set_parameters(self, parameters: Mapping[str, npt.NDArray[np.generic]]) -> None:
        self._params = _copy_like(self._name, "parameters", self._params, parameters)

    def get_optimizer_state(self) -> Parameters:
        return {name: value.copy() for name, value in self._velocity.items()}

    def set_optimizer_state(self, state: Mapping[str, npt.NDArray[np.generic]]) -> None:
        self._velocity = _copy_like(self._name, "optimizer state", self._velocity, state)

    def train(self, data: Data, *, epochs: int, seed: int) -> TrainStats:
        n = rows(data)
        rng = np.random.default_rng(seed)
        loss = 0.0
        for _ in range(epochs):
            order = rng.permutation(n)
            total = 0.0
            for start in range(0, n, self.batch_size):
                index = order[start : start + self.batch_size]
                batch = {name: column[index] for name, column in data.items()}
                batch_loss, grads = self.batch_gradients(batch)
                total += batch_loss * len(index)
                self._step(grads)
            loss = total / n
        return TrainStats(loss=loss, samples=n * epochs)

    def apply_gradients(self, gradients: Mapping[str, npt.NDArray[np.generic]]) -> None:
        """One SGD step with ``gradients`` (l2 and momentum as in ``train``); the trainer's
        synchronous mode (``corral.train.sync``) applies averaged gradients with it."""
        self._step({name: np.asarray(g, dtype=np.float64) for name, g in gradients.items()})

    def _step(self, grads: dict[str, _F64]) -> None:
        for name, grad in grads.items():
            if self.l2:
                grad = grad + self.l2 * self._params[name]
            if self.momentum:
                velocity = self._velocity[name]
                velocity *= self.momentum
                velocity += grad
                grad = velocity
            self._params[name] -= self.lr * grad

    def _init_parameters(self, parameters: dict[str, _F64]) -> None:
        self._params = parameters
        self._velocity = {name: np.zeros_like(value) for name, value in parameters.items()}


def _copy_like(
    model: str,
    what: str,
    current: dict[str, _F64],
    new: Mapping[str, npt.NDArray[np.generic]],
) -> dict[str, _F64]:
    if set(new) != set(current):
        raise ValueError(
            f"model {model}: {what} must have the names {sorted(current)}; got {sorted(new)}"
        )
    out: dict[str, _F64] = {}
    for name, value in new.items():
        if value.shape != current[name].shape:
            raise ValueError(
                f"model {model}: {what} '{name}' must have shape "
                f"{current[name].shape}; got {value.shape}"
            )
        out[name] = np.array(value, dtype=np.float64)
    return out
