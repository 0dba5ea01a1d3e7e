"""Seats and storage per tenant: what an MSP is billed for."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.account import repository as account_repository
from safekeep.tenants.scope import TenantScope
from safekeep.tenants.snapshot import repository as snapshot_repository
from safekeep.tenants.tenant import repository as tenant_repository


@dataclass(frozen=True)
class TenantUsage:
    tenant_id: uuid.UUID
    name: str
    protected_seats: int
    retained_seats: int
    stored_bytes: int


async def usage(session: AsyncSession, scope: TenantScope) -> list[TenantUsage]:
    tenants = await tenant_repository.list_all(session, scope)
    seats = await account_repository.seat_counts(session, scope)
    stored = await snapshot_repository.stored_bytes_by_tenant(session, scope)
    return [
        TenantUsage(
            tenant_id=t.id,
            name=t.name,
            protected_seats=seats.get(t.id, {}).get("protected", 0),
            retained_seats=seats.get(t.id, {}).get("retained", 0),
            stored_bytes=stored.get(t.id, 0),
        )
        for t in tenants
    ]
