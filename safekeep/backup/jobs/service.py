"""Asking for a restore or an export: validate the scope against the caller's tenant, create
the job (and the export record), audit it. The work itself runs in the job."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep import registry
from safekeep.errors import Conflict, Gone, UnprocessableEntity, or_404
from safekeep.tenants.account import repository as account_repository
from safekeep.tenants.audit import service as audit
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.job import service as job_service
from safekeep.tenants.models import (
    AccountState,
    ConsentState,
    Export,
    ExportStatus,
    Job,
    JobKind,
    JobTrigger,
    utcnow,
)
from safekeep.tenants.scope import Principal, TenantScope
from safekeep.tenants.tenant import service as tenant_service

MAX_ITEMS = 1000


def _invalid(field: str, msg: str) -> UnprocessableEntity:
    return UnprocessableEntity(msg, errors=[{"loc": ["body", *field.split(".")], "msg": msg}])


async def _validate_scope(
    session: AsyncSession, scope: TenantScope, tenant_id: uuid.UUID, params: dict[str, Any]
) -> None:
    s = params["scope"]
    kind = s["type"]
    account_id = s.get("account_id")
    service = s.get("service")
    if kind in ("items", "folders", "service", "account") and not account_id:
        raise _invalid("scope.account_id", f"a {kind} scope needs account_id")
    if kind in ("items", "folders", "service") and not service:
        raise _invalid("scope.service", f"a {kind} scope needs service")
    if kind in ("items", "folders") and not s.get("item_ids"):
        raise _invalid("scope.item_ids", f"a {kind} scope needs item_ids")
    if kind in ("service", "account", "tenant") and s.get("item_ids"):
        raise _invalid("scope.item_ids", f"a {kind} scope takes no item_ids")
    if account_id:
        account = await account_repository.get(session, scope, tenant_id, uuid.UUID(account_id))
        if account is None:
            raise _invalid("scope.account_id", "no such account in this tenant")
        if service and service not in registry.of_kind(account.kind):
            raise _invalid("scope.service", f"a {account.kind} account has no {service}")
        if account.state == AccountState.purged:
            raise _invalid("scope.account_id", "this account's data was purged")
    if s.get("item_ids"):
        ids = [uuid.UUID(i) for i in s["item_ids"]]
        items = await catalog.items_by_ids(session, scope, ids)
        found = {i.id for i in items if str(i.account_id) == account_id and i.service == service}
        missing = [str(i) for i in ids if i not in found]
        if missing:
            raise _invalid(
                "scope.item_ids", f"not items of that account and service: {missing[:5]}"
            )
    if params.get("snapshot_id"):
        snapshot = await catalog.get_snapshot(session, scope, uuid.UUID(params["snapshot_id"]))
        if snapshot is None or snapshot.tenant_id != tenant_id:
            raise _invalid("snapshot_id", "no such snapshot in this tenant")
        if snapshot.completed_at is None:
            raise _invalid("snapshot_id", "that snapshot has not finished")


def _params(body: dict[str, Any]) -> dict[str, Any]:
    at = body.get("at")
    if isinstance(at, datetime):
        at = (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()
    scope = dict(body["scope"])
    for key in ("account_id",):
        if scope.get(key) is not None:
            scope[key] = str(scope[key])
    scope["item_ids"] = [str(i) for i in scope.get("item_ids") or []]
    return {
        "scope": scope,
        "at": at,
        "snapshot_id": str(body["snapshot_id"]) if body.get("snapshot_id") else None,
    }


async def request_restore(
    session: AsyncSession,
    principal: Principal,
    tenant_id: uuid.UUID,
    body: dict[str, Any],
    *,
    ip: str | None = None,
) -> Job:
    tenant = await tenant_service.get(session, principal.scope, tenant_id)
    if tenant.consent_state != ConsentState.granted:
        raise Conflict(f"Admin consent is {tenant.consent_state}; restores need it granted")
    params = _params(body)
    await _validate_scope(session, principal.scope, tenant.id, params)
    target = body.get("target") or {}
    if target.get("channels", "import") != "import" and params["scope"].get("service") != "teams":
        raise _invalid("target.channels", "a transcript restore needs scope.service teams")
    target_id = target.get("account_id")
    if target_id:
        account = await account_repository.get(
            session, principal.scope, tenant.id, uuid.UUID(str(target_id))
        )
        if account is None or account.state != AccountState.active:
            raise _invalid(
                "target.account_id", "the target must be an active account of this tenant"
            )
        source_id = params["scope"].get("account_id")
        if params["scope"]["type"] == "tenant":
            raise _invalid(
                "target.account_id", "a whole-tenant restore goes to the original accounts"
            )
        if source_id:
            source = await account_repository.get(
                session, principal.scope, tenant.id, uuid.UUID(source_id)
            )
            if source is not None and source.kind != account.kind:
                raise _invalid("target.account_id", "the target must be the same kind of account")
    params["target"] = {
        "account_id": str(target_id) if target_id else None,
        "folder": target.get("folder", "original"),
        "channels": target.get("channels", "import"),
    }
    params["conflict"] = body.get("conflict", "skip")
    return await job_service.start_requested_job(
        session, principal, tenant, kind=JobKind.restore, params=params, ip=ip
    )


async def request_export(
    session: AsyncSession,
    principal: Principal,
    tenant_id: uuid.UUID,
    body: dict[str, Any],
    *,
    ip: str | None = None,
) -> Export:
    tenant = await tenant_service.get(session, principal.scope, tenant_id)
    params = _params(body)
    await _validate_scope(session, principal.scope, tenant.id, params)
    export_id = uuid.uuid4()
    params["options"] = dict(body.get("options") or {})
    params["export_id"] = str(export_id)
    job = await job_service.start_job(
        session,
        tenant,
        kind=JobKind.export,
        trigger=JobTrigger.manual,
        requested_by=principal.actor,
        params=params,
    )
    export = Export(id=export_id, tenant_id=tenant.id, job_id=job.id, options=params["options"])
    session.add(export)
    await session.flush()
    await audit.record_change(session, principal, "export.requested", export, details=params, ip=ip)
    return export


async def get_export(session: AsyncSession, scope: TenantScope, export_id: uuid.UUID) -> Export:
    return or_404(await catalog.get_export(session, scope, export_id), "No such export")


async def export_for_download(
    session: AsyncSession,
    principal: Principal,
    export_id: uuid.UUID,
    *,
    ip: str | None,
    how: str | None,
) -> Export:
    """The export, when its ZIP can be downloaded now (else 410 or 409), the download
    recorded in the audit log as going ``how``; None for a request that hands out nothing
    (a HEAD: the headers of a download are not one)."""
    export = await get_export(session, principal.scope, export_id)
    if export.status == ExportStatus.expired or (
        export.expires_at is not None and export.expires_at <= utcnow()
    ):
        raise Gone("This export has expired; ask for a new one")
    if export.status != ExportStatus.ready or not export.blob_key:
        raise Conflict(f"The export is {export.status}, not ready yet")
    if how is not None:
        await audit.record_change(
            session, principal, "export.downloaded", export, details={"via": how}, ip=ip
        )
    return export
