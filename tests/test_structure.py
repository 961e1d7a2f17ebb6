"""The package's structure holds: no import cycle inside corral (type-only imports aside),
and no module imports another module's underscore names."""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType

from script_loader import load_script

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def _cycles_script() -> ModuleType:
    return load_script("import_cycles")


def test_no_import_cycle_inside_corral_lazy_imports_included() -> None:
    script = _cycles_script()
    found = script.cycles(script.edges(script.modules(SRC, "corral"), lazy=True))
    assert found == []


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from pkg.a import x\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
    )
    script = _cycles_script()
    known = script.modules(tmp_path, "pkg")
    assert script.cycles(script.edges(known, lazy=False)) == []
    assert script.cycles(script.edges(known, lazy=True)) == [["pkg.a", "pkg.b"]]


def private_imports(src: Path) -> list[str]:
    """``from corral.x import _name`` and ``corral_module._name`` in corral's modules."""
    found: list[str] = []
    for path in sorted((src / "corral").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        modules: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (
                node.level or (node.module or "").startswith("corral")
            ):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.relative_to(src)}:{node.lineno} {alias.name}")
            elif isinstance(node, ast.Import):
                modules.update(
                    alias.asname or alias.name.split(".")[0]
                    for alias in node.names
                    if alias.name.startswith("corral")
                )
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
            ):
                found.append(f"{path.relative_to(src)}:{node.lineno} {node.value.id}.{node.attr}")
    return found


def test_no_module_imports_another_modules_underscore_names() -> None:
    assert private_imports(SRC) == []
