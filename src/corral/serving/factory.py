"""Model factories: a callable that loads a model, or an importable ``"module:attr"`` path."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping

from corral.serving.adapters import Model, adapt

__all__ = [
    "FactorySpec",
    "ModelFactory",
    "check_factory",
    "factory_path",
    "factory_spec",
    "load_model",
    "load_spec",
    "resolve_factory",
]

ModelFactory = Callable[[], object] | str
"""Loads a model: a zero-argument callable, or ``"module:attr"`` naming one. ``"port"``
partitions need one their worker process can import: ``"module:attr"``, a module-level
function, or a ``functools.partial`` of one whose arguments are plain data (``str``, numbers,
``bool``, ``None``, lists and dicts of them), e.g. ``partial(load, "model-v2.npz")``."""

FactorySpec = tuple[str, list[object], dict[str, object]]
"""A factory as a worker process receives it: ``(path, args, kwargs)``."""

_PLAIN = (str, int, float, bool, type(None))


def check_factory(factory: object, *, where: str = "serving") -> None:
    """Refuse, without importing anything, a factory that can never load: a string not of
    the form ``"package.module:attr"`` (dotted identifiers on both sides of one ``:``), or
    something that is neither a string nor callable. ``ValueError`` / ``TypeError`` naming
    ``where``."""
    if isinstance(factory, str):
        module, sep, attr = factory.partition(":")
        parts = [*module.split("."), *attr.split(".")]
        if not sep or not all(part.isidentifier() for part in parts):
            raise ValueError(
                f"{where}: a model factory string must be 'module:attr' (e.g. "
                f"'mymodels.ranker:load'); got {factory!r}"
            )
    elif not callable(factory):
        raise TypeError(
            f"{where}: the model factory must be a callable or 'module:attr'; got {factory!r}"
        )


def resolve_factory(factory: ModelFactory) -> Callable[[], object]:
    """The callable behind ``factory``; imports the module of a ``"module:attr"`` path."""
    if isinstance(factory, str):
        check_factory(factory, where="serving model factory")
        module, _, attr = factory.partition(":")
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
    """``factory`` as a ``"module:attr"`` path, for a port worker to import (see
    ``factory_spec`` for factories with arguments)."""
    if isinstance(factory, str):
        return factory
    if isinstance(factory, functools.partial):
        return factory_spec(factory)[0]
    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", "")
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise ValueError(
            "serving with kind='port' or 'ray': the model factory must be importable by the worker "
            f"process; pass 'module:attr' or a module-level function; got {factory!r}"
        )
    return f"{module}:{qualname}"


def factory_spec(factory: ModelFactory) -> FactorySpec:
    """``factory`` as ``(path, args, kwargs)`` for a port worker: a ``functools.partial``
    contributes its arguments, which must be plain data (they cross the process boundary)."""
    if not isinstance(factory, functools.partial):
        return factory_path(factory), [], {}
    args = list(factory.args)
    kwargs = dict(factory.keywords)
    for where, value in [*enumerate(args), *kwargs.items()]:
        if not _is_plain(value):
            raise ValueError(
                "serving with kind='port' or 'ray': the arguments of a partial model factory "
                "cross to the worker process and must be plain data (str, int, float, bool, None, "
                f"lists and dicts of them); argument {where!r} is {type(value).__name__}"
            )
    return factory_path(factory.func), args, kwargs


def _is_plain(value: object) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(item) for item in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def load_spec(
    path: str,
    args: list[object] | tuple[object, ...] = (),
    kwargs: Mapping[str, object] | None = None,
    *,
    device: str | None = None,
) -> Model:
    """Load and adapt the model of a ``factory_spec`` (in a port worker)."""
    return adapt(resolve_factory(path)(*args, **dict(kwargs or {})), device=device)


def load_model(factory: ModelFactory, *, device: str | None = None) -> Model:
    """Call the factory and adapt what it returns (see ``corral.serving.adapters.adapt``).
    Blocks for as long as the model takes to load."""
    return adapt(resolve_factory(factory)(), device=device)
