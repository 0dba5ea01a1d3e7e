"""Recovery after a detection: one call restores the account as of its last clean backup."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep import registry
from safekeep.backup.jobs import service as job_requests
from safekeep.errors import Conflict
from safekeep.tenants.detection import service as detection_service
from safekeep.tenants.models import Job
from safekeep.tenants.scope import Principal


async def request_clean_restore(
    session: AsyncSession,
    principal: Principal,
    tenant_id: uuid.UUID,
    detection_id: uuid.UUID,
    *,
    ip: str | None = None,
) -> Job:
    """The one-call recovery: restore the account's service in place as of the detection's
    last clean snapshot. Copies the attack made under new names are left alone and named in
    the report; originals come back under their own names. On a drive, a file encrypted in
    place (the same driveItem, other bytes) gets its clean bytes back as its newest version
    (``overwrite``: the encrypted content stays in its version history, and the report names
    each file replaced); files whose bytes are clean are left as they are. Elsewhere
    ``skip``: overwriting an Outlook item deletes and re-creates it."""
    found = await detection_service.get(session, principal.scope, tenant_id, detection_id)
    if found.last_clean_snapshot_id is None:
        raise Conflict("No clean backup precedes this detection: there is nothing to go back to")
    body = {
        "scope": {
            "type": "service",
            "account_id": str(found.account_id),
            "service": found.service,
            "item_ids": [],
        },
        "snapshot_id": str(found.last_clean_snapshot_id),
        "target": {"account_id": None, "folder": "original"},
        "conflict": "overwrite" if registry.get(found.service).keeps_versions else "skip",
    }
    return await job_requests.request_restore(session, principal, tenant_id, body, ip=ip)
