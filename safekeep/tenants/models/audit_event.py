from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import Base, CreatedMixin, IdMixin, JSONType, page_index


class AuditEvent(IdMixin, CreatedMixin, Base):
    """Append-only record of who did what (a database trigger refuses UPDATE and DELETE)."""

    __tablename__ = "audit_event"
    __table_args__ = (page_index("audit_event", "msp_id"),)

    msp_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("msp.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID | None]
    actor: Mapped[str] = mapped_column(String(100))  # "api_key:<id>", "system", "cli"
    action: Mapped[str] = mapped_column(String(60))  # e.g. "api_key.created", "restore.requested"
    target_type: Mapped[str | None] = mapped_column(String(40))
    target_id: Mapped[str | None] = mapped_column(String(100))
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    ip: Mapped[str | None] = mapped_column(String(64))
