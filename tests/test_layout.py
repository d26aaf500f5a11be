"""The package layout is the architecture: imports only go down ``l2e.FLOORS``, never in a cycle, and every
module path README.md names (``l2e.x.y``, ``python -m l2e.x``) exists.

The import graph is read with ``ast`` from every module's source, function-local (lazy) imports included: a lazy
import is still a dependency, it only moves the failure to run time.
"""
from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import pytest

import l2e

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "l2e"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str, root: Path) -> bool:
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imported(node: ast.AST, here: str, is_package: bool, root: Path) -> Set[str]:
    """The l2e modules one import statement loads (``from l2e.x import y`` loads l2e.x.y when y is a module)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.split(".")[0] == "l2e"}
    if not isinstance(node, ast.ImportFrom):
        return set()
    base = node.module or ""
    if node.level:  # relative: from the package of this module
        package = here.split(".") if is_package else here.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
    if base.split(".")[0] != "l2e":
        return set()
    return {f"{base}.{a.name}" if _is_module(f"{base}.{a.name}", root) else base for a in node.names}


def import_graph(package: Path = PACKAGE) -> Dict[str, Set[str]]:
    """{module: the l2e modules it imports anywhere in its source}."""
    graph = {}
    for path in sorted(package.rglob("*.py")):
        here = module_name(path, package.parent)
        edges: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            edges |= _imported(node, here, path.name == "__init__.py", package.parent)
        graph[here] = edges - {here}
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def room(module: str) -> str:
    """``l2e.model.heads`` -> ``model``; ``l2e.config`` -> ``config``; the package root -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layering_problems(graph: Dict[str, Set[str]], floors: Sequence[Sequence[str]]) -> List[str]:
    """Imports that do not go down: upward, sideways between rooms of one floor, or from/to a room that no floor
    holds. The package root is below every floor (every import of l2e runs it first)."""
    level = {r: i for i, names in enumerate(floors) for r in names}
    level[""] = -1
    problems = []
    for src in sorted(graph):
        for dst in sorted(graph[src]):
            a, b = room(src), room(dst)
            if a == b:
                continue
            if a not in level or b not in level:
                problems.append(f"{src} -> {dst}: room {a if a not in level else b!r} is on no floor of l2e.FLOORS")
            elif level[b] >= level[a]:
                how = "sideways" if level[b] == level[a] else "upward"
                problems.append(f"{src} -> {dst}: {how} ({a or 'l2e'} is on floor {level[a]}, {b} on floor {level[b]})")
    return problems


# --- the checker can fail ----------------------------------------------------------------------------------------

def test_checker_reports_a_made_up_cycle():
    graph = {"l2e.a.x": {"l2e.a.y"}, "l2e.a.y": {"l2e.a.z"}, "l2e.a.z": {"l2e.a.x"}, "l2e.a.w": {"l2e.a.x"}}
    assert find_cycle(graph) == ["l2e.a.x", "l2e.a.y", "l2e.a.z", "l2e.a.x"]
    assert find_cycle({"l2e.a.x": {"l2e.a.y"}, "l2e.a.y": set()}) is None


def test_checker_reports_upward_sideways_and_unplaced_imports():
    floors = (("low",), ("mid1", "mid2"), ("high",))
    graph = {"l2e.high.t": {"l2e.mid1.m", "l2e.low.b"}, "l2e.mid1.m": {"l2e.low.b", "l2e.high.t"},
             "l2e.mid2.n": {"l2e.mid1.m"}, "l2e.low.b": {"l2e.low.c", "l2e.attic.x"}, "l2e": set()}
    assert layering_problems(graph, floors) == [
        "l2e.low.b -> l2e.attic.x: room 'attic' is on no floor of l2e.FLOORS",
        "l2e.mid1.m -> l2e.high.t: upward (mid1 is on floor 1, high on floor 2)",
        "l2e.mid2.n -> l2e.mid1.m: sideways (mid2 is on floor 1, mid1 on floor 1)"]
    assert layering_problems({"l2e": {"l2e.low.b"}}, floors) == ["l2e -> l2e.low.b: upward (l2e is on floor -1, low on "
                                                                 "floor 0)"]


def test_graph_reads_lazy_relative_and_module_imports(tmp_path):
    pkg = tmp_path / "l2e"
    (pkg / "a").mkdir(parents=True)
    for name in ("__init__.py", "a/__init__.py", "a/b.py", "c.py"):
        (pkg / name).write_text("")
    (pkg / "a" / "m.py").write_text("def f():\n    from l2e import c\n    from . import b\n    import l2e.a\n")
    assert import_graph(pkg)["l2e.a.m"] == {"l2e.c", "l2e.a.b", "l2e.a"}


# --- the real package --------------------------------------------------------------------------------------------

def test_every_room_is_on_a_floor():
    rooms = {room(m) for m in import_graph()} - {""}
    placed = {r for names in l2e.FLOORS for r in names}
    assert rooms == placed, f"rooms on no floor: {sorted(rooms - placed)}; floors without a room: {sorted(placed - rooms)}"


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_only_go_down_the_floors():
    problems = layering_problems(import_graph(), l2e.FLOORS)
    assert not problems, "\n".join(problems)


# --- what README.md names ----------------------------------------------------------------------------------------

README = (ROOT / "README.md").read_text()


def _resolve(dotted: str) -> Tuple[str, object]:
    """(the longest importable module prefix, the object the whole path names)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except ModuleNotFoundError:
            continue
        for attr in parts[n:]:
            obj = getattr(obj, attr)
        return ".".join(parts[:n]), obj
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("dotted", sorted(set(re.findall(r"(?<![\w/.])l2e(?:\.[A-Za-z_]\w*)+", README))))
def test_readme_module_paths_import(dotted):
    _resolve(dotted)


def test_readme_file_paths_exist():
    missing = sorted(p for p in set(re.findall(r"(?<![\w/.])l2e/[\w/]*(?:\.py|/)", README)) if not (ROOT / p).exists())
    assert not missing, f"README.md names files that do not exist: {missing}"


@pytest.mark.parametrize("module", sorted(set(re.findall(r"python\s+-m\s+(l2e(?:\.\w+)+)", README))))
def test_readme_python_m_commands_run(module):
    """``python -m OLD`` of a moved module runs through l2e.MOVED's alias."""
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ")


def test_moved_names_are_the_same_module():
    for old, new in l2e.MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new)
    # what folders exported before the move name in modules.json: sentence-transformers imports it by this path
    from sentence_transformers.util import import_from_string

    from l2e.export.st_modules import TrainablePooling
    assert import_from_string("l2e.st_modules.TrainablePooling") is TrainablePooling


def test_run_folder_names_are_written_only_in_run_layout():
    """``l2e.core.run_layout.RunLayout`` is the one place a run folder's file names live."""
    from l2e.core.run_layout import RunLayout

    names = set(RunLayout.RUN_FILES) - {RunLayout.CONFIG} | {RunLayout.MERGE_RECORD}  # config.json: transformers' too
    found = []
    for path in [*PACKAGE.rglob("*.py"), *ROOT.glob("*.py")]:
        if path.name == "run_layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert found == []
    layout = RunLayout("out/x")
    assert layout.step(12) == "out/x/step_12" and RunLayout.of_export(layout.final) == layout
