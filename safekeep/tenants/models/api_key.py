from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import Base, CreatedMixin, IdMixin, JSONType, page_index


class ApiKey(IdMixin, CreatedMixin, Base):
    """A bearer key of an MSP. Only a SHA-256 of the secret is kept; it is shown once."""

    __tablename__ = "api_key"
    __table_args__ = (page_index("api_key", "msp_id"),)

    msp_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("msp.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32))  # shown in listings, e.g. "sk_3f9a1c"
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSONType)
    # None: every tenant of the MSP; a list: only these (a client's portal key).
    tenant_ids: Mapped[list[str] | None] = mapped_column(JSONType)
    created_by: Mapped[uuid.UUID | None]
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
