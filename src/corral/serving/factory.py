"""Model factories: a callable that loads a model, or an importable ``"module:attr"`` path."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from corral.serving.adapters import Model, adapt

__all__ = ["ModelFactory", "factory_path", "load_model", "resolve_factory"]

ModelFactory = Callable[[], object] | str
"""Loads a model: a zero-argument callable, or ``"module:attr"`` naming one (required for
``"port"`` partitions, whose worker process imports it)."""


def resolve_factory(factory: ModelFactory) -> Callable[[], object]:
    """The callable behind ``factory``; imports the module of a ``"module:attr"`` path."""
    if isinstance(factory, str):
        module, sep, attr = factory.partition(":")
        if not (sep and module and attr):
            raise ValueError(f"serving model factory: expected 'module:attr'; got {factory!r}")
        target = importlib.import_module(module)
        for part in attr.split("."):
            target = getattr(target, part)
        if not callable(target):
            raise TypeError(f"serving model factory {factory!r} is not callable; got {target!r}")
        return target
    if not callable(factory):
        raise TypeError(
            f"serving model factory must be a callable or 'module:attr'; got {factory!r}"
        )
    return factory


def factory_path(factory: ModelFactory) -> str:
    """``factory`` as a ``"module:attr"`` path, for a port worker to import."""
    if isinstance(factory, str):
        return factory
    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", "")
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise ValueError(
            "serving with kind='port': the model factory must be importable by the worker "
            f"process; pass 'module:attr' or a module-level function; got {factory!r}"
        )
    return f"{module}:{qualname}"


def load_model(factory: ModelFactory, *, device: str | None = None) -> Model:
    """Call the factory and adapt what it returns (see ``corral.serving.adapters.adapt``).
    Blocks for as long as the model takes to load."""
    return adapt(resolve_factory(factory)(), device=device)
