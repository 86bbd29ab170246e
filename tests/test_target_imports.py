"""droidoom/targets has no import cycle, deferred (in-function) imports included: the
adb server address lives in adb_server.py, below both the connection code and target
selection (it used to sit in select.py, which imports adb.py, which imported it back)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import droidoom.targets

TARGETS = Path(droidoom.targets.__file__).parent


def sibling_imports(path: Path) -> set[str]:
    """Modules of droidoom/targets that `path` imports anywhere in its body."""
    mods = {p.stem for p in TARGETS.glob("*.py")} - {"__init__"}
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module in mods:
                out.add(node.module)
            elif node.module is None:
                out.update(a.name for a in node.names if a.name in mods)
    return out - {path.stem}


def test_no_import_cycle_in_targets():
    graph = {p.stem: sibling_imports(p) for p in TARGETS.glob("*.py") if p.stem != "__init__"}
    assert "adb" in graph["select"]  # the parser sees deferred imports
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as e:
        raise AssertionError(f"import cycle in droidoom/targets: {e.args[1]}") from None
    assert order.index("adb_server") < order.index("adb") < order.index("select")
