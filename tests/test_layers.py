"""The package's modules form layers: no import circle, counting imports inside functions too (a lazy import hides a
circle at import time, not from the reader who has to know which module sits below which)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "trl_gsm8k"


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module name -> the package modules it imports (anywhere in its code: top level, functions, classes)."""
    name = package.name
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module in modules:
        tree = ast.parse((package / f"{module}.py").read_text(), filename=f"{module}.py")
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level == 1:  # from .x import y, from . import x
                    base = f"{name}.{node.module}" if node.module else name
                elif node.level == 0:
                    base = node.module or ""
                else:
                    continue  # above the package
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                parts = target.split(".")
                if parts[0] == name and len(parts) > 1 and parts[1] in modules and parts[1] != module:
                    graph[module].add(parts[1])
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_is_read_from_every_kind_of_import():
    graph = import_graph()
    assert "answers" in graph["rewards"]  # from .answers import (...) at top level
    assert "config" in graph["memory"]  # from .config import read_recipe inside main()
    assert {"advantages", "config", "sampling"} <= graph["trainer"]  # from trl_gsm8k.x import ...
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_modules_import_each_other_without_a_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(f"{m}.py" for m in cycle)
