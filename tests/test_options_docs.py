"""The options tables in docs/ are generated from the schemas that validate the options."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from script_loader import load_script

ROOT = Path(__file__).resolve().parent.parent


def _script() -> ModuleType:
    return load_script("options_tables")


def test_every_generated_options_table_in_docs_matches_its_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _script().main(["--check"]) == 0, capsys.readouterr().out


def test_a_stale_table_is_reported_and_regenerated(tmp_path: Path) -> None:
    script = _script()
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# x\n<!-- options: corral.serving.options.ServingOptions -->\n| old |\n<!-- /options -->\n"
    )
    assert script.main(["--check", str(doc)]) == 1
    assert "| old |" in doc.read_text()
    assert script.main([str(doc)]) == 0
    text = doc.read_text()
    assert "| `batch_size` | `64` | Most samples in one batch" in text
    assert script.main(["--check", str(doc)]) == 0


def test_no_table_writes_a_default_that_depends_on_this_machine() -> None:
    # The docs are checked on other machines (CI clones elsewhere): a default such as the
    # interpreter's path is written by its name, never by this checkout's value.
    import sys

    from corral.port.options import PortOptions

    table = PortOptions.markdown_table()
    assert "| `python` | `sys.executable` |" in table
    for doc in (ROOT / "docs").glob("*.md"):
        text = doc.read_text()
        assert sys.executable not in text, doc
        assert str(ROOT) not in text, doc
