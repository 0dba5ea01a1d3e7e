from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import Base, CreatedMixin, EnumText, IdMixin, JSONType, page_index


class ExportStatus(enum.StrEnum):
    pending = "pending"
    ready = "ready"
    failed = "failed"
    expired = "expired"


class Export(IdMixin, CreatedMixin, Base):
    """A ZIP built by an export job, stored under the tenant's prefix until it expires."""

    __tablename__ = "export"
    __table_args__ = (page_index("export", "tenant_id"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    status: Mapped[ExportStatus] = mapped_column(
        EnumText(ExportStatus), default=ExportStatus.pending
    )
    blob_key: Mapped[str | None] = mapped_column(String(500))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    items: Mapped[int] = mapped_column(default=0)
    options: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    expires_at: Mapped[datetime | None]
