"""Nothing outside ``corral/runtime/`` touches the runtime's private names.

Other packages use the runtime's public seams (``Actor.start_task``, ``Actor.running_as``,
``Pid.send_system``, ``Supervisor.wait_restarted``, ...). This test reads every module
under ``src/corral`` with ``ast`` and fails on ``x._name`` (or ``getattr(x, "_name")``, or
``from corral.runtime... import _name``) where ``_name`` is an underscore name that a runtime
class defines (a slot, a ``self._name`` assignment, a method, a class attribute) and ``x``
is not ``self`` or ``cls``. A module's own private attributes are its business: a name that
the module itself defines on one of its classes is not reported there, even when a runtime
class happens to use the same name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import corral

SRC = Path(corral.__file__).parent
RUNTIME = SRC / "runtime"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _class_privates(tree: ast.AST) -> set[str]:
    """Underscore names the classes of ``tree`` define."""
    names: set[str] = set()
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        for node in ast.walk(cls):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")
            ):
                names.add(node.attr)
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
            ):
                names.update(
                    c.value
                    for c in ast.walk(node.value)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                )
    return {n for n in names if _private(n)}


def _runtime_privates() -> set[str]:
    names: set[str] = set()
    for path in RUNTIME.glob("*.py"):
        names |= _class_privates(ast.parse(path.read_text(), str(path)))
    return names


def _reach_ins(path: Path, runtime: set[str], root: Path = SRC.parent) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    watched = runtime - _class_privates(tree)
    where = path.relative_to(root)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in watched
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append(f"{where}:{node.lineno}: .{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in watched
        ):
            found.append(f"{where}:{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
        elif (
            isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith("corral.runtime")
            and any(_private(alias.name) for alias in node.names)
        ):
            found.append(f"{where}:{node.lineno}: from {node.module} import a private name")
    return found


def test_the_runtime_classes_define_the_private_names_this_test_watches() -> None:
    runtime = _runtime_privates()
    assert {"_actor", "_mailbox", "_trap_exit", "_pid", "_children"} <= runtime
    assert "_worker" not in runtime  # a port's own attribute, not the runtime's


def test_nothing_outside_the_runtime_touches_its_private_names() -> None:
    runtime = _runtime_privates()
    found = [
        hit
        for path in sorted(SRC.rglob("*.py"))
        if RUNTIME not in path.parents
        for hit in _reach_ins(path, runtime)
    ]
    assert found == []


def test_the_check_reports_a_reach_in_and_spares_a_modules_own_names(tmp_path: Path) -> None:
    module = tmp_path / "reach.py"
    module.write_text(
        "from corral.runtime.process import _settle\n"
        "class Mine:\n"
        "    def __init__(self):\n"
        "        self._loop = None\n"
        "    def f(self, pid, other):\n"
        "        pid._deliver(1)\n"
        "        getattr(pid, '_actor')\n"
        "        return other._loop, self._mailbox\n"
    )
    runtime = {"_deliver", "_actor", "_loop", "_mailbox"}
    hits = sorted(_reach_ins(module, runtime, root=tmp_path))
    assert hits == [
        "reach.py:1: from corral.runtime.process import a private name",
        "reach.py:6: ._deliver",
        "reach.py:7: getattr(..., '_actor')",
    ]
