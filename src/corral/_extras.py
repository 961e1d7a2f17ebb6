"""Optional engines, imported on first use with an error that names the install line.

``pip install corral`` brings what the runtime, ports and serving need (numpy, msgpack);
every other engine is an extra (``corral[redis]``, ``corral[torch]``, ...; the table is in
the README). An adapter imports its engine through :func:`require` where it first needs it,
so a missing extra is one clear error at that point, never at ``import corral``::

    torch = require("torch", extra="torch", by="corral's TorchModel")

raises, when torch is not installed::

    MissingExtra: corral's TorchModel needs torch: pip install 'corral[torch]'
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtra", "require"]


class MissingExtra(ModuleNotFoundError):
    """An optional engine is not installed. ``name`` is the module that could not be
    imported, ``extra`` the corral extra that installs it; ``except ImportError`` catches it,
    as it would the plain error."""

    def __init__(self, message: str, *, name: str, extra: str) -> None:
        super().__init__(message, name=name)
        self.extra = extra


def require(module: str, *, extra: str, by: str) -> ModuleType:
    """Import ``module`` and return it; when it (or something it imports) is missing, raise
    :class:`MissingExtra` saying that ``by`` needs it and which extra to install.

    ``by`` names the feature as a user knows it ("corral's redis producer"). Only the import
    of ``module`` itself is guarded: errors raised while it initialises are not import errors
    and pass through unchanged. Blocks for as long as the import takes.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.partition(".")[0]
        message = f"{by} needs {top}: pip install 'corral[{extra}]'"
        missing = exc.name or ""
        if missing.partition(".")[0] != top:
            # Installed, but broken or missing a dependency of its own: say which.
            message += f" ({exc})"
        raise MissingExtra(message, name=missing or top, extra=extra) from exc
