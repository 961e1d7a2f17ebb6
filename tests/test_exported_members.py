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
            for name in dir(module)
            if not name.startswith("_")
            and not isinstance(getattr(module, name), type(corral))
            and name not in ("TYPE_CHECKING", "exports_from", "lazy_exports")
        }
        assert public == set(module.__all__) - {"__version__"}, module.__name__


def test_every_exported_name_resolves() -> None:
    for module in MODULES:
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"


def test_importing_corral_loads_neither_asyncio_nor_the_runtime() -> None:
    import subprocess
    import sys

    code = (
        "import sys, corral, corral.port.worker; "
        "print(sorted(m for m in ('asyncio', 'corral.runtime', 'logging') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
