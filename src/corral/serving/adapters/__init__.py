"""Model adapters: each turns one kind of model into a ``Model`` with ``run(batch)``.

Each optional engine lives in its own module and is imported only when used: ``torch``
(``TorchModel``), ``onnx`` (``OnnxModel``), ``jax`` (``JaxModel``); scikit-learn estimators
(``SklearnModel``) are duck-typed. ``adapt(obj)`` picks one by the object's type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from corral.serving.adapters.base import (
    AsyncFunctionModel,
    FunctionModel,
    Model,
    is_async_callable,
)

__all__ = ["AsyncFunctionModel", "FunctionModel", "Model", "adapt"]


def _type_module(obj: object) -> str:
    return type(obj).__module__ or ""


def adapt(obj: object, *, device: str | None = None) -> Model:
    """Wrap ``obj`` in the adapter for its kind: a ``Model`` as is; a ``torch.nn.Module``
    in ``TorchModel`` (on ``device``); an onnxruntime ``InferenceSession`` in ``OnnxModel``;
    an object with ``predict`` (a scikit-learn estimator) in ``SklearnModel`` (``predict``);
    an ``async def`` in ``AsyncFunctionModel``; any other callable in ``FunctionModel``.
    For ``predict_proba`` or other options, build the adapter yourself in the factory."""
    if isinstance(obj, Model):
        return obj
    mod = _type_module(obj)
    if mod.startswith("torch") or any(
        c.__module__.startswith("torch.nn") for c in type(obj).__mro__
    ):
        from corral.serving.adapters.torch import TorchModel

        return TorchModel(obj, device=device)
    if mod.startswith("onnxruntime"):
        from corral.serving.adapters.onnx import OnnxModel

        return OnnxModel(obj)
    if callable(getattr(obj, "predict", None)):
        from corral.serving.adapters.sklearn import SklearnModel

        return SklearnModel(obj)
    if is_async_callable(obj):
        fn: Any = obj
        return AsyncFunctionModel(fn)
    if callable(obj):
        call: Callable[[Any], object] = obj
        return FunctionModel(call)
    raise TypeError(
        f"serving model: cannot adapt {obj!r}; the factory must return a Model, a callable on "
        "numpy arrays, a torch.nn.Module, an onnxruntime.InferenceSession or an estimator "
        "with predict()"
    )
