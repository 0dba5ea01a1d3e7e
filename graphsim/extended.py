"""Single-value extended properties of Outlook items (messages, events, contacts).

Graph stores any ``singleValueExtendedProperties`` a client writes on create or update and
serves them only when asked: ``$expand=singleValueExtendedProperties($filter=id eq '...')``
(the filter is required), and finds items by them with
``$filter=singleValueExtendedProperties/Any(ep: ep/id eq '...' and ep/value eq '...')``.
Property ids are compared without case ("String {GUID} Name X", "Integer 0x0E07").
"""

from __future__ import annotations

from typing import Any

from graphsim.core import odata_filter
from graphsim.http import GraphError, Req
from graphsim.state import OItem

FIELD = "singleValueExtendedProperties"


def store(item: OItem, body: dict[str, Any]) -> None:
    """Keep every property the request writes (a later write of the same id replaces it)."""
    values = body.get(FIELD)
    if values is None:
        return
    if not isinstance(values, list):
        raise GraphError(400, "RequestBodyRead", f"'{FIELD}' must be a collection.")
    for prop in values:
        if not isinstance(prop, dict) or not str(prop.get("id") or "").strip():
            raise GraphError(400, "ErrorInvalidExtendedProperty", "Each property needs an id.")
        prop_id = " ".join(str(prop["id"]).split())
        item.extended[prop_id.lower()] = {"id": prop_id, "value": str(prop.get("value") or "")}


def listed(item: OItem) -> list[dict[str, str]]:
    return [dict(p) for p in item.extended.values()]


def with_properties(obj: dict[str, Any], item: OItem) -> dict[str, Any]:
    """The item's JSON as ``$filter`` sees it: with its extended properties."""
    return {**obj, FIELD: listed(item)}


def expand(req: Req, item: OItem, out: dict[str, Any]) -> dict[str, Any]:
    """Add the properties ``$expand=singleValueExtendedProperties($filter=...)`` asks for."""
    options = req.expand_options().get(FIELD.lower())
    if options is None:
        return out
    predicate = odata_filter(options.get("filter"))
    if predicate is None:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            "The $expand of singleValueExtendedProperties requires a $filter.",
        )
    found = [p for p in listed(item) if predicate(p)]
    if found:  # Graph leaves the property out when nothing matches
        out[FIELD] = found
    return out
