"""scikit-learn estimators. Duck-typed: nothing from scikit-learn is imported here."""

from __future__ import annotations

import numpy as np

from corral.serving.adapters.base import Model

__all__ = ["SklearnModel"]

_METHODS = ("predict", "predict_proba", "decision_function", "transform")


class SklearnModel(Model):
    """Runs ``estimator.<method>(batch)``; ``method`` is ``predict`` (default),
    ``predict_proba``, ``decision_function`` or ``transform``."""

    def __init__(self, estimator: object, *, method: str = "predict") -> None:
        if method not in _METHODS:
            raise ValueError(
                f"SklearnModel: method must be one of {', '.join(_METHODS)}; got {method!r}"
            )
        fn = getattr(estimator, method, None)
        if not callable(fn):
            raise TypeError(f"SklearnModel: {type(estimator).__name__} has no {method}()")
        self.estimator = estimator
        self.method = method
        self._fn = fn

    def run(self, batch: object) -> object:
        return np.asarray(self._fn(batch))
