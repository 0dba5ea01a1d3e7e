"""Factory functions: real rows made through the real services, so tests start from states
the product can actually reach. A second MSP and tenant are always one call away."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from graphsim import Simulator
from safekeep.runtime import Runtime
from safekeep.tenants import outbox
from safekeep.tenants.api_key import service as api_key_service
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import (
    Account,
    AccountKind,
    AccountState,
    ConsentState,
    Detection,
    DetectionKind,
    GraphSubscription,
    Job,
    JobKind,
    JobStatus,
    Snapshot,
    SnapshotStatus,
    SubscriptionStatus,
    Tenant,
    WebhookDelivery,
    WebhookEndpoint,
    utcnow,
)
from safekeep.tenants.msp import service as msp_service
from safekeep.tenants.outbox import Message
from safekeep.tenants.scope import Scope, system_principal
from safekeep.tenants.subscription.service import hash_client_state
from safekeep.tenants.tenant import service as tenant_service
from safekeep.tenants.webhook import service as webhook_service


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


async def connect_tenant(
    runtime: Runtime, tenant: Tenant, sim: Simulator, sim_tenant: str | None = None
) -> Tenant:
    """Connect a tenant as onboarding does: graphsim signs the simulated directory's admin in
    at the tenant's consent URL, and the consent service redeems the code and binds the
    directory of the verified ID token (the discovery job it starts is handed to the runtime's
    queue). ``runtime.settings`` must point at ``sim`` (``sim_settings``)."""
    from graphsim.entra import admin_upn
    from safekeep.serve import connect_simulated

    with outbox.collect() as box:
        outcome = await connect_simulated(
            runtime.db, runtime.settings, tenant.id, admin_upn(sim.tenant(sim_tenant))
        )
    assert outcome.granted, outcome.error
    runtime.send(box.messages)
    return outcome.tenant


async def create_tenant(
    runtime: Runtime,
    msp: MspHandle,
    *,
    name: str = "Contoso",
    consented: bool = True,
    entra_tenant_id: str | None = None,
    policy: dict[str, Any] | None = None,
    app_client_id: str | None = None,
    app_client_secret: str | None = None,
) -> Tenant:
    """A tenant of ``msp``; ``consented`` stands for a directory bound earlier (a random one
    unless given) for tests that never talk to Entra. Tests that do connect through
    ``connect_tenant``. ``app_client_id``/``app_client_secret`` give it an Entra app of its
    own (the secret sealed under the master key)."""
    with outbox.collect():
        async with runtime.db.session() as session:
            tenant = await tenant_service.create(
                session,
                system_principal(msp.id),
                runtime.settings,
                name=name,
                domain=None,
                app_client_id=app_client_id,
                app_client_secret=app_client_secret,
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
    services_found: dict[str, bool] | None = None,
) -> Account:
    async with runtime.db.session() as session:
        account = Account(
            tenant_id=tenant.id,
            msp_id=tenant.msp_id,
            kind=kind,
            graph_id=graph_id or str(uuid.uuid4()),
            display_name=name,
            principal_name=f"{name.split()[0].lower()}@contoso.example",
            mail=f"{name.split()[0].lower()}@contoso.example",
            protected=protected,
            state=state,
            licensed=True,
            services_found=services_found or {},
        )
        session.add(account)
    return account


async def add_job(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    kind: JobKind = JobKind.backup,
    status: JobStatus = JobStatus.succeeded,
    **fields: Any,
) -> Job:
    """A job row in the state a test needs (running, queued, long untouched...), as the
    scheduler and the workers would find it; ``fields`` sets the rest (trigger, times)."""
    tenant = await session.get(Tenant, tenant_id)
    assert tenant is not None, tenant_id
    job = Job(
        tenant_id=tenant_id,
        msp_id=tenant.msp_id,
        kind=kind,
        status=status,
        params=fields.pop("params", {}),
        **fields,
    )
    session.add(job)
    await session.flush()
    return job


async def add_finished_job(
    session: AsyncSession, tenant_id: uuid.UUID, kind: JobKind = JobKind.backup
) -> Job:
    """A job that already succeeded, for rows (snapshots, exports) that must name one."""
    return await add_job(session, tenant_id, kind=kind)


async def add_subscription(
    runtime: Runtime,
    tenant: Tenant,
    account: Account,
    service: str = "mail",
    *,
    client_state: str = "state",
    dirty_for: timedelta | None = None,
) -> GraphSubscription:
    """An active Graph change subscription of one account's mailbox, as the sync leaves it
    (two days to expiry, renewal due in one); ``dirty_for`` marks it notified that long ago."""
    async with runtime.db.session() as session:
        row = GraphSubscription(
            tenant_id=tenant.id,
            account_id=account.id,
            service=service,
            resource=f"users/{account.graph_id}/messages",
            subscription_id=str(uuid.uuid4()),
            client_state_hash=hash_client_state(client_state),
            status=SubscriptionStatus.active,
            expires_at=utcnow() + timedelta(days=2),
            next_action_at=utcnow() + timedelta(days=1),
            dirty_since=None if dirty_for is None else utcnow() - dirty_for,
        )
        session.add(row)
    return row


async def add_backup(
    session: AsyncSession, account: Account, *, service: str = "onedrive", **fields: Any
) -> tuple[Job, Snapshot]:
    """What one successful backup leaves: its job and a complete snapshot (seq 1, now)."""
    job = await add_finished_job(session, account.tenant_id)
    now = utcnow()
    snapshot = Snapshot(
        tenant_id=account.tenant_id,
        account_id=account.id,
        service=service,
        seq=1,
        job_id=job.id,
        status=SnapshotStatus.complete,
        started_at=now,
        completed_at=now,
        **fields,
    )
    session.add(snapshot)
    await session.execute(
        update(Account).where(Account.id == account.id).values(last_backup_at=now)
    )
    await session.flush()
    return job, snapshot


async def end_snapshot(
    runtime: Runtime,
    account: Account,
    *,
    service: str = "mail",
    seq: int = 1,
    at: datetime | None = None,
    bytes_added: int = 1000,
    skipped: int = 0,
) -> None:
    """A backup of the account's ``service`` started and finished at ``at`` (now), storing
    ``bytes_added``, ended as the engine ends one (``catalog.finish_snapshot``)."""
    at = at or utcnow()
    async with runtime.db.session() as session:
        snapshot = Snapshot(
            tenant_id=account.tenant_id,
            account_id=account.id,
            service=service,
            seq=seq,
            status=SnapshotStatus.running,
            started_at=at,
        )
        session.add(snapshot)
        await session.flush()
        assert await catalog.finish_snapshot(
            session,
            snapshot.id,
            account_id=account.id,
            service=service,
            status=SnapshotStatus.partial if skipped else SnapshotStatus.complete,
            completed_at=at,
            added=1,
            changed=0,
            removed=0,
            bytes_added=bytes_added,
            skipped=skipped,
        )


def ransomware_detection(
    account: Account,
    evidence: dict[str, Any],
    *,
    clean: Snapshot | None,
    snapshot_id: uuid.UUID | None = None,
) -> Detection:
    """An open ransomware detection in the account's OneDrive, found now, whose last clean
    point is ``clean`` (None: nothing clean to go back to); the caller adds it."""
    now = utcnow()
    return Detection(
        tenant_id=account.tenant_id,
        account_id=account.id,
        service="onedrive",
        kind=DetectionKind.ransomware,
        first_suspicious_at=now,
        snapshot_id=snapshot_id,
        last_clean_snapshot_id=clean.id if clean else None,
        last_clean_at=now if clean else None,
        evidence=evidence,
    )


async def create_webhook(
    runtime: Runtime, msp_id: uuid.UUID, url: str, events: Sequence[str]
) -> tuple[WebhookEndpoint, str]:
    """An MSP's webhook endpoint and its signing secret, made as the API makes them (the URL
    is checked against ``runtime.settings``)."""
    with outbox.collect():
        async with runtime.db.session() as session:
            return await webhook_service.create_endpoint(
                session,
                system_principal(msp_id),
                runtime.settings,
                url=url,
                events=events,
                description=None,
            )


async def emit_event(
    runtime: Runtime, msp_id: uuid.UUID, event_type: str, data: dict[str, Any] | None = None
) -> tuple[list[WebhookDelivery], list[Message]]:
    """An event as the engine emits it: a delivery row per subscribed endpoint, and the
    messages the committed unit of work hands the queue."""
    with outbox.collect() as box:
        async with runtime.db.session() as session:
            deliveries = await webhook_service.emit(
                session, msp_id=msp_id, event_type=event_type, data=data or {}
            )
    return deliveries, box.messages
