from __future__ import annotations

import uuid
from datetime import datetime

from safekeep.api.schemas import Schema
from safekeep.tenants.models import SnapshotStatus


class SnapshotOut(Schema):
    id: uuid.UUID
    tenant_id: uuid.UUID
    account_id: uuid.UUID
    service: str
    seq: int
    job_id: uuid.UUID | None
    status: SnapshotStatus
    started_at: datetime
    completed_at: datetime | None
    items_total: int
    items_added: int
    items_changed: int
    items_removed: int
    bytes_added: int
    skipped: int
