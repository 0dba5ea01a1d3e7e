from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.models import IdempotencyRecord, utcnow
from safekeep.tenants.models.base import new_id


async def find(session: AsyncSession, msp_id: uuid.UUID, key: str) -> IdempotencyRecord | None:
    stmt = (
        select(IdempotencyRecord)
        .where(IdempotencyRecord.msp_id == msp_id, IdempotencyRecord.key == key)
        # As the database has it now, not as this session may have read it before.
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def insert_claim(
    session: AsyncSession,
    *,
    msp_id: uuid.UUID,
    key: str,
    method: str,
    path: str,
    request_hash: str,
) -> uuid.UUID | None:
    """A claim (a record without an answer) of the key, unless a record of it is there: its
    id, or None. The unique ``(msp_id, key)`` decides between concurrent claims."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        insert: Any = postgresql.insert(IdempotencyRecord)
    elif dialect == "sqlite":
        insert = sqlite.insert(IdempotencyRecord)
    else:  # pragma: no cover - the two databases we run on
        raise NotImplementedError(f"no ON CONFLICT insert for {dialect}")
    stmt = (
        insert.values(
            id=new_id(),
            msp_id=msp_id,
            key=key,
            method=method,
            path=path,
            request_hash=request_hash,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=[IdempotencyRecord.msp_id, IdempotencyRecord.key])
        .returning(IdempotencyRecord.id)
    )
    claimed: uuid.UUID | None = (await session.execute(stmt)).scalar_one_or_none()
    return claimed


async def delete_if_free(
    session: AsyncSession, record_id: uuid.UUID, *, expired_before: datetime, stale_before: datetime
) -> None:
    """Delete the record if it is still past retention, or still a claim made before
    ``stale_before`` (checked in the statement: an answer stored meanwhile keeps it)."""
    await session.execute(
        delete(IdempotencyRecord)
        .where(
            IdempotencyRecord.id == record_id,
            or_(
                IdempotencyRecord.created_at < expired_before,
                (IdempotencyRecord.status_code.is_(None))
                & (IdempotencyRecord.created_at < stale_before),
            ),
        )
        .execution_options(synchronize_session=False)
    )


async def complete(
    session: AsyncSession, claim_id: uuid.UUID, *, status_code: int, body: Any
) -> bool:
    """Store the answer in the claim; False when the claim is no longer there to hold it."""
    result = await session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.id == claim_id, IdempotencyRecord.status_code.is_(None))
        .values(status_code=status_code, body=body)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]


async def release(session: AsyncSession, claim_id: uuid.UUID) -> None:
    """Delete the claim, if it still holds no answer."""
    await session.execute(
        delete(IdempotencyRecord)
        .where(IdempotencyRecord.id == claim_id, IdempotencyRecord.status_code.is_(None))
        .execution_options(synchronize_session=False)
    )


async def delete_older_than(session: AsyncSession, before: datetime) -> int:
    result = await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at < before)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
