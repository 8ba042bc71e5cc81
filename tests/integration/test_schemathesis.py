"""Fault matrix row 6, bad input: schemathesis against a real node, driven by edge/web/openapi.json.

For every operation in the document schemathesis generates positive and negative requests
(path parameters, headers, bodies); each goes to a node on loopback (started once for the
module, on its own loop thread, with an admin token) and its response must pass the checks:
no 5xx, a status code the operation documents, the documented content type, a body that
conforms to the documented schema, and the documented headers. Deterministic (derandomized,
no example database); EDGE_SCHEMATHESIS_EXAMPLES sets the examples per operation.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from helpers import make_bill
from loophost import hosted_node
from nodefixtures import RunningNode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import edge
from edge import tokens

EXAMPLES = int(os.environ.get("EDGE_SCHEMATHESIS_EXAMPLES", "40"))
CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {
            "mode": "all",
            "max-examples": EXAMPLES,
            "deterministic": True,
            "database": "none",
        },
    }
)
schema = schemathesis.openapi.from_path(
    Path(edge.__file__).parent / "web" / "openapi.json", config=CONFIG
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
SEEN: Counter[str] = Counter()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    bills = [make_bill("0100234567", amount=10**12), make_bill("0100999999")]
    base = tmp_path_factory.mktemp("schemathesis")
    # No scope implies another: one token with all of them reaches every operation's 2xx.
    every = tokens.add_token(base / "tokens.toml", "every-scope", list(tokens.SCOPES))
    with hosted_node(base, bills) as (_, rn):
        rn.tokens["every"] = every
        yield rn
    print(f"\nschemathesis: {sum(SEEN.values())} requests: {dict(sorted(SEEN.items()))}")


@schema.parametrize()
def test_node_conforms_to_its_openapi_document(case: schemathesis.Case, node: RunningNode) -> None:
    response = case.call_and_validate(
        base_url=node.url,
        headers={"Authorization": f"Bearer {node.tokens['every']}"},
        checks=CHECKS,
        timeout=10,
    )
    mode = case.meta.generation.mode.value if case.meta else "?"
    SEEN[f"{case.method} {case.path} {mode} {response.status_code}"] += 1
