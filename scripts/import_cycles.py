"""List the import cycles inside a package, from its modules' own import statements.

    python scripts/import_cycles.py [SRC_DIR] [--package corral] [--lazy] [--types]

Reads every module under SRC_DIR/PACKAGE with ``ast`` (nothing is imported) and draws an
edge A -> B for each ``import B`` / ``from B import x`` in A that names a module of the
package (``from P import m`` names the submodule ``P.m`` when there is one). Imports under
``if TYPE_CHECKING:`` are left out: they never run. By default only the imports a module
runs when it is imported count (module level, including ``try``/``if`` blocks); ``--lazy``
adds those inside functions too (``make test`` checks with it: a lazy import is a cycle put
off, not removed); ``--types`` adds the type-only ones, for a report.

Prints each cycle (its strongly connected component, in a stable order) and exits 1 if there
is any, 0 if none: ``make test`` runs it, so a new cycle fails CI.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path


def modules(src: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` under ``src``."""
    found: dict[str, Path] = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


_NESTED = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.For, ast.While)
"""Blocks whose imports run later than the module's own (counted with ``--lazy``)."""


def _imports(
    body: list[ast.stmt], lazy: bool, types: bool = False
) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if types or not _is_type_checking(node.test):
                yield from _imports(node.body, lazy, types)
            yield from _imports(node.orelse, lazy, types)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _imports(block, lazy, types)
            for handler in node.handlers:
                yield from _imports(handler.body, lazy, types)
        elif isinstance(node, ast.With) or (lazy and isinstance(node, _NESTED)):
            yield from _imports(node.body, lazy, types)


def edges(known: dict[str, Path], lazy: bool, types: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in _imports(tree.body, lazy, types):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in known else base)
            for target in targets:
                if target in known and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", nargs="?", default="src", help="the source root (default src)")
    parser.add_argument("--package", default="corral", help="the package (default corral)")
    parser.add_argument("--lazy", action="store_true", help="count imports inside functions")
    parser.add_argument(
        "--types", action="store_true", help="count imports under TYPE_CHECKING too (a report)"
    )
    args = parser.parse_args(argv)
    known = modules(Path(args.src), args.package)
    found = cycles(edges(known, args.lazy, args.types))
    kind = "imports (lazy ones included)" if args.lazy else "import-time imports"
    if args.types:
        kind += ", type-only ones included"
    if not found:
        print(f"import_cycles: no cycle among {len(known)} modules of {args.package} ({kind})")
        return 0
    print(f"import_cycles: {len(found)} cycle(s) among {len(known)} modules ({kind}):")
    for component in found:
        print("  " + " <-> ".join(component))
    return 1


if __name__ == "__main__":
    sys.exit(main())
