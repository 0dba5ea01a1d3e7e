from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from safekeep.api.restores.schemas import PointIn
from safekeep.api.schemas import RequestSchema, Schema
from safekeep.tenants.models import ExportStatus


class ExportOptions(RequestSchema):
    mbox: bool = Field(default=False, description="Also one .mbox per mail folder")


class ExportRequest(PointIn):
    options: ExportOptions = Field(default_factory=ExportOptions)


class ExportOut(Schema):
    id: uuid.UUID
    tenant_id: uuid.UUID
    job_id: uuid.UUID
    status: ExportStatus
    size: int | None
    sha256: str | None
    items: int
    options: dict[str, bool]
    created_at: datetime
    expires_at: datetime | None
    links: dict[str, str]


class DownloadUrl(Schema):
    url: str
    expires_at: datetime
