from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from safekeep.api.auth import AdminPrincipal, BackupPrincipal, ReadPrincipal, RestorePrincipal
from safekeep.api.deps import ClientIp, SessionDep, SettingsDep
from safekeep.api.detections.schemas import DetectionOut, ThresholdsIn, ThresholdsOut
from safekeep.api.jobs.schemas import STARTS_JOB, job_out
from safekeep.api.problems import responses
from safekeep.api.schemas import Page, Paging, page_of
from safekeep.backup import recovery
from safekeep.tenants.detection import service
from safekeep.tenants.models import DetectionStatus, DetectionThreshold

router = APIRouter(prefix="/v1/tenants/{tenant_id}/detections", tags=["Detections"])
thresholds_router = APIRouter(
    prefix="/v1/tenants/{tenant_id}/detection-thresholds", tags=["Detections"]
)

StatusFilter = Annotated[
    Literal["open", "acknowledged", "released"] | None,
    Query(alias="status", description="Only detections in this state"),
]


@router.get("", response_model=Page[DetectionOut], responses=responses(400, 401, 403, 404, 422))
async def list_detections(
    tenant_id: uuid.UUID,
    principal: ReadPrincipal,
    session: SessionDep,
    paging: Paging,
    status_filter: StatusFilter = None,
) -> Page[DetectionOut]:
    """Suspected ransomware and mass deletions, newest first, with their evidence."""
    page = await paging.read(
        service.list_detections,
        session,
        principal.scope,
        tenant_id,
        status=DetectionStatus(status_filter) if status_filter else None,
    )
    return page_of(page, DetectionOut.model_validate)


@router.get("/{detection_id}", response_model=DetectionOut, responses=responses(401, 403, 404, 422))
async def get_detection(
    tenant_id: uuid.UUID, detection_id: uuid.UUID, principal: ReadPrincipal, session: SessionDep
) -> DetectionOut:
    found = await service.get(session, principal.scope, tenant_id, detection_id)
    return DetectionOut.model_validate(found)


@router.post(
    "/{detection_id}/acknowledge",
    response_model=DetectionOut,
    responses=responses(401, 402, 403, 404, 409, 422),
)
async def acknowledge_detection(
    tenant_id: uuid.UUID,
    detection_id: uuid.UUID,
    principal: BackupPrincipal,
    session: SessionDep,
    ip: ClientIp,
) -> DetectionOut:
    """Mark it seen. The hold on the account's versions stays until released."""
    found = await service.acknowledge(session, principal, tenant_id, detection_id, ip=ip)
    return DetectionOut.model_validate(found)


@router.post(
    "/{detection_id}/release",
    response_model=DetectionOut,
    responses=responses(401, 402, 403, 404, 422),
)
async def release_detection(
    tenant_id: uuid.UUID,
    detection_id: uuid.UUID,
    principal: AdminPrincipal,
    session: SessionDep,
    ip: ClientIp,
) -> DetectionOut:
    """Release the hold: retention applies to the account's versions again. Audited."""
    found = await service.release(session, principal, tenant_id, detection_id, ip=ip)
    return DetectionOut.model_validate(found)


@router.post("/{detection_id}/restore", **STARTS_JOB)
async def restore_clean(
    tenant_id: uuid.UUID,
    detection_id: uuid.UUID,
    principal: RestorePrincipal,
    session: SessionDep,
    ip: ClientIp,
) -> object:
    """One call: restore the account's service in place as of the last clean snapshot.
    A restore job; its report names the files the attack left behind (not touched)."""
    job = await recovery.request_clean_restore(session, principal, tenant_id, detection_id, ip=ip)
    return await job_out(session, job)


@thresholds_router.get("", response_model=ThresholdsOut, responses=responses(401, 403, 404, 422))
async def get_thresholds(
    tenant_id: uuid.UUID, principal: ReadPrincipal, session: SessionDep, settings: SettingsDep
) -> ThresholdsOut:
    """The thresholds detection applies to this tenant's accounts."""
    own = await service.get_threshold(session, principal.scope, tenant_id)
    if own is None:
        return ThresholdsOut(
            min_files=settings.detection_min_files,
            min_deletions=settings.detection_min_deletions,
            sigmas=settings.detection_sigmas,
            source="deployment",
        )
    return _tenant_thresholds(own)


@thresholds_router.put(
    "", response_model=ThresholdsOut, responses=responses(401, 402, 403, 404, 422)
)
async def put_thresholds(
    tenant_id: uuid.UUID,
    body: ThresholdsIn,
    principal: AdminPrincipal,
    session: SessionDep,
    ip: ClientIp,
) -> ThresholdsOut:
    """Set this tenant's own thresholds (audited)."""
    row = await service.put_threshold(session, principal, tenant_id, **body.model_dump(), ip=ip)
    return _tenant_thresholds(row)


def _tenant_thresholds(row: DetectionThreshold) -> ThresholdsOut:
    return ThresholdsOut(
        min_files=row.min_files, min_deletions=row.min_deletions, sigmas=row.sigmas, source="tenant"
    )
