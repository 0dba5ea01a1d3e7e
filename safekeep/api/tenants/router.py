from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, status
from fastapi.responses import Response

from safekeep.api.auth import (
    AdminPrincipal,
    BackupPrincipal,
    MspAdminWriterPrincipal,
    ReadPrincipal,
)
from safekeep.api.conditional import (
    IfMatch,
    IfNoneMatch,
    conditional,
    conditional_body,
    conditional_responses,
    require_match,
)
from safekeep.api.deps import ClientIp, SessionDep, SettingsDep
from safekeep.api.idempotency import idempotent
from safekeep.api.jobs.schemas import STARTS_JOB, JobOut, job_out
from safekeep.api.problems import responses
from safekeep.api.schemas import Page, Paging, extended, rows_body
from safekeep.api.tenants.schemas import (
    ConsentLink,
    TenantCreate,
    TenantCreated,
    TenantOut,
    TenantUpdate,
)
from safekeep.tenants.job import service as job_service
from safekeep.tenants.models import ConsentState
from safekeep.tenants.subscription.service import check_rpo_minutes
from safekeep.tenants.tenant import service

router = APIRouter(prefix="/v1/tenants", tags=["Tenants"])

# The columns a listed tenant shows, by the field each answers (read as rows rather than
# entities: a tenant's row also holds its sealed secrets and wrapped data key, which a list
# has no use for). In the fields' order, so that a page is written from its rows.
_LISTED_AS = {
    "id": "id",
    "name": "name",
    "status": "status",
    "domain": "requested_domain",
    "entra_tenant_id": "entra_tenant_id",
    "consent_state": "consent_state",
    "consent_changed_at": "consent_changed_at",
    "consent_error": "consent_error",
    "custom_app_client_id": "app_client_id",
    "storage_prefix": "storage_prefix",
    "next_backup_at": "next_backup_at",
    "last_backup_at": "last_backup_at",
    "created_at": "created_at",
    "updated_at": "updated_at",
}
_LISTED = tuple(_LISTED_AS.values())
_FIELDS = tuple(_LISTED_AS)
if tuple(TenantOut.model_fields) != _FIELDS:
    raise RuntimeError("_LISTED_AS must name TenantOut's fields, in their order")


@router.get(
    "",
    response_model=Page[TenantOut],
    responses={**conditional_responses(), **responses(400, 401, 403, 422)},
)
async def list_tenants(
    principal: ReadPrincipal,
    session: SessionDep,
    paging: Paging,
    consent_state: ConsentState | None = Query(None),
    if_none_match: IfNoneMatch = None,
) -> Response:
    page = await paging.read(
        service.list_tenants,
        session,
        principal.scope,
        columns=_LISTED,
        consent_state=consent_state,
    )
    return conditional_body(rows_body(page, TenantOut, _FIELDS), if_none_match)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TenantCreated,
    responses=responses(400, 401, 402, 403, 409, 422),
)
@idempotent(201)
async def create_tenant(
    body: TenantCreate,
    principal: MspAdminWriterPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    ip: ClientIp,
) -> TenantCreated:
    """Create a client tenant. Its admin-consent URL comes back: send the client's admin there."""
    if body.policy is not None:
        check_rpo_minutes(settings, body.policy.rpo_minutes)
    tenant = await service.create(session, principal, settings, **body.model_dump(), ip=ip)
    consent_url = await service.start_consent(session, settings, tenant)
    return extended(TenantCreated, TenantOut.model_validate(tenant), consent_url=consent_url)


@router.get(
    "/{tenant_id}",
    response_model=TenantOut,
    responses={**conditional_responses(), **responses(401, 403, 404, 422)},
)
async def get_tenant(
    tenant_id: uuid.UUID,
    principal: ReadPrincipal,
    session: SessionDep,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """The tenant, with an `ETag`: poll with `If-None-Match` for `304 Not Modified`."""
    row = await service.read(session, principal.scope, tenant_id, _LISTED)
    return conditional(TenantOut.model_validate(dict(row._mapping)), if_none_match)


@router.patch(
    "/{tenant_id}",
    response_model=TenantOut,
    responses={**conditional_responses(), **responses(400, 401, 402, 403, 404, 412, 422)},
)
async def update_tenant(
    tenant_id: uuid.UUID,
    body: TenantUpdate,
    principal: AdminPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    ip: ClientIp,
    if_match: IfMatch = None,
) -> Response:
    """Change the tenant. With `If-Match` (the `ETag` of a GET), only while it is unchanged
    since: 412 otherwise, and nothing changes. The answer carries the new `ETag`."""

    async def unchanged() -> None:  # the tenant as GET shows it, under the write's lock
        row = await service.read(session, principal.scope, tenant_id, _LISTED)
        require_match(if_match, TenantOut.model_validate(dict(row._mapping)))

    tenant = await service.update(
        session,
        principal,
        settings,
        tenant_id,
        body.model_dump(exclude_unset=True),
        ip=ip,
        precondition=None if if_match is None else unchanged,
    )
    await session.flush()
    row = await service.read(session, principal.scope, tenant.id, _LISTED)
    return conditional(TenantOut.model_validate(dict(row._mapping)), None)


@router.delete(
    "/{tenant_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(401, 402, 403, 404, 422),
)
async def delete_tenant(
    tenant_id: uuid.UUID, principal: AdminPrincipal, session: SessionDep, ip: ClientIp
) -> None:
    """Stop protecting the tenant. Backed-up data is kept until purged."""
    await service.delete(session, principal, tenant_id, ip=ip)


@router.post(
    "/{tenant_id}/consent", response_model=ConsentLink, responses=responses(401, 402, 403, 404, 422)
)
async def request_consent(
    tenant_id: uuid.UUID, principal: AdminPrincipal, session: SessionDep, settings: SettingsDep
) -> ConsentLink:
    """A fresh sign-in URL for the client's admin (after a revocation or an app change, or
    when the last one expired: each is good for one answer within an hour)."""
    tenant = await service.get(session, principal.scope, tenant_id)
    return ConsentLink(consent_url=await service.start_consent(session, settings, tenant))


@router.post(
    "/{tenant_id}/consent/release",
    response_model=TenantOut,
    responses=responses(401, 402, 403, 404, 409, 422),
)
async def release_consent(
    tenant_id: uuid.UUID, principal: AdminPrincipal, session: SessionDep, ip: ClientIp
) -> TenantOut:
    """Let go of the client's Microsoft 365 directory, so that another tenant (of this or
    another MSP) can connect it: how a client moves between MSPs. Backups stop; the data
    already backed up stays with this tenant. Audited. 409 when no directory is connected.

    A directory is connected to at most one tenant in the deployment: connecting one that
    another tenant holds answers 409 until that tenant releases it (or is deleted)."""
    tenant = await service.release_consent(session, principal, tenant_id, ip=ip)
    return TenantOut.model_validate(tenant)


@router.post("/{tenant_id}/discover", **STARTS_JOB)
@idempotent(202)
async def discover(
    tenant_id: uuid.UUID, principal: BackupPrincipal, session: SessionDep, ip: ClientIp
) -> JobOut:
    """Start a discovery job: users, licences and sites become accounts."""
    job = await job_service.start_discovery(session, principal, tenant_id, ip=ip)
    return await job_out(session, job)
