"""Import direction: `outbox` imports nothing of ours, `sync` only `outbox`, `edge` both."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"outbox", "sync", "edge"}
ALLOWED = {"outbox": set(), "sync": {"outbox"}, "edge": {"outbox", "sync"}}


def imported_packages(source: str, package: str) -> set[str]:
    """Top-level packages of ours that a module imports (absolute or relative, anywhere)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # A relative import stays inside the importing package.
            found.add(package if node.level else (node.module or "").split(".")[0])
    return found & OURS


def violations(root: Path) -> list[str]:
    out = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            for other in imported_packages(path.read_text(encoding="utf-8"), package):
                if other != package and other not in allowed:
                    out.append(f"{path.relative_to(root)} imports {other}")
    return out


def test_dependencies_point_one_way():
    assert violations(ROOT) == []


def test_the_check_sees_the_imports_that_exist():
    edge_imports = set()
    for path in (ROOT / "edge").rglob("*.py"):
        edge_imports |= imported_packages(path.read_text(encoding="utf-8"), "edge")
    assert "outbox" in edge_imports


@pytest.mark.parametrize(
    ("package", "source", "bad"),
    [
        ("outbox", "import edge.db\n", "edge"),
        ("outbox", "from sync import protocol\n", "sync"),
        ("sync", "def f():\n    from edge.mirror import apply_changes\n", "edge"),
        ("sync", "import json, edge\n", "edge"),
    ],
)
def test_the_check_catches_a_wrong_import(tmp_path: Path, package: str, source: str, bad: str):
    for name in ALLOWED:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text('"""x"""\nfrom . import sibling\n')
    (tmp_path / package / "sneaky.py").write_text(source)
    assert violations(tmp_path) == [f"{package}/sneaky.py imports {bad}"]
