"""Lazy re-exports for package ``__init__`` modules (PEP 562).

``import corral`` must stay cheap: a port worker imports ``corral.port.worker`` at every
cold start, and the runtime (asyncio, logging) would add ~100 ms it never uses. A package
lists its exports as ``{name: module}``; each is imported on first access and then cached in
the package's namespace. Type checkers see the names through ``TYPE_CHECKING`` imports.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping

__all__ = ["exports_from", "lazy_exports"]


def exports_from(module: str, names: Iterable[str]) -> dict[str, str]:
    """``{name: module}`` for each name."""
    return dict.fromkeys(names, module)


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` that import ``exports`` on demand."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
