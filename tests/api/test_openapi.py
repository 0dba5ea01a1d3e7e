"""The committed OpenAPI document is the one the app serves, and it tells the truth about
errors: every operation documents its problem+json answers and (but for the public ones)
its security."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from safekeep.api.openapi_dump import document, render

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
PUBLIC = {
    "/healthz",
    "/readyz",
    "/v1/consent/callback",
    "/v1/billing/stripe/webhook",
    "/v1/graph/notifications",
    "/v1/graph/lifecycle",
}
# Routes for the operator, not an MSP: they take the operator's token, never an API key.
OPERATOR = {"/metrics": "MetricsToken"}


def test_committed_document_is_current() -> None:
    assert COMMITTED.read_text() == render(), "run `make openapi` and commit openapi/openapi.json"


def test_every_operation_documents_errors_and_auth() -> None:
    doc = document()
    assert doc["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            codes = set(op["responses"])
            if path in PUBLIC:
                assert "security" not in op, (method, path)
                continue
            if path in OPERATOR:
                assert op.get("security") == [{OPERATOR[path]: []}], (method, path)
                assert "401" in codes and "429" not in codes, (method, path, codes)
                continue
            assert op.get("security") == [{"ApiKey": []}], (method, path)
            assert {"401", "403"} <= codes, (method, path, codes)
            if "{" in path:
                assert "404" in codes, (method, path)
            for code in codes - {"200", "201", "202", "204", "206", "304", "307"}:
                content = op["responses"][code].get("content", {})
                assert "application/problem+json" in content, (method, path, code)


async def test_the_app_serves_the_committed_document(module_client: httpx.AsyncClient) -> None:
    served = (await module_client.get("/openapi.json")).json()
    assert served == json.loads(COMMITTED.read_text())


def _arrays_of_choices(
    node: object, where: str, refs: dict[str, object]
) -> list[tuple[str, int, int]]:
    """Every array in the document whose items are one of a fixed set of values: (where,
    maxItems, how many values there are)."""
    found: list[tuple[str, int, int]] = []
    if isinstance(node, dict):
        if node.get("type") == "array" and "maxItems" in node:
            items = node.get("items", {})
            if isinstance(items, dict) and "$ref" in items:
                items = refs[items["$ref"].rsplit("/", 1)[1]]
            if isinstance(items, dict) and "enum" in items:
                found.append((where, node["maxItems"], len(set(items["enum"]))))
        for key, value in node.items():
            found += _arrays_of_choices(value, f"{where}/{key}", refs)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _arrays_of_choices(value, f"{where}/{i}", refs)
    return found


def test_a_list_of_choices_can_hold_every_choice() -> None:
    """A request may name every value of an enum at once (every service to back up, every
    event to hear): a list's bound below the number of values refuses a valid request."""
    doc = document()
    found = _arrays_of_choices(doc, "", doc["components"]["schemas"])
    assert {where.rsplit("/", 1)[-1] for where, _, _ in found} >= {"events", "services"}
    assert [(where, bound, n) for where, bound, n in found if bound < n] == []


def _misplaced_bounds(node: object, where: str) -> list[str]:
    """Where a bound of one JSON type sits on a schema of another (``maxLength`` on an
    array, ``maxItems`` on a string): a validator or a generated client ignores it."""
    found: list[str] = []
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "array" and {"maxLength", "minLength"} & node.keys():
            found.append(where)
        if kind == "string" and {"maxItems", "minItems"} & node.keys():
            found.append(where)
        for key, value in node.items():
            found += _misplaced_bounds(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _misplaced_bounds(value, f"{where}/{i}")
    return found


def test_every_bound_is_of_the_type_it_bounds() -> None:
    assert _misplaced_bounds(document(), "") == []
