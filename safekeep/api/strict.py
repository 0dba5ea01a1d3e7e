"""Unknown query parameters are refused (400), not ignored: a typo such as ``?limt=5``
should fail loudly instead of silently returning the default page."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from pydantic import BaseModel

from safekeep.errors import BadRequest

_KNOWN: dict[int, frozenset[str]] = {}


def _query_names(dependant: Any) -> set[str]:
    names: set[str] = set()
    for param in dependant.query_params:
        model = param.field_info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):  # a query-parameter model
            names |= {field.alias or name for name, field in model.model_fields.items()}
        else:
            names.add(param.alias)
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def reject_unknown_query(request: Request) -> None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _KNOWN.get(id(route))
    if known is None:
        known = frozenset(_query_names(route.dependant))
        _KNOWN[id(route)] = known
    unknown = sorted(set(request.query_params.keys()) - known)
    if unknown:
        raise BadRequest(
            f"Unknown query parameter(s): {', '.join(repr(u) for u in unknown)}",
            errors=[{"loc": ["query", u], "msg": "unknown parameter"} for u in unknown],
        )
