"""The house's layers, read from the imports themselves (including TYPE_CHECKING ones).

`outbox` imports nothing of ours, `sync` only `outbox`, `edge` both; inside edge only
`edge.app` and the CLI import `edge.web`, only the CLI imports `edge.ops`, and no module
of ours is part of an import cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"outbox", "sync", "edge"}
ALLOWED = {"outbox": set(), "sync": {"outbox"}, "edge": {"outbox", "sync"}}
# Rooms inside edge and who may enter them (prefix match on the importing module).
ROOMS = {"edge.web": ("edge.web", "edge.app", "edge.cli"), "edge.ops": ("edge.ops", "edge.cli")}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> Iterator[str]:
    """Every module of ours that `module` imports, absolute or relative, anywhere in its body.

    `from a.b import c` yields `a.b` and, as `c` may be a submodule, `a.b.c` too; the caller
    keeps only names that exist.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            for alias in node.names:
                yield f"{target}.{alias.name}"


def graph(root: Path) -> dict[str, set[str]]:
    """module -> the modules of ours it imports (only names that are real modules)."""
    sources = {}
    for top in OURS:
        for path in sorted((root / top).rglob("*.py")):
            sources[module_name(root, path)] = (path, path.name == "__init__.py")
    edges: dict[str, set[str]] = {}
    for module, (path, is_package) in sources.items():
        found = set(imports_of(path.read_text(encoding="utf-8"), module, is_package))
        edges[module] = {m for m in found if m in sources and m != module}
    return edges


def layer_violations(root: Path) -> list[str]:
    out = []
    for module, targets in sorted(graph(root).items()):
        top = module.split(".")[0]
        for target in sorted(targets):
            other = target.split(".")[0]
            if other != top and other not in ALLOWED[top]:
                out.append(f"{module} imports {target}")
                continue
            for room, allowed in ROOMS.items():
                inside = target == room or target.startswith(room + ".")
                if inside and not any(module == a or module.startswith(a + ".") for a in allowed):
                    out.append(f"{module} imports {target}")
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_dependencies_point_one_way_and_rooms_are_entered_only_by_their_owners():
    assert layer_violations(ROOT) == []


def test_no_import_cycle_anywhere():
    assert cycles(graph(ROOT)) == []


def test_the_graph_sees_the_imports_that_exist():
    edges = graph(ROOT)
    assert "outbox" in edges["edge.db"]
    assert "edge.web.cashier" in edges["edge.app"]
    assert "edge.node" in edges["edge.web.cashier"]


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for top in OURS:
        (tmp_path / top).mkdir()
        (tmp_path / top / "__init__.py").write_text('"""x"""\n')
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return tmp_path


@pytest.mark.parametrize(
    ("name", "source", "bad"),
    [
        ("outbox/sneaky.py", "import edge.db\n", "outbox.sneaky imports edge"),
        ("outbox/sneaky.py", "from sync import protocol\n", "outbox.sneaky imports sync"),
        ("sync/sneaky.py", "def f():\n    from edge import mirror\n", "sync.sneaky imports edge"),
        ("sync/sneaky.py", "import json, edge\n", "sync.sneaky imports edge"),
        ("edge/mirror.py", "from edge.web import http\n", "edge.mirror imports edge.web"),
        (
            "edge/power/monitor.py",
            "from ..ops import doctor\n",
            "edge.power.monitor imports edge.ops",
        ),
    ],
)
def test_the_check_catches_a_wrong_import(tmp_path: Path, name: str, source: str, bad: str):
    files = {
        "edge/web/__init__.py": "",
        "edge/web/http.py": "",
        "edge/ops/__init__.py": "",
        "edge/ops/doctor.py": "",
        "edge/power/__init__.py": "",
        "edge/db.py": "",
        "edge/mirror.py": "",
        "sync/protocol.py": "",
    }
    files[name] = source
    found = layer_violations(_tree(tmp_path, files))
    assert [v for v in found if v.startswith(bad)] != [], found


def test_the_check_finds_a_cycle_hidden_behind_type_checking(tmp_path: Path):
    root = _tree(
        tmp_path,
        {
            "edge/a.py": "from edge import b\n",
            "edge/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edge.c import C\n",
            "edge/c.py": "import edge.a\n",
            "edge/d.py": "from edge import a\n",
        },
    )
    assert cycles(graph(root)) == [["edge.a", "edge.b", "edge.c"]]
