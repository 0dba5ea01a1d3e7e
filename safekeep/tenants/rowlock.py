"""Reading one row under its lock, for the writes that must settle one after the other."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")


async def one_for_update(session: AsyncSession, entity: type[T], *where: Any) -> T | None:
    """The row matching ``where``, locked for the rest of the transaction and read afresh
    (``populate_existing``): a caller that waited for the lock sees what the holder committed,
    not the copy the session had. SQLite serialises writers anyway and ignores FOR UPDATE."""
    stmt = select(entity).where(*where).with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()
