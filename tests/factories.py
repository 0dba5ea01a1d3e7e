"""Factory functions: real rows made through the real services, so tests start from states
the product can actually reach. A second MSP and tenant are always one call away."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from safekeep.runtime import Runtime
from safekeep.tenants import outbox
from safekeep.tenants.api_key import service as api_key_service
from safekeep.tenants.models import (
    Account,
    AccountKind,
    AccountState,
    ConsentState,
    Tenant,
    utcnow,
)
from safekeep.tenants.msp import service as msp_service
from safekeep.tenants.scope import Scope, system_principal
from safekeep.tenants.tenant import service as tenant_service


@dataclass(frozen=True)
class MspHandle:
    id: uuid.UUID
    key: str  # an unlimited admin key

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def create_msp(runtime: Runtime, name: str = "MSP") -> MspHandle:
    async with runtime.db.session() as session:
        msp, secret = await msp_service.create_with_admin_key(session, name=name)
    return MspHandle(msp.id, secret)


async def create_key(
    runtime: Runtime,
    msp: MspHandle,
    scopes: Sequence[str],
    tenant_ids: Sequence[uuid.UUID] | None = None,
) -> str:
    async with runtime.db.session() as session:
        _key, secret = await api_key_service.issue(
            session,
            msp_id=msp.id,
            name="test key",
            scopes=[Scope(s) for s in scopes],
            tenant_ids=tenant_ids,
        )
    return secret


async def create_tenant(
    runtime: Runtime,
    msp: MspHandle,
    *,
    name: str = "Contoso",
    consented: bool = True,
    entra_tenant_id: str | None = None,
    policy: dict[str, Any] | None = None,
) -> Tenant:
    with outbox.collect():
        async with runtime.db.session() as session:
            tenant = await tenant_service.create(
                session,
                system_principal(msp.id),
                runtime.settings,
                name=name,
                domain=None,
                app_client_id=None,
                app_client_secret=None,
                policy=policy,
            )
            if consented:
                tenant.consent_state = ConsentState.granted
                tenant.entra_tenant_id = entra_tenant_id or str(uuid.uuid4())
                tenant.consent_changed_at = utcnow()
    return tenant


async def create_account(
    runtime: Runtime,
    tenant: Tenant,
    *,
    name: str = "Adele Vance",
    kind: AccountKind = AccountKind.user,
    protected: bool = True,
    state: AccountState = AccountState.active,
    graph_id: str | None = None,
) -> Account:
    async with runtime.db.session() as session:
        account = Account(
            tenant_id=tenant.id,
            kind=kind,
            graph_id=graph_id or str(uuid.uuid4()),
            display_name=name,
            principal_name=f"{name.split()[0].lower()}@contoso.example",
            mail=f"{name.split()[0].lower()}@contoso.example",
            protected=protected,
            state=state,
            licensed=True,
        )
        session.add(account)
    return account
