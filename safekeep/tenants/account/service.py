"""Protected accounts (seats): what discovery finds, what the MSP protects or releases.

Backups never delete data because a licence vanished: such an account becomes ``cancelled``,
keeps its data and counts as a retained seat until retention or an audited purge removes it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.errors import Conflict, or_404
from safekeep.tenants.account import repository
from safekeep.tenants.audit import service as audit
from safekeep.tenants.job import repository as job_repository
from safekeep.tenants.models import (
    Account,
    AccountKind,
    AccountState,
    Job,
    JobStatus,
    Tenant,
    utcnow,
)
from safekeep.tenants.pagination import Page
from safekeep.tenants.scope import Principal, TenantScope
from safekeep.tenants.tenant import repository as tenant_repository
from safekeep.tenants.webhook import service as webhooks


@dataclass(frozen=True)
class FoundAccount:
    """One user or site as discovery saw it in Graph."""

    kind: AccountKind
    graph_id: str
    display_name: str
    principal_name: str | None
    mail: str | None
    licensed: bool
    account_enabled: bool = True
    sku_ids: Sequence[str] = ()
    services_found: dict[str, bool] = field(default_factory=dict)


@dataclass
class DiscoveryResult:
    added: int = 0
    updated: int = 0
    cancelled: int = 0
    reactivated: int = 0


list_accounts = tenant_repository.under_tenant(repository.list_page)


async def list_msp_accounts(
    session: AsyncSession, scope: TenantScope, **options: Any
) -> Page[Row[Any]]:
    """``list_accounts`` across every live tenant the scope sees (an empty page, never 404)."""
    return await repository.list_page(session, scope, None, **options)


async def get(
    session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> Account:
    return or_404(await repository.get(session, scope, tenant_id, account_id), "No such account")


async def get_for_update(
    session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> Account:
    """``get``, with the account's row locked until commit (see ``set_protected``)."""
    return or_404(
        await repository.get_for_update(session, scope, tenant_id, account_id), "No such account"
    )


async def _cancel(session: AsyncSession, tenant: Tenant, account: Account, reason: str) -> None:
    account.state = AccountState.cancelled
    account.cancelled_at = utcnow()
    account.cancel_reason = reason
    await session.flush()
    await webhooks.emit(
        session,
        msp_id=tenant.msp_id,
        event_type="account.cancelled",
        data={
            "tenant_id": str(tenant.id),
            "account_id": str(account.id),
            "reason": reason,
            "display_name": account.display_name,
        },
    )


async def set_protected(
    session: AsyncSession,
    principal: Principal,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    protected: bool,
    *,
    ip: str | None = None,
) -> Account:
    """Protect or release a seat. Protecting one withdraws the purges of it still queued or
    running: each is cancelled (``error_code`` ``account_protected``) and nothing of the
    account is deleted. The account row is locked while this decides, as the purge request
    and the purge job lock it, so a purge either ran before (409: the data is gone) or finds
    the seat protected and deletes nothing."""
    tenant = or_404(
        await tenant_repository.get(session, principal.scope, tenant_id), "No such tenant"
    )
    account = await get_for_update(session, principal.scope, tenant_id, account_id)
    if account.state == AccountState.purged:
        raise Conflict("This account's data was purged; it cannot be protected again")
    unchanged = protected == account.protected and not (
        protected and account.state == AccountState.cancelled
    )
    if protected and not unchanged and not account.licensed and account.kind == AccountKind.user:
        raise Conflict("The user has no licence any more; it cannot be protected")
    withdrawn = await _withdraw_purges(session, principal, account, ip=ip) if protected else []
    if unchanged:
        return account
    if protected:
        account.protected = True
        account.state = AccountState.active
        account.cancelled_at = None
        account.cancel_reason = None
    else:
        account.protected = False
        if await repository.has_data(session, account.id):
            await _cancel(session, tenant, account, "seat_released")
    await session.flush()
    details = {"cancelled_purge_jobs": [str(j.id) for j in withdrawn]} if withdrawn else None
    await audit.record_change(
        session,
        principal,
        "account.protected" if protected else "account.released",
        account,
        details=details,
        ip=ip,
    )
    return account


# Why a purge withdrawn by protecting its seat ended (the job's ``error_code``/``detail``).
PURGE_WITHDRAWN = "account_protected"
PURGE_WITHDRAWN_DETAIL = "The seat was protected again before its purge ran; nothing was deleted"


async def _withdraw_purges(
    session: AsyncSession, principal: Principal, account: Account, *, ip: str | None
) -> list[Job]:
    """Cancel the account's unfinished purges, as ``POST /v1/jobs/{id}/cancel`` would: a
    queued one ends cancelled now; a running one (waiting for a backup of the tenant, or
    about to start) is asked to stop, and its worker, which re-reads the account under its
    lock before deleting anything, ends it cancelled."""
    jobs = await job_repository.unfinished_purges_of(session, account.tenant_id, account.id)
    now = utcnow()
    for job in jobs:
        job.cancel_requested_at = job.cancel_requested_at or now
        job.error_code = PURGE_WITHDRAWN
        job.error_detail = PURGE_WITHDRAWN_DETAIL
        if job.status == JobStatus.queued:
            job.status = JobStatus.cancelled
            job.finished_at = now
    if jobs:
        await session.flush()
    for job in jobs:
        await audit.record_change(
            session,
            principal,
            "job.cancel_requested",
            job,
            details={"reason": PURGE_WITHDRAWN, "account_id": str(account.id)},
            ip=ip,
        )
    return jobs


async def apply_discovery(
    session: AsyncSession,
    tenant: Tenant,
    scope: TenantScope,
    found: Sequence[FoundAccount],
    *,
    auto_protect: bool,
) -> DiscoveryResult:
    """Reconcile what Graph reported with our accounts."""
    result = DiscoveryResult()
    now = utcnow()
    existing = {
        (a.kind, a.graph_id): a for a in await repository.all_for_tenant(session, scope, tenant.id)
    }
    seen: set[tuple[str, str]] = set()
    for f in found:
        key = (f.kind, f.graph_id)
        seen.add(key)
        account = existing.get(key)
        if account is None:
            account = Account(
                tenant_id=tenant.id,
                msp_id=tenant.msp_id,
                kind=f.kind,
                graph_id=f.graph_id,
                display_name=f.display_name,
                principal_name=f.principal_name,
                mail=f.mail,
                licensed=f.licensed,
                account_enabled=f.account_enabled,
                sku_ids=list(f.sku_ids),
                services_found=dict(f.services_found),
                protected=auto_protect and f.licensed,
                state=AccountState.active,
                last_seen_at=now,
            )
            session.add(account)
            result.added += 1
            continue
        account.display_name = f.display_name
        account.principal_name = f.principal_name
        account.mail = f.mail
        account.account_enabled = f.account_enabled
        account.sku_ids = list(f.sku_ids)
        account.services_found = dict(f.services_found)
        account.last_seen_at = now
        was_licensed, account.licensed = account.licensed, f.licensed
        result.updated += 1
        if account.state == AccountState.active and was_licensed and not f.licensed:
            if account.protected or await repository.has_data(session, account.id):
                await _cancel(session, tenant, account, "licence_removed")
                result.cancelled += 1
        elif (
            account.state == AccountState.cancelled
            and account.cancel_reason in ("licence_removed", "not_found")
            and f.licensed
        ):
            account.state = AccountState.active
            account.cancelled_at = None
            account.cancel_reason = None
            result.reactivated += 1
    for key, account in existing.items():
        if key not in seen and account.state == AccountState.active:
            if account.protected or await repository.has_data(session, account.id):
                await _cancel(session, tenant, account, "not_found")
                result.cancelled += 1
            else:
                account.state = AccountState.cancelled
                account.cancel_reason = "not_found"
                account.cancelled_at = now
    await session.flush()
    return result
