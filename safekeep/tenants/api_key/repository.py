from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.models import ApiKey
from safekeep.tenants.pagination import Page, keyset_page


async def get_by_hash(session: AsyncSession, secret_hash: str) -> ApiKey | None:
    stmt = select(ApiKey).where(ApiKey.secret_hash == secret_hash)
    return (await session.execute(stmt)).scalar_one_or_none()


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
