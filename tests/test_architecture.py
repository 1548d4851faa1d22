"""The package's import graph has no cycle, and every module imports only what docs/ARCHITECTURE.md's table
allows its layer (read from the page, so the page and the code cannot drift apart). Function-level imports
count too, since they hide cycles."""

import ast
import re
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


ARCHITECTURE = SRC.parent / "docs" / "ARCHITECTURE.md"


def _named(cell: str) -> list[str]:
    """The backticked module names of a table cell, ``genbench.``-prefixed."""
    return ["genbench." + name for name in re.findall(r"`([^`]+)`", cell)]


def layer_table() -> list[tuple[str, list[str], str]]:
    """(layer, its module patterns, what it may import) of each row of docs/ARCHITECTURE.md's table."""
    text = ARCHITECTURE.read_text()
    section = text[text.index("## Modules and what each may import"):]
    rows = [line for line in section.splitlines()
            if line.startswith("| ") and not line.startswith(("| layer", "| ---"))]
    return [(cells[0], _named(cells[1]), cells[2]) for cells in
            ([c.strip() for c in row.strip("|").split("|")] for row in rows)]


def _layer_of(module: str, table: list[tuple[str, list[str], str]]) -> str | None:
    """The row whose patterns name ``module`` (``x.*``: the package and its modules; ``models.<family>``: any
    other module of models; a package's ``__init__``: the first row naming one of its modules); ``genbench``
    itself is the entry."""
    exact = [layer for layer, patterns, _ in table if module in patterns]
    if exact:
        return exact[0]
    for layer, patterns, _ in table:
        for pattern in patterns:
            if pattern.endswith(".*") and (module + ".").startswith(pattern[:-1]):  # the package too
                return layer
            if pattern.endswith(".<family>") and module.startswith(pattern[: -len("<family>")]):
                return layer
    packages = [layer for layer, patterns, _ in table for p in patterns if p.startswith(module + ".")]
    return packages[0] if packages else ("entry" if module == "genbench" else None)


def _allowed(layer: str, table: list[tuple[str, list[str], str]], graph: dict[str, set[str]]) -> set[str]:
    """What a module of ``layer`` may import, read from its row: the modules it names, "leaves", "the layers
    above", "everything"; a layer's modules may import each other, except the leaves. Words in parentheses
    and what follows "never" are explanations, not permissions."""
    names = [row[0] for row in table]
    rule = re.sub(r"\([^)]*\)", "", dict((row[0], row[2]) for row in table)[layer]).split("never")[0]
    modules = {m: _layer_of(m, table) for m in graph}
    allowed = {m for m, lay in modules.items() if lay == layer and layer != "leaves"}
    for name in _named(rule):
        allowed |= {m for m in graph if m == name or m.startswith(name + ".")}
    if "leaves" in rule:
        allowed |= {m for m, lay in modules.items() if lay == "leaves"}
    if "the layers above" in rule:
        allowed |= {m for m, lay in modules.items() if lay in names[:names.index(layer)]}
    if "everything" in rule:
        allowed |= set(graph)
    return allowed


def test_every_module_is_in_the_architecture_table_and_imports_only_what_its_row_allows():
    graph, table = import_graph(), layer_table()
    assert [row[0] for row in table][:2] == ["leaves", "networks"] and len(table) == 9
    unlisted = sorted(m for m in graph if _layer_of(m, table) is None)
    assert not unlisted, f"modules missing from docs/ARCHITECTURE.md's table: {unlisted}"
    bad = {m: sorted(graph[m] - _allowed(_layer_of(m, table), table, graph)) for m in graph}
    assert not {m: t for m, t in bad.items() if t}, {m: t for m, t in bad.items() if t}


def test_the_table_check_catches_a_forbidden_import():
    """The checks above, on imports the table forbids: a family that writes records, a leaf that reads a
    dataset format, the matrix reading a model."""
    graph, table = import_graph(), layer_table()
    for module, target in (("genbench.models.vae", "genbench.results"), ("genbench.download",
                                                                          "genbench.data.pixels"),
                           ("genbench.matrix.table", "genbench.models.base")):
        assert target in graph and target not in _allowed(_layer_of(module, table), table, graph), (module,
                                                                                                   target)
    # and allows what the rows say: the evaluation stage reads the interface and writes records
    evaluation = _allowed("evaluation", table, graph)
    assert {"genbench.models.base", "genbench.results", "genbench.data.pixels"} <= evaluation
    assert "genbench.models.vae" not in evaluation
