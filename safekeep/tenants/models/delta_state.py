from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import Base, IdMixin, utcnow


class DeltaState(IdMixin, Base):
    """Where Graph delta stands for one collection (a mail folder, a drive, a list...).

    ``delta_link`` covers everything already durable; ``resume_link`` is the next page of a run
    that was interrupted, saved only after the pages before it were written.
    """

    __tablename__ = "delta_state"
    __table_args__ = (UniqueConstraint("account_id", "service", "collection"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    service: Mapped[str] = mapped_column(String(20))
    collection: Mapped[str] = mapped_column(String(500))
    delta_link: Mapped[str | None] = mapped_column(Text)
    resume_link: Mapped[str | None] = mapped_column(Text)
    resume_seq: Mapped[int | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
