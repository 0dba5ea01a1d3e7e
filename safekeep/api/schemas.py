"""Schemas shared by every resource: pages and pagination parameters."""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from enum import StrEnum
from types import GenericAlias, UnionType
from typing import Annotated, Any, Generic, TypeVar, get_args, get_origin

from fastapi import Query
from fastapi.responses import Response
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
    field_validator,
)
from sqlalchemy import Row
from typing_extensions import TypedDict

from safekeep.instants import as_utc
from safekeep.tenants import pagination
from safekeep.tenants.pagination import DEFAULT_LIMIT, MAX_LIMIT
from safekeep.text import NUL

T = TypeVar("T")
RowT = TypeVar("RowT")
ModelT = TypeVar("ModelT", bound=BaseModel)


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# How deep a request body's JSON may nest. Ours nest three or four levels (a policy's
# retention rules); a hostile body can nest thousands, which a recursive walk (ours, or a
# validator's) would answer with a RecursionError, a 500.
MAX_DEPTH = 32


class TooDeep(ValueError):
    def __init__(self) -> None:
        super().__init__(f"the value nests deeper than {MAX_DEPTH} levels")


def holds_nul(value: Any) -> bool:
    """Whether text anywhere in ``value`` (a JSON value as parsed: strings, lists, objects and
    their keys) carries U+0000. Walked without recursion; a value nested deeper than
    ``MAX_DEPTH`` raises ``TooDeep`` (a ValueError: the field's 422)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        here, depth = stack.pop()
        if isinstance(here, str):
            if NUL in here:
                return True
            continue
        if isinstance(here, list | tuple | dict):
            if depth >= MAX_DEPTH:
                raise TooDeep
            if isinstance(here, dict):
                stack.extend((k, depth + 1) for k in here)
                stack.extend((v, depth + 1) for v in here.values())
            else:
                stack.extend((v, depth + 1) for v in here)
    return False


class RequestSchema(Schema):
    """The base of every request body. A field the body's schema does not name is refused
    (422, its name in the error), as Stripe refuses an unknown parameter: a misspelt field
    (`evnets`) would otherwise change nothing and answer 200. No text in it may carry U+0000
    (NUL): PostgreSQL's text cannot hold one, and nothing a client means is written with it,
    so it is refused here as the field's 422, the same on every database, instead of failing
    deep in a write. Nor may a field's value nest deeper than ``MAX_DEPTH`` (a 422 too)."""

    model_config = ConfigDict(from_attributes=True, extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if holds_nul(value):
            raise ValueError("text may not contain U+0000 (NUL)")
        return value


class Page(BaseModel, Generic[T]):
    """One page of a list. Pass ``next_cursor`` back as ``cursor`` for the next page; it is
    null on the last page."""

    items: list[T]
    next_cursor: str | None


def page_of(page: pagination.Page[RowT], out: Callable[[RowT], T]) -> Page[T]:
    """A stored page as the API shows it: every row through ``out``, the cursor unchanged."""
    return Page(items=[out(row) for row in page.items], next_cursor=page.next_cursor)


def extended(answer: type[ModelT], shown: BaseModel, **added: Any) -> ModelT:
    """``shown`` as its subclass ``answer``, with the fields that adds (the secret or link a
    create's answer carries beside the resource)."""
    return answer.model_validate({**shown.model_dump(), **added})


def json_response(model: BaseModel) -> Response:
    """The model as the JSON answer, serialised once. A route that returns a model has it
    validated against its ``response_model`` again before serialisation; for an answer the
    route built itself from stored rows that second pass is pure cost. The decorator's
    ``response_model`` still documents the route."""
    return Response(model.model_dump_json(by_alias=True), media_type="application/json")


@functools.cache
def _twin(model: type[BaseModel]) -> Any:
    """``model`` as a TypedDict of its fields (models in them as their own twins), so that
    pydantic-core writes a plain dict exactly as the model's own serializer writes the model,
    without a model object per row or hit. Only for models of plain fields: an alias, a
    computed field or a custom serializer would make the two differ, so they are refused."""
    decorators = model.__pydantic_decorators__
    if (
        model.model_computed_fields
        or decorators.field_serializers
        or decorators.model_serializers
        or any(f.alias or f.serialization_alias for f in model.model_fields.values())
    ):
        raise TypeError(f"{model.__name__} is not a model of plain fields")
    fields = {name: _as_written(field.annotation) for name, field in model.model_fields.items()}
    twin = TypedDict(f"{model.__name__}Row", fields)  # type: ignore[misc]
    return twin


@functools.cache
def _plain_writer(model: type[BaseModel]) -> TypeAdapter[Any]:
    return TypeAdapter(_twin(model))


def plain_response(model: type[BaseModel], body: dict[str, Any]) -> Response:
    """``body`` (``model``'s fields as a dict, its models' as dicts too) answered as
    ``json_response`` answers the model built from it, byte for byte, without the model
    objects: for an answer of many parts built from stored or searched values, which are
    typed already (a page of 25 search hits: 430 -> 135 us)."""
    return Response(_plain_writer(model).dump_json(body), media_type="application/json")


def rows_body(
    page: pagination.Page[Row[Any]],
    model: type[BaseModel],
    fields: Sequence[str] | None = None,
) -> bytes:
    """A page of rows selected as ``model``'s fields, in their order, written as
    ``json_response(page_of(...))`` writes it with a model built per row, at about half the
    cost (a 50-row page of accounts: 460 -> 190-260 us). The rows' columns are named as the
    fields, or ``fields`` names them (a column stored under another name than the field's)."""
    rows = page.items
    names = fields or (rows[0]._fields if rows else ())  # the same for every row: read once
    items = [dict(zip(names, row, strict=True)) for row in rows]
    return page_body(model, items, page.next_cursor)


def page_body(
    model: type[BaseModel], items: list[dict[str, Any]], next_cursor: str | None
) -> bytes:
    """``Page[model]`` written from its items as dicts of ``model``'s fields in their order
    (models in them as dicts too): the bytes the models would write."""
    page: type[BaseModel] = Page[model]  # type: ignore[valid-type]
    return _plain_writer(page).dump_json({"items": items, "next_cursor": next_cursor})


def rows_response(page: pagination.Page[Row[Any]], model: type[BaseModel]) -> Response:
    """``rows_body`` as the answer."""
    return Response(rows_body(page, model), media_type="application/json")


def _as_written(annotation: Any) -> Any:
    """A field's type as the plain writer declares it: a model as its twin (``list[Model]``
    as a list of twins), a string enum as ``str``. A member is the string of its value,
    written as it is; declared as the enum, pydantic-core reads each member's ``value``,
    which is Python code (``enum.property``): two per row of accounts."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _twin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return str
    if isinstance(annotation, UnionType):
        return functools.reduce(operator.or_, (_as_written(a) for a in get_args(annotation)))
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        return GenericAlias(list, (_as_written(item),))
    return annotation


Cursor = Annotated[
    str | None, Query(max_length=500, description="Opaque cursor from a previous page")
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
DEFAULT_PAGE_SIZE = DEFAULT_LIMIT


class PageWindow(BaseModel):
    """Where a page of a list starts and how long it is: the ``cursor`` and ``limit`` query
    parameters every list takes, declared (and documented) once. A query-parameter model:
    FastAPI reads the two from the query string as before, with no dependency to run."""

    cursor: Cursor = None
    limit: Limit = DEFAULT_PAGE_SIZE

    async def read(
        self,
        lister: Callable[..., Awaitable[pagination.Page[RowT]]],
        *args: Any,
        **filters: Any,
    ) -> pagination.Page[RowT]:
        """The stored page a service's lister answers for this window: every lister takes
        the window as its ``cursor`` and ``limit`` keywords after its own arguments."""
        return await lister(*args, **filters, cursor=self.cursor, limit=self.limit)


Paging = Annotated[PageWindow, Query()]


_ISO = re.compile(
    r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?)?$"
)


def _iso_only(value: Any) -> Any:
    """Timestamps in requests are ISO 8601 text, as documented (pydantic alone would also
    take a bare number as Unix time)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO.match(value.strip()):
        raise ValueError("must be an ISO 8601 timestamp, e.g. 2026-11-27T15:04:05Z")
    return value


# A request timestamp: ISO 8601 only; without a zone it is read as UTC; one whose UTC form a
# datetime cannot hold (9999-12-31T23:00:00-05:00) is refused like any other bad value.
Timestamp = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(as_utc)]


# The OpenAPI description of a binary answer (downloads): generators map it to bytes/Blob.
BINARY: dict[str, Any] = {"schema": {"type": "string", "format": "binary"}}
