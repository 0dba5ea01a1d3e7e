from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.models import Msp


async def get(session: AsyncSession, msp_id: uuid.UUID) -> Msp | None:
    return await session.get(Msp, msp_id)


async def list_all(session: AsyncSession) -> list[Msp]:
    return list((await session.execute(select(Msp).order_by(Msp.created_at))).scalars())


async def get_by_name(session: AsyncSession, name: str) -> Msp | None:
    stmt = select(Msp).where(Msp.name == name).order_by(Msp.created_at).limit(1)
    return (await session.execute(stmt)).scalar_one_or_none()
