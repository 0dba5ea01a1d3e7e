from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.models import ApiKey, Msp
from safekeep.tenants.pagination import Page, keyset_page


async def get_by_hash(session: AsyncSession, secret_hash: str) -> ApiKey | None:
    stmt = select(ApiKey).where(ApiKey.secret_hash == secret_hash)
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_grant_by_hash(session: AsyncSession, secret_hash: str) -> Any | None:
    """What authentication needs of an unrevoked key and its MSP, in one statement and without
    loading ORM objects: every authenticated request runs this."""
    stmt = (
        select(
            ApiKey.id,
            ApiKey.msp_id,
            ApiKey.scopes,
            ApiKey.tenant_ids,
            ApiKey.expires_at,
            ApiKey.last_used_at,
            Msp.status.label("msp_status"),
        )
        .join(Msp, Msp.id == ApiKey.msp_id)
        .where(ApiKey.secret_hash == secret_hash, ApiKey.revoked_at.is_(None))
    )
    return (await session.execute(stmt)).one_or_none()


async def mark_used(
    session: AsyncSession, key_id: uuid.UUID, *, now: datetime, not_since: datetime
) -> None:
    """Set ``last_used_at`` unless another request already did since ``not_since`` (so that
    concurrent requests of one key write it once)."""
    await session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < not_since),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )


async def get_for_msp(session: AsyncSession, msp_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
    stmt = select(ApiKey).where(ApiKey.id == key_id, ApiKey.msp_id == msp_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_for_msp(
    session: AsyncSession,
    msp_id: uuid.UUID,
    *,
    include_revoked: bool,
    cursor: str | None,
    limit: int,
) -> Page[ApiKey]:
    stmt = select(ApiKey).where(ApiKey.msp_id == msp_id)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return await keyset_page(session, stmt, ApiKey, cursor=cursor, limit=limit)
