"""edge/web/openapi.json: valid OpenAPI 3.1, covers every route the app registers, names every error code."""

from __future__ import annotations

import importlib.resources
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from openapi_spec_validator import validate

from edge import errors
from edge.app import create_app
from edge.config import Settings

# Codes any path can produce (router or middleware), not tied to one operation.
GENERIC_CODES = {"internal_error", "http_error", "not_found", "method_not_allowed"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    raw = importlib.resources.files("edge.web").joinpath("openapi.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(raw)
    return loaded


def is_catch_all(resource: web.AbstractResource) -> bool:
    if isinstance(resource, web.StaticResource):
        return True
    pattern = resource.get_info().get("pattern")
    return pattern is not None and (".*" in pattern.pattern or ".+" in pattern.pattern)


def app_routes(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(Settings(node_data_dir=tmp_path, ups_source="none"))
    return {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        and not is_catch_all(route.resource)
    }


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references are used: {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
        node = node[part]
    return node


def test_is_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "Governorate edge node API"
    assert doc["info"]["version"] == "0.1.0"
    assert {"url": "http://127.0.0.1:8080"}.items() <= doc["servers"][0].items()


def test_valid_against_the_openapi_3_1_schema(doc: dict[str, Any]) -> None:
    validate(doc)


def test_every_registered_route_is_documented(doc: dict[str, Any], tmp_path: Path) -> None:
    routes = app_routes(tmp_path)
    assert ("/v1/payments", "post") in routes  # the app really was inspected
    missing = sorted(
        (path, method) for path, method in routes if method not in doc["paths"].get(path, {})
    )
    assert not missing, f"routes not in edge/web/openapi.json: {missing}"


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    found = set(refs(doc))
    assert found
    for ref in found:
        resolve(doc, ref)


def test_every_error_code_is_documented(doc: dict[str, Any]) -> None:
    codes = {
        cls.code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.ApiError) and cls is not errors.ApiError
    }
    assert {"unknown_bill", "storage_full"} <= codes
    text = json.dumps(doc, ensure_ascii=False)
    missing = sorted(c for c in codes - GENERIC_CODES if not re.search(rf"\b{c}\b", text))
    assert not missing, f"error codes not mentioned in edge/web/openapi.json: {missing}"


def test_every_operation_has_id_summary_and_security(doc: dict[str, Any]) -> None:
    ids = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op.get("operationId"), (method, path)
            assert op.get("summary") and "\n" not in op["summary"], (method, path)
            assert "security" in op, (method, path)
            ids.append(op["operationId"])
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    "path", ["/", "/v1/status", "/v1/power/events", "/healthz", "/readyz", "/metrics"]
)
def test_operational_views_need_no_token(doc: dict[str, Any], path: str) -> None:
    assert doc["paths"][path]["get"]["security"] == []


def test_examples_match_their_schemas(doc: dict[str, Any]) -> None:
    checked = 0
    for item in doc["paths"].values():
        for op in item.values():
            bodies = [op.get("requestBody", {})]
            bodies += [
                resolve(doc, r["$ref"]) if "$ref" in r else r for r in op["responses"].values()
            ]
            for body in bodies:
                media = body.get("content", {}).get("application/json", {})
                if "example" in media and "schema" in media:
                    schema = {**media["schema"], "components": doc["components"]}
                    jsonschema.Draft202012Validator(schema).validate(media["example"])
                    checked += 1
    assert checked >= 3
