"""Reading one row under its lock, for the writes that must settle one after the other."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")


async def one_for_update(session: AsyncSession, entity: type[T], *where: Any) -> T | None:
    """The row matching ``where``, locked for the rest of the transaction and read afresh
    (``populate_existing``): a caller that waited for the lock sees what the holder committed,
    not the copy the session had. SQLite serialises writers anyway and ignores FOR UPDATE."""
    stmt = select(entity).where(*where).with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def take_write_lock(session: AsyncSession, entity: Any, *where: Any) -> None:
    """On SQLite, which has no row locks and begins a transaction at its first write (a
    ``SELECT`` takes no lock at all), take the database's write lock now with a write that
    changes nothing, so that deciders that read, judge and then write settle one after the
    other as ``FOR UPDATE`` makes them on PostgreSQL (where this does nothing)."""
    if session.get_bind().dialect.name != "sqlite":
        return
    table = entity.__table__
    key = table.primary_key.columns.values()[0]
    # Each column to itself, the ones with an ``onupdate`` (such as updated_at) included, so
    # that nothing, not even a timestamp, changes.
    unchanged = {c.name: c for c in table.columns if c.onupdate is not None}
    await session.execute(
        update(entity)
        .where(*where)
        .values({key.name: key, **unchanged})
        .execution_options(synchronize_session=False)
    )
