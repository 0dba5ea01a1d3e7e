"""Stored first answers of creating requests (kept 24 hours)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.idempotency import repository
from safekeep.tenants.models import IdempotencyRecord, utcnow

RETENTION = timedelta(hours=24)


async def find(session: AsyncSession, msp_id: uuid.UUID, key: str) -> IdempotencyRecord | None:
    record = await repository.find(session, msp_id, key)
    if record is not None and record.created_at < utcnow() - RETENTION:
        return None
    return record


async def save(
    session: AsyncSession,
    *,
    msp_id: uuid.UUID,
    key: str,
    method: str,
    path: str,
    request_hash: str,
    status_code: int,
    body: Any,
) -> None:
    stale = await repository.find(session, msp_id, key)
    if stale is not None:  # expired record of the same key: replace it
        await session.delete(stale)
        await session.flush()
    session.add(
        IdempotencyRecord(
            msp_id=msp_id,
            key=key,
            method=method,
            path=path,
            request_hash=request_hash,
            status_code=status_code,
            body=body,
        )
    )
    await session.flush()


async def prune(session: AsyncSession) -> int:
    return await repository.delete_older_than(session, utcnow() - RETENTION)
