"""Client tenants of an MSP: onboarding (consent), settings, policy, deletion."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.db import Database
from safekeep.errors import BadRequest, Conflict, Forbidden, NotFound, or_404
from safekeep.settings import Settings
from safekeep.storage.keys import generate_data_key, wrap_data_key
from safekeep.tenants.audit import service as audit
from safekeep.tenants.job import service as job_service
from safekeep.tenants.models import (
    ConsentState,
    JobKind,
    JobTrigger,
    Policy,
    Tenant,
    TenantStatus,
    utcnow,
)
from safekeep.tenants.scope import Principal, TenantScope, scope_for_tenant
from safekeep.tenants.secrets import seal, unseal_with_any
from safekeep.tenants.tenant import consent, repository
from safekeep.tenants.webhook import service as webhooks

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AppCredentials:
    """The Entra app a tenant's backups authenticate as."""

    client_id: str
    client_secret: str
    custom: bool


async def get(session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID) -> Tenant:
    return or_404(await repository.get(session, scope, tenant_id), "No such tenant")


async def _get_judged(
    session: AsyncSession,
    scope: TenantScope,
    tenant_id: uuid.UUID,
    precondition: Callable[[], Awaitable[None]] | None,
) -> Tenant:
    """The tenant for a write: locked when a precondition is to judge it (or its policy)."""
    if precondition is None:
        return await get(session, scope, tenant_id)
    return or_404(await repository.get_for_update(session, scope, tenant_id), "No such tenant")


async def read(
    session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID, columns: Sequence[str]
) -> Row[Any]:
    """The tenant as a row of ``columns`` (a GET's answer), 404 as ``get``."""
    return or_404(await repository.read(session, scope, tenant_id, columns), "No such tenant")


async def get_including_deleted(session: AsyncSession, tenant_id: uuid.UUID) -> Tenant:
    """System load of a tenant the caller already reached through a scoped row."""
    return or_404(await repository.get_system(session, tenant_id), "No such tenant")


list_tenants = repository.list_page


def _seal_app_secret(settings: Settings, tenant_id: uuid.UUID, secret: str) -> bytes:
    return seal(settings.master_key_bytes, secret, context=f"tenant:{tenant_id}:app-secret")


async def create(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    *,
    name: str,
    domain: str | None,
    app_client_id: str | None,
    app_client_secret: str | None,
    policy: dict[str, Any] | None,
    ip: str | None = None,
) -> Tenant:
    if principal.tenant_ids is not None:
        raise Forbidden("A key limited to some tenants cannot create tenants")
    if (app_client_id is None) != (app_client_secret is None):
        raise BadRequest("app_client_id and app_client_secret go together")
    tenant_id = uuid.uuid4()
    tenant = Tenant(
        id=tenant_id,
        msp_id=principal.msp_id,
        name=name,
        requested_domain=domain,
        consent_state=ConsentState.pending,
        app_client_id=app_client_id,
        app_client_secret_sealed=(
            _seal_app_secret(settings, tenant_id, app_client_secret) if app_client_secret else None
        ),
        wrapped_data_key=wrap_data_key(
            settings.master_key_bytes, generate_data_key(), tenant_id=str(tenant_id)
        ),
        storage_prefix=f"tenants/{tenant_id}/",
    )
    session.add(tenant)
    await session.flush()  # no ORM relationship orders these inserts: the tenant goes first
    session.add(Policy(tenant_id=tenant_id, **(policy or {})))
    await session.flush()
    await audit.record_change(
        session,
        principal,
        "tenant.created",
        tenant,
        details={"name": name, "custom_app": app_client_id is not None},
        ip=ip,
    )
    return tenant


async def start_consent(session: AsyncSession, settings: Settings, tenant: Tenant) -> str:
    """The authorize URL to send the client's admin to (a new single-use state each time),
    aimed at the directory already bound, else at the one the MSP named, else
    ``organizations``; with the tenant's own app when it has one."""
    return await consent.start(
        session,
        settings,
        tenant_id=tenant.id,
        client_id=app_credentials(settings, tenant).client_id,
        directory=tenant.entra_tenant_id or tenant.requested_domain,
    )


async def update(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    tenant_id: uuid.UUID,
    changes: dict[str, Any],
    *,
    ip: str | None = None,
    precondition: Callable[[], Awaitable[None]] | None = None,
) -> Tenant:
    """Change the tenant. ``precondition`` (the API's ``If-Match``, reading the tenant as a
    GET shows it) runs first, under the tenant's row lock, so that two conditional writers
    cannot both pass on the same state."""
    tenant = await _get_judged(session, principal.scope, tenant_id, precondition)
    if precondition is not None:
        await precondition()
    if "name" in changes and changes["name"] is not None:
        tenant.name = changes["name"]
    if "domain" in changes:
        tenant.requested_domain = changes["domain"]
    if "app_client_id" in changes or "app_client_secret" in changes:
        client_id, secret = changes.get("app_client_id"), changes.get("app_client_secret")
        if (client_id is None) != (secret is None):
            raise BadRequest("app_client_id and app_client_secret go together")
        tenant.app_client_id = client_id
        tenant.app_client_secret_sealed = (
            _seal_app_secret(settings, tenant.id, secret) if secret else None
        )
        # A different app needs its own consent.
        tenant.consent_state = ConsentState.pending
        tenant.consent_changed_at = utcnow()
    await session.flush()
    await audit.record_change(
        session,
        principal,
        "tenant.updated",
        tenant,
        details={
            "fields": sorted(k for k in changes if k != "app_client_secret")
            + (["app_client_secret"] if "app_client_secret" in changes else [])
        },
        ip=ip,
    )
    return tenant


async def delete(
    session: AsyncSession, principal: Principal, tenant_id: uuid.UUID, *, ip: str | None = None
) -> Tenant:
    """Stop protecting a tenant. Its backed-up data is kept (and billed as retained) until a
    purge: deleting a tenant from the API never deletes data by itself. Its accounts keep
    their rows as they were; usage counts those holding data as retained seats (and their
    bytes as stored), and each one's purge may be asked for, protected or not."""
    tenant = await get(session, principal.scope, tenant_id)
    tenant.status = TenantStatus.deleted
    tenant.deleted_at = utcnow()
    tenant.next_backup_at = None
    await session.flush()
    await audit.record_change(session, principal, "tenant.deleted", tenant, ip=ip)
    return tenant


@dataclass(frozen=True)
class ConsentOutcome:
    tenant: Tenant
    granted: bool
    error: str | None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def bounded_error(error: str | None, description: str | None) -> str:
    """Entra's error as plain, bounded text (it is stored and shown as JSON data only)."""
    text = f"{error or 'error'}: {description}" if description else (error or "consent refused")
    return _CONTROL.sub(" ", text)[:500]


async def _audit_consent(
    db: Database, tenant_id: uuid.UUID, action: str, details: dict[str, Any]
) -> None:
    async with db.session() as session:
        tenant = await repository.get_system(session, tenant_id)
        if tenant is None:
            return
        await audit.record_on_tenant(
            session, tenant, action, actor="consent-callback", details=details
        )


async def complete_consent(
    db: Database,
    settings: Settings,
    *,
    state: str,
    code: str | None,
    error: str | None,
    error_description: str | None,
) -> ConsentOutcome:
    """Entra's answer at the callback. The state is burnt first, in its own transaction, so
    any replay (grant or error) finds nothing; a code is redeemed and its ID token verified
    before anything is bound; the directory bound is the token's ``tid``."""
    if not code and not error:
        raise BadRequest("The answer carries neither a code nor an error")
    async with db.session() as session:
        burnt = await consent.burn(session, settings, state)
        issued = burnt is None and await consent.was_issued(session, state)
    if burnt is None:
        raise BadRequest(
            "This consent link was already used; request a new one"
            if issued
            else "The consent state is not valid"
        )
    if burnt.expired:
        raise BadRequest("The consent link has expired; request a new one")
    async with db.session() as session:
        tenant = await repository.get_system(session, burnt.tenant_id)
        if tenant is None or tenant.status == TenantStatus.deleted:
            raise NotFound("The tenant this consent was for no longer exists")
        credentials = app_credentials(settings, tenant)
    if credentials.client_id != burnt.client_id:
        raise BadRequest("The tenant's app changed since this link was made; request a new one")
    if error:
        return await _record_refusal(db, burnt.tenant_id, bounded_error(error, error_description))
    try:
        proof = await consent.prove(
            settings, burnt, credentials.client_secret, {"state": state, "code": code or ""}
        )
    except consent.ConsentRefused as exc:
        await _audit_consent(db, burnt.tenant_id, "tenant.consent_failed", {"reason": str(exc)})
        raise BadRequest(str(exc)) from exc
    return await _bind(db, burnt.tenant_id, proof)


async def _record_refusal(db: Database, tenant_id: uuid.UUID, text: str) -> ConsentOutcome:
    """The admin declined (or Entra refused). A tenant that was granted stays granted:
    only Microsoft refusing our tokens revokes (``mark_consent_revoked``)."""
    async with db.session() as session:
        tenant = await repository.get_system(session, tenant_id)
        assert tenant is not None
        changed = tenant.consent_state in (ConsentState.pending, ConsentState.denied)
        if changed:
            tenant.consent_state = ConsentState.denied
            tenant.consent_error = text
            tenant.consent_changed_at = utcnow()
            await session.flush()
        await audit.record_on_tenant(
            session,
            tenant,
            "tenant.consent_denied",
            actor="consent-callback",
            details={"error": text, "state_changed": changed},
        )
    return ConsentOutcome(tenant, granted=False, error=text)


async def _bind(db: Database, tenant_id: uuid.UUID, proof: consent.Proof) -> ConsentOutcome:
    directory = proof.entra_tenant_id
    conflict: str | None = None
    try:
        async with db.session() as session:
            tenant = await repository.get_system(session, tenant_id)
            assert tenant is not None
            if tenant.entra_tenant_id and tenant.entra_tenant_id != directory:
                conflict = "other_directory"
            elif await repository.directory_owner(session, directory, excluding=tenant.id):
                conflict = "owned"
            else:
                now = utcnow()
                tenant.entra_tenant_id = directory
                tenant.consent_state = ConsentState.granted
                tenant.consent_error = None
                tenant.consent_changed_at = now
                if tenant.next_backup_at is None:
                    tenant.next_backup_at = now + timedelta(minutes=5)
                await session.flush()
                await audit.record_on_tenant(
                    session,
                    tenant,
                    "tenant.consent_granted",
                    actor="consent-callback",
                    details={"entra_tenant_id": directory, "admin": proof.username},
                )
                await job_service.start_job(
                    session,
                    tenant,
                    kind=JobKind.discover,
                    trigger=JobTrigger.system,
                    requested_by="consent-callback",
                    params={},
                )
                return ConsentOutcome(tenant, granted=True, error=None)
    except IntegrityError:
        conflict = "owned"  # another tenant bound the directory at the same moment
    details = {"entra_tenant_id": directory, "admin": proof.username, "reason": conflict}
    await _audit_consent(db, tenant_id, "tenant.consent_conflict", details)
    # Deployment-wide: operators see every attempt on a directory, whoever owns it.
    log.warning("consent.directory_conflict", tenant_id=str(tenant_id), **details)
    if conflict == "other_directory":
        raise Conflict(
            "The admin who signed in belongs to a different Microsoft 365 directory than the "
            "one this tenant is connected to"
        )
    raise Conflict(
        "This Microsoft 365 directory is already connected to Safekeep; it can be connected "
        "here once it is released where it is connected now"
    )


async def release_consent(
    session: AsyncSession, principal: Principal, tenant_id: uuid.UUID, *, ip: str | None = None
) -> Tenant:
    """The owner lets go of the client's directory (to move the client to another MSP): the
    binding goes, backups stop, the data already backed up stays with this tenant."""
    tenant = await get(session, principal.scope, tenant_id)
    if tenant.entra_tenant_id is None:
        raise Conflict("The tenant is not connected to a Microsoft 365 directory")
    released = tenant.entra_tenant_id
    tenant.entra_tenant_id = None
    tenant.consent_state = ConsentState.pending
    tenant.consent_error = None
    tenant.consent_changed_at = utcnow()
    tenant.next_backup_at = None
    await session.flush()
    await audit.record_change(
        session,
        principal,
        "tenant.consent_released",
        tenant,
        details={"entra_tenant_id": released},
        ip=ip,
    )
    log.info(
        "consent.directory_released",
        msp_id=str(tenant.msp_id),
        tenant_id=str(tenant.id),
        entra_tenant_id=released,
    )
    return tenant


async def mark_consent_revoked(session: AsyncSession, tenant: Tenant, reason: str) -> bool:
    """Entra refused our app for this tenant. True if this is news (so it is announced once)."""
    if tenant.consent_state == ConsentState.revoked:
        return False
    tenant.consent_state = ConsentState.revoked
    tenant.consent_error = reason[:1000]
    tenant.consent_changed_at = utcnow()
    await session.flush()
    await audit.record_on_tenant(
        session, tenant, "tenant.consent_revoked", actor="system", details={"reason": reason}
    )
    await webhooks.emit(
        session,
        msp_id=tenant.msp_id,
        event_type="tenant.consent_revoked",
        data={"tenant_id": str(tenant.id), "reason": reason},
    )
    return True


def app_credentials(settings: Settings, tenant: Tenant) -> AppCredentials:
    if tenant.app_client_id and tenant.app_client_secret_sealed:
        secret = unseal_with_any(
            settings.master_keys,
            tenant.app_client_secret_sealed,
            context=f"tenant:{tenant.id}:app-secret",
        )
        return AppCredentials(tenant.app_client_id, secret, custom=True)
    return AppCredentials(
        settings.app_client_id, settings.app_client_secret.get_secret_value(), custom=False
    )


async def get_policy(session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID) -> Policy:
    tenant = await get(session, scope, tenant_id)
    return await repository.get_policy(session, tenant)


async def put_policy(
    session: AsyncSession,
    principal: Principal,
    tenant_id: uuid.UUID,
    values: dict[str, Any],
    *,
    ip: str | None = None,
    precondition: Callable[[], Awaitable[None]] | None = None,
) -> Policy:
    """Replace the tenant's policy; ``precondition`` (``If-Match``, reading the policy as a
    GET shows it) runs first, under the tenant's row lock."""
    tenant = await _get_judged(session, principal.scope, tenant_id, precondition)
    if precondition is not None:
        await precondition()
    policy = await repository.get_policy(session, tenant)
    before = policy.backups_per_day
    for field, value in values.items():
        setattr(policy, field, value)
    if policy.backups_per_day != before and tenant.next_backup_at is not None:
        # A denser schedule should not wait out the old, longer interval.
        soonest = utcnow() + timedelta(hours=24 / policy.backups_per_day)
        tenant.next_backup_at = min(tenant.next_backup_at, soonest)
    await session.flush()
    await audit.record_change(
        session,
        principal,
        "policy.updated",
        policy,
        details=dict(values),
        ip=ip,
    )
    return policy


def system_scope(tenant: Tenant) -> TenantScope:
    return scope_for_tenant(tenant.msp_id, tenant.id)
