"""corral/__init__.py only re-exports, with a sorted and complete __all__."""

from __future__ import annotations

import corral
import corral.pipeline
import corral.port
import corral.runtime
import corral.testing

MODULES = (corral, corral.runtime, corral.testing, corral.port, corral.pipeline)


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions and the rest.
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


def test_all_is_sorted() -> None:
    for module in MODULES:
        exported = list(module.__all__)
        assert exported == sorted(exported, key=_isort_key), module.__name__


def test_all_lists_every_public_name() -> None:
    for module in MODULES:
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and not isinstance(value, type(corral))
        }
        assert public == set(module.__all__) - {"__version__"}, module.__name__
