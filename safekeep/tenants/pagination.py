"""Keyset pagination with opaque cursors, newest first.

A cursor is the (created_at, id) of the last row a page returned, base64url-encoded JSON. It
carries no authority: the scope filter is applied to every page whatever the cursor says.

Each paged table has an index on (scope, created_at or started_at, id), e.g.
``ix_job_tenant_page``: a page is read backwards along it, and a page after a cursor starts at
the cursor, because the condition is one row-value comparison the index can seek to rather
than an ``OR`` it can only filter by. A page costs the same on the first day and after a year
of rows.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Integer, Select, bindparam, literal, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.errors import InvalidCursor
from safekeep.instants import as_utc

T = TypeVar("T")

MAX_LIMIT = 200
DEFAULT_LIMIT = 50


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_cursor: str | None


def encode_cursor(values: dict[str, Any]) -> str:
    raw = json.dumps(values, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("The cursor is not one this API returned") from exc
    if not isinstance(value, dict):
        raise InvalidCursor("The cursor is not one this API returned")
    return value


def _cursor_position(cursor: str) -> tuple[datetime, uuid.UUID]:
    value = decode_cursor(cursor)
    try:
        created = datetime.fromisoformat(value["t"])
        row_id = uuid.UUID(value["i"])
        if created.tzinfo is None:
            raise ValueError("a cursor's instant has its zone")
        # In UTC, as the database compares it; one a datetime cannot hold there is as foreign
        # as any other.
        return as_utc(created), row_id
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidCursor("The cursor is not one this API returned") from exc


def _before(when: Any, row_id: Any, at: Any, after_id: Any) -> ColumnElement[bool]:
    """Rows older than the cursor's, in the page order (``when`` then id, both descending)."""
    return tuple_(when, row_id) < tuple_(at, after_id)


async def keyset_page(
    session: AsyncSession,
    stmt: Select[T],
    model: Any,
    *,
    cursor: str | None,
    limit: int,
    newest_by: str = "created_at",
) -> Page[T]:
    """Newest first by (``newest_by``, id); ``model`` must have both columns (snapshots, which
    have no created_at of their own, page by when they started)."""
    limit = max(1, min(limit, MAX_LIMIT))
    when = getattr(model, newest_by)
    if cursor:
        at, row_id = _cursor_position(cursor)
        # Typed as the columns are, so a cursor's time is stored-form UTC whatever its offset.
        position = literal(at, type_=when.type), literal(row_id, type_=model.id.type)
        stmt = stmt.where(_before(when, model.id, *position))
    stmt = stmt.order_by(when.desc(), model.id.desc()).limit(limit + 1)
    rows = list((await session.execute(stmt)).scalars().all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last: Any = rows[-1]
        next_cursor = encode_cursor({"t": getattr(last, newest_by).isoformat(), "i": str(last.id)})
    return Page(items=rows, next_cursor=next_cursor)


def keyset_order(
    stmt: Select[T], model: Any, *, after: bool, newest_by: str = "created_at"
) -> Select[T]:
    """``keyset_page``'s order, cursor condition and limit as bind parameters, for a page
    statement built once (per shape) and run with ``keyset_values``: on a hot list route,
    building the statement costs more CPU than running it."""
    when = getattr(model, newest_by)
    if after:
        at = bindparam("page_after_t", type_=when.type)
        row_id = bindparam("page_after_id", type_=model.id.type)
        stmt = stmt.where(_before(when, model.id, at, row_id))
    return stmt.order_by(when.desc(), model.id.desc()).limit(bindparam("page_rows", type_=Integer))


def keyset_values(cursor: str | None, limit: int) -> dict[str, Any]:
    """The parameters of a ``keyset_order`` statement (``after`` = whether a cursor came)."""
    limit = max(1, min(limit, MAX_LIMIT))
    values: dict[str, Any] = {"page_rows": limit + 1}
    if cursor:
        values["page_after_t"], values["page_after_id"] = _cursor_position(cursor)
    return values


def page_of_rows(rows: Sequence[T], limit: int, newest_by: str = "created_at") -> Page[T]:
    """The page from a ``keyset_order`` statement's rows (one more than asked, if any follow)."""
    limit = max(1, min(limit, MAX_LIMIT))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last: Any = rows[-1]
        next_cursor = encode_cursor({"t": getattr(last, newest_by).isoformat(), "i": str(last.id)})
    return Page(items=rows, next_cursor=next_cursor)
