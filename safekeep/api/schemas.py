"""Schemas shared by every resource: pages and pagination parameters."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, ConfigDict

from safekeep.tenants.pagination import DEFAULT_LIMIT, MAX_LIMIT

T = TypeVar("T")


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    """One page of a list. Pass ``next_cursor`` back as ``cursor`` for the next page; it is
    null on the last page."""

    items: list[T]
    next_cursor: str | None


Cursor = Annotated[
    str | None, Query(max_length=500, description="Opaque cursor from a previous page")
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
DEFAULT_PAGE_SIZE = DEFAULT_LIMIT
