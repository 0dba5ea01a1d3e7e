from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import Base, CreatedMixin, IdMixin


class ConsentRequest(IdMixin, CreatedMixin, Base):
    """One admin sign-in Safekeep sent a client's admin to: the ``state`` it carries (only its
    hash is kept), the sealed nonce and PKCE verifier, and whether it was used.

    A request is burnt by its first answer, grant or error, so a replayed answer changes
    nothing; it expires an hour after it was made."""

    __tablename__ = "consent_request"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenant.id", ondelete="CASCADE"), index=True
    )
    state_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64))
    authority: Mapped[str] = mapped_column(String(300))
    flow_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
