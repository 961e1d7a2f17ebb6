"""corral.pipeline re-exports its public names with a sorted, complete __all__."""

from __future__ import annotations

import corral.pipeline
import corral.pipeline.testing
from corral.pipeline.producers import memory


def _isort_key(name: str) -> tuple[int, str]:
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


def test_all_is_sorted_and_complete() -> None:
    for module in (corral.pipeline, corral.pipeline.testing, memory):
        exported = list(module.__all__)
        assert exported == sorted(exported, key=_isort_key), module.__name__
    public = {
        name
        for name, value in vars(corral.pipeline).items()
        if not name.startswith("_") and not isinstance(value, type(corral))
    }
    assert public == set(corral.pipeline.__all__)


def test_importing_the_pipeline_does_not_import_any_producer() -> None:
    import subprocess
    import sys

    code = (
        "import sys, corral.pipeline; "
        "print(sorted(m for m in sys.modules if m.startswith('corral.pipeline.producers.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
