"""Linear and logistic regression in numpy: the seed's ``x @ w + b``, trained by SGD.

Data columns: ``x`` (rows x features, float) and ``y`` (rows; a float target for
``LinearRegression``, 0/1 labels for ``LogisticRegression``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from corral.train.model import Data
from corral.train.sgd import SgdModel

__all__ = ["LinearRegression", "LogisticRegression"]

_F64 = npt.NDArray[np.float64]


def _check_features(model: str, features: object) -> int:
    if type(features) is not int or features < 1:
        raise ValueError(
            f"invalid options for model {model}: features must be an int >= 1; got {features!r}"
        )
    return features


class LinearRegression(SgdModel):
    """``y ~ x @ w + b`` minimizing half the mean squared error; parameters ``w`` (features,)
    and ``b`` (1,), initialised from ``seed`` (small normal weights, zero bias).
    ``evaluate`` gives ``loss`` (half MSE) and ``rmse``."""

    _name = "LinearRegression"

    def __init__(
        self,
        features: int,
        *,
        lr: float = 0.01,
        batch_size: int = 32,
        momentum: float = 0.0,
        l2: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(lr=lr, batch_size=batch_size, momentum=momentum, l2=l2)
        features = _check_features(self._name, features)
        rng = np.random.default_rng(seed)
        self._init_parameters({"w": rng.normal(0.0, 0.01, features), "b": np.zeros(1)})

    def predict(self, x: npt.NDArray[np.generic]) -> _F64:
        """``x @ w + b`` for rows of ``x``."""
        out: _F64 = np.asarray(x, dtype=np.float64) @ self._params["w"] + self._params["b"][0]
        return out

    def batch_gradients(self, batch: Data) -> tuple[float, dict[str, _F64]]:
        x = np.asarray(batch["x"], dtype=np.float64)
        err = self.predict(x) - np.asarray(batch["y"], dtype=np.float64)
        m = len(err)
        return 0.5 * float(err @ err) / m, {"w": x.T @ err / m, "b": np.array([err.sum() / m])}

    def evaluate(self, data: Data) -> dict[str, float]:
        err = self.predict(data["x"]) - np.asarray(data["y"], dtype=np.float64)
        mse = float(err @ err) / len(err)
        return {"loss": 0.5 * mse, "rmse": float(np.sqrt(mse))}


class LogisticRegression(SgdModel):
    """Binary logistic regression ``p = sigmoid(x @ w + b)`` minimizing the mean log loss;
    ``evaluate`` gives ``loss`` and ``accuracy`` (threshold 0.5)."""

    _name = "LogisticRegression"

    def __init__(
        self,
        features: int,
        *,
        lr: float = 0.1,
        batch_size: int = 32,
        momentum: float = 0.0,
        l2: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(lr=lr, batch_size=batch_size, momentum=momentum, l2=l2)
        features = _check_features(self._name, features)
        rng = np.random.default_rng(seed)
        self._init_parameters({"w": rng.normal(0.0, 0.01, features), "b": np.zeros(1)})

    def predict_proba(self, x: npt.NDArray[np.generic]) -> _F64:
        """The probability of label 1 for rows of ``x``."""
        z = np.asarray(x, dtype=np.float64) @ self._params["w"] + self._params["b"][0]
        out: _F64 = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow
        return out

    def batch_gradients(self, batch: Data) -> tuple[float, dict[str, _F64]]:
        x = np.asarray(batch["x"], dtype=np.float64)
        y = np.asarray(batch["y"], dtype=np.float64)
        p = self.predict_proba(x)
        err = p - y
        m = len(err)
        return _log_loss(p, y), {"w": x.T @ err / m, "b": np.array([err.sum() / m])}

    def evaluate(self, data: Data) -> dict[str, float]:
        y = np.asarray(data["y"], dtype=np.float64)
        p = self.predict_proba(data["x"])
        accuracy = float(np.mean((p >= 0.5) == (y >= 0.5)))
        return {"loss": _log_loss(p, y), "accuracy": accuracy}


def _log_loss(p: _F64, y: _F64) -> float:
    eps = 1e-12
    return float(-np.mean(y * np.log(p + eps) + (1.0 - y) * np.log(1.0 - p + eps)))
