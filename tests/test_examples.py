"""The examples in examples/ run, and the README shows the same code as the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_counter_example_prints_the_count_before_and_after_its_restart() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "counter.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "0"]


def test_the_readme_shows_the_counter_example_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    body = (ROOT / "examples" / "counter.py").read_text().split('"""\n\n', 1)[1]
    assert body in readme
