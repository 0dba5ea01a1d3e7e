"""MSPs are created by the operator (``safekeep msp create``), not over the API."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.api_key import service as api_key_service
from safekeep.tenants.audit import service as audit
from safekeep.tenants.models import Msp
from safekeep.tenants.scope import Scope


async def create_with_admin_key(
    session: AsyncSession, *, name: str, billing_email: str | None = None
) -> tuple[Msp, str]:
    """A new MSP and its first admin key; the key's secret is returned once, here."""
    msp = Msp(name=name, billing_email=billing_email)
    session.add(msp)
    await session.flush()
    _key, secret = await api_key_service.issue(
        session, msp_id=msp.id, name="initial admin key", scopes=[Scope.admin], tenant_ids=None
    )
    await audit.record_on_msp(session, msp, "msp.created", actor="cli", details={"name": name})
    return msp, secret
