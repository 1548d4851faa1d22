"""The package's import graph has no cycle: every genbench module can be imported on its own, and leaf
modules (schemas, errors) stay leaves. Function-level imports count too, since they hide cycles."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """genbench module -> the genbench modules it imports (anywhere in the file)."""
    modules = {_module_name(p): p for p in (SRC / "genbench").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genbench"):
                # ``from genbench.x import y`` imports genbench.x.y when that is a module, else genbench.x
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                            for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("genbench")}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 40 and "genbench.config" in graph["genbench.train"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_a_cycle_is_found_when_there_is_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_leaf_modules_import_no_other_genbench_module_but_errors():
    graph = import_graph()
    for leaf in ("genbench.schema", "genbench.errors", "genbench.models.ema"):
        assert graph[leaf] <= {"genbench.errors"}, (leaf, graph[leaf])


def _imports_of(graph: dict[str, set[str]], package: str) -> set[str]:
    return {t for m, targets in graph.items() if m == package or m.startswith(package + ".") for t in targets}


def test_each_layer_imports_only_what_docs_architecture_allows():
    graph = import_graph()
    forbidden = {
        "genbench.models": ("genbench.evaluation", "genbench.matrix", "genbench.train", "genbench.config",
                            "genbench.loggers", "genbench.callbacks"),
        "genbench.data": ("genbench.models", "genbench.evaluation", "genbench.matrix", "genbench.train"),
        "genbench.nets": ("genbench.models", "genbench.data", "genbench.evaluation", "genbench.matrix"),
        "genbench.matrix": ("genbench.models", "genbench.evaluation", "genbench.data", "genbench.train",
                            "genbench.config"),
        "genbench.evaluation": ("genbench.matrix", "genbench.train", "genbench.config", "genbench.loggers"),
    }
    for package, banned in forbidden.items():
        bad = sorted(t for t in _imports_of(graph, package) if t.startswith(banned))
        assert not bad, f"{package} imports {bad}"
    # The evaluation stage knows a model only through the interface, never a family's module.
    families = {t for t in _imports_of(graph, "genbench.evaluation") if t.startswith("genbench.models.")}
    assert families <= {"genbench.models.base"}, families
