"""docs/SECURITY.md maps each OWASP API Security Top 10 (2023) risk to tests that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "SECURITY.md"
RISKS = [f"API{n}" for n in range(1, 11)]
CITED = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


def rows() -> dict[str, str]:
    """Risk -> its row of the OWASP table."""
    out = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        found = re.match(r"\| \*\*(API\d+) ", line)
        if found:
            out[found.group(1)] = line
    return out


def test_every_risk_has_a_row_citing_tests() -> None:
    table = rows()
    assert sorted(table, key=lambda r: int(r[3:])) == RISKS
    for risk, line in table.items():
        tests_cell = line.rstrip(" |").rsplit(" | ", 1)[1]
        assert CITED.search(tests_cell), f"{risk} cites no test"


def test_every_cited_test_exists() -> None:
    cited = CITED.findall(DOC.read_text(encoding="utf-8"))
    assert len(cited) > 30
    missing = []
    for path, name in cited:
        file = ROOT / path
        if not file.is_file():
            missing.append(path)
            continue
        if name:
            tree = ast.parse(file.read_text(encoding="utf-8"))
            defined = {
                node.name
                for node in ast.walk(tree)
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            if name not in defined:
                missing.append(f"{path}::{name}")
    assert not missing, f"docs/SECURITY.md cites tests that do not exist: {missing}"
