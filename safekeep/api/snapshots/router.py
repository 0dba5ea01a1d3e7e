from __future__ import annotations

import uuid

from fastapi import APIRouter, Query
from fastapi.responses import Response

from safekeep.api.auth import ReadPrincipal
from safekeep.api.deps import SessionDep
from safekeep.api.policy.schemas import Service
from safekeep.api.problems import responses
from safekeep.api.schemas import Page, Paging, Timestamp, rows_response
from safekeep.api.snapshots.schemas import SnapshotOut
from safekeep.tenants.models import SnapshotStatus
from safekeep.tenants.snapshot import service

router = APIRouter(prefix="/v1/tenants/{tenant_id}/snapshots", tags=["Snapshots"])

# The columns a listed snapshot shows (its answer's fields), read as rows rather than entities.
_LISTED = tuple(SnapshotOut.model_fields)


@router.get("", response_model=Page[SnapshotOut], responses=responses(400, 401, 403, 404, 422))
async def list_snapshots(
    tenant_id: uuid.UUID,
    principal: ReadPrincipal,
    session: SessionDep,
    paging: Paging,
    account_id: uuid.UUID | None = Query(None),
    service_name: Service | None = Query(None, alias="service"),
    status: SnapshotStatus | None = Query(
        None,
        description="Only snapshots in this state (e.g. `interrupted`: runs that ended "
        "unfinished, which the next backup resumes)",
    ),
    since: Timestamp | None = Query(None, description="Started at or after"),
    until: Timestamp | None = Query(None, description="Started at or before"),
) -> Response:
    page = await paging.read(
        service.list_snapshots,
        session,
        principal.scope,
        tenant_id,
        columns=_LISTED,
        account_id=account_id,
        service=service_name,
        status=status,
        since=since,
        until=until,
    )
    return rows_response(page, SnapshotOut)
