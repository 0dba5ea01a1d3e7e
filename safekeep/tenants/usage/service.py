"""Seats and storage per tenant: what an MSP is billed for."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.scope import TenantScope
from safekeep.tenants.usage import repository


@dataclass(frozen=True)
class TenantUsage:
    tenant_id: uuid.UUID
    name: str
    protected_seats: int
    retained_seats: int
    stored_bytes: int


async def usage(session: AsyncSession, scope: TenantScope) -> list[TenantUsage]:
    return [
        TenantUsage(
            tenant_id=row.tenant_id,
            name=row.name,
            protected_seats=row.protected_seats,
            retained_seats=row.retained_seats,
            stored_bytes=row.stored_bytes,
        )
        for row in await repository.per_tenant(session, scope)
    ]
