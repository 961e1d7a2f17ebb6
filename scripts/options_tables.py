"""Keep the options tables in docs/ equal to the options schemas they describe.

    python scripts/options_tables.py [--check] [DOC ...]

A table in a Markdown file is generated when it stands between the markers

    <!-- options: corral.serving.options.ServingOptions -->
    ...
    <!-- /options -->

and is rewritten from ``ServingOptions.markdown_table()`` (each field's name, default and
doc, from the one schema that also validates them). ``--check`` rewrites nothing and exits
1 naming each stale table; ``tests/test_options_docs.py`` runs it, so a new option or a
changed default fails the tests until the docs are regenerated.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

BLOCK = re.compile(
    r"(?P<open><!-- options: (?P<target>[\w.]+) -->\n)(?P<body>.*?)(?P<close><!-- /options -->)",
    re.DOTALL,
)
DOCS = Path(__file__).resolve().parent.parent / "docs"


def render(target: str) -> str:
    """The table for ``module.Class``."""
    module, _, name = target.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return str(cls.markdown_table()) + "\n"


def refresh(text: str) -> tuple[str, list[str]]:
    """``text`` with every marked table regenerated, and the targets that changed."""
    stale: list[str] = []

    def replace(match: re.Match[str]) -> str:
        table = render(match["target"])
        if match["body"] != table:
            stale.append(match["target"])
        return match["open"] + table + match["close"]

    return BLOCK.sub(replace, text), stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report stale tables, change none")
    parser.add_argument("docs", nargs="*", type=Path, help="Markdown files (default docs/*.md)")
    args = parser.parse_args(argv)
    failed = False
    for path in args.docs or sorted(DOCS.glob("*.md")):
        text = path.read_text()
        new, stale = refresh(text)
        for target in stale:
            failed = True
            print(f"{path}: the table of {target} is stale")
        if stale and not args.check:
            path.write_text(new)
    return 1 if failed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
