"""Matrix factorization for user-item ratings, trained by mini-batch SGD in numpy.

Prediction: ``mu + bu[u] + bi[i] + P[u] . Q[i]``. Data columns: ``user`` and ``item``
(int indices below ``users`` / ``items``) and ``rating`` (float). Each batch updates only the
rows it touches (``np.add.at``, so a user twice in a batch gets both updates), with L2
regularisation ``l2`` on those rows. ``evaluate`` gives ``loss`` (half MSE) and ``rmse``.

``row_counts`` (``SparseModel``) counts each user's and item's rows, so the trainer averages
``P``/``bu`` and ``Q``/``bi`` row by row; with ``shard_by="user"`` each user's rows are
trained by one worker, whose rows the average then takes as they are.

With ``sync="gradients"`` a step's gradients are sparse (``corral.train.sync.SparseRows``):
each worker sends one term per sample of its batch, and the trainer applies them all, so N
workers take plain per-sample SGD steps on batches of N x ``batch_size`` rows.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from corral.train.model import Data, Parameters, TrainStats, rows
from corral.train.sgd import check_hyper
from corral.train.sync import Gradients, SparseRows

__all__ = ["MatrixFactorization"]

_F64 = npt.NDArray[np.float64]
_NAME = "MatrixFactorization"


class MatrixFactorization:
    """Biased matrix factorization (see the module doc); parameters ``P``, ``Q``, ``bu``,
    ``bi`` and ``mu``, initialised from ``seed`` (normal factors of scale ``init_scale``,
    zero biases, ``mu = global_mean``)."""

    def __init__(
        self,
        users: int,
        items: int,
        *,
        factors: int = 16,
        lr: float = 0.01,
        l2: float = 0.02,
        batch_size: int = 64,
        init_scale: float = 0.1,
        global_mean: float = 0.0,
        seed: int = 0,
    ) -> None:
        for name, value in (
            ("users", users),
            ("items", items),
            ("factors", factors),
            ("batch_size", batch_size),
        ):
            if type(value) is not int or value < 1:
                raise ValueError(
                    f"invalid options for model {_NAME}: {name} must be an int >= 1; got {value!r}"
                )
        check_hyper(_NAME, "lr", lr, 0, strict=True)
        check_hyper(_NAME, "l2", l2, 0, strict=False)
        check_hyper(_NAME, "init_scale", init_scale, 0, strict=False)
        self.lr, self.l2, self.batch_size = float(lr), float(l2), batch_size
        rng = np.random.default_rng(seed)
        self._params: dict[str, _F64] = {
            "P": rng.normal(0.0, init_scale, (users, factors)),
            "Q": rng.normal(0.0, init_scale, (items, factors)),
            "bu": np.zeros(users),
            "bi": np.zeros(items),
            "mu": np.array([float(global_mean)]),
        }

    def get_parameters(self) -> Parameters:
        return {name: value.copy() for name, value in self._params.items()}

    def set_parameters(self, parameters: Mapping[str, npt.NDArray[np.generic]]) -> None:
        if set(parameters) != set(self._params):
            raise ValueError(
                f"model {_NAME}: parameters must have the names "
                f"{sorted(self._params)}; got {sorted(parameters)}"
            )
        for name, value in parameters.items():
            if value.shape != self._params[name].shape:
                raise ValueError(
                    f"model {_NAME}: parameter '{name}' must have shape "
                    f"{self._params[name].shape}; got {value.shape}"
                )
        self._params = {name: np.array(v, dtype=np.float64) for name, v in parameters.items()}

    def predict(self, user: npt.NDArray[np.generic], item: npt.NDArray[np.generic]) -> _F64:
        """Predicted ratings for pairs of ``user`` and ``item`` indices."""
        p = self._params
        dot = np.einsum("ij,ij->i", p["P"][user], p["Q"][item])
        out: _F64 = p["mu"][0] + p["bu"][user] + p["bi"][item] + dot
        return out

    def train(self, data: Data, *, epochs: int, seed: int) -> TrainStats:
        n = rows(data)
        rng = np.random.default_rng(seed)
        user = np.asarray(data["user"], dtype=np.int64)
        item = np.asarray(data["item"], dtype=np.int64)
        rating = np.asarray(data["rating"], dtype=np.float64)
        loss = 0.0
        for _ in range(epochs):
            order = rng.permutation(n)
            total = 0.0
            for start in range(0, n, self.batch_size):
                index = order[start : start + self.batch_size]
                total += self._step(user[index], item[index], rating[index])
            loss = total / n
        return TrainStats(loss=loss, samples=n * epochs)

    def _step(self, u: npt.NDArray[np.int64], i: npt.NDArray[np.int64], r: _F64) -> float:
        loss, grads = self._gradients(u, i, r)
        self.apply_gradients(grads)
        return loss

    def _gradients(
        self, u: npt.NDArray[np.int64], i: npt.NDArray[np.int64], r: _F64
    ) -> tuple[float, dict[str, SparseRows]]:
        """The batch's summed half squared error and its per-sample gradient terms."""
        p, l2 = self._params, self.l2
        pu, qi = p["P"][u], p["Q"][i]
        err = p["mu"][0] + p["bu"][u] + p["bi"][i] + np.einsum("ij,ij->i", pu, qi) - r
        grads = {
            "P": SparseRows(u, err[:, None] * qi + l2 * pu),
            "Q": SparseRows(i, err[:, None] * pu + l2 * qi),
            "bu": SparseRows(u, err + l2 * p["bu"][u]),
            "bi": SparseRows(i, err + l2 * p["bi"][i]),
        }
        return 0.5 * float(err @ err), grads

    # -- sync="gradients" (corral.train.sync) ----------------------------------------------

    def batch_gradients(self, batch: Data) -> tuple[float, dict[str, SparseRows]]:
        """The batch's mean loss and sparse gradients (``SparseRows``: one term per sample
        and table, l2 included; ``mu`` is not trained). Changes nothing."""
        rating = np.asarray(batch["rating"], dtype=np.float64)
        user = np.asarray(batch["user"], dtype=np.int64)
        loss, grads = self._gradients(user, np.asarray(batch["item"], dtype=np.int64), rating)
        return loss / len(rating), grads

    def apply_gradients(self, gradients: Gradients) -> None:
        """One SGD step: ``lr`` times every per-sample term subtracted at its row
        (``np.add.at``, so a row twice in the batch gets both), as ``train`` does."""
        for name, grad in gradients.items():
            if not isinstance(grad, SparseRows) or name not in self._params or name == "mu":
                raise TypeError(
                    f"model {_NAME}: apply_gradients takes SparseRows for P, Q, bu and bi; "
                    f"got {type(grad).__name__} for {name!r}"
                )
            np.add.at(self._params[name], grad.rows, -self.lr * grad.values)

    def row_counts(self, data: Data) -> Parameters:
        """Samples per user (``P``, ``bu``) and per item (``Q``, ``bi``) in ``data``."""
        users, items = self._params["P"].shape[0], self._params["Q"].shape[0]
        per_user = np.bincount(np.asarray(data["user"], dtype=np.int64), minlength=users)
        per_item = np.bincount(np.asarray(data["item"], dtype=np.int64), minlength=items)
        return {"P": per_user, "bu": per_user, "Q": per_item, "bi": per_item}

    def evaluate(self, data: Data) -> dict[str, float]:
        err = self.predict(data["user"], data["item"]) - np.asarray(data["rating"], np.float64)
        mse = float(err @ err) / len(err)
        return {"loss": 0.5 * mse, "rmse": float(np.sqrt(mse))}
