from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import AccountServiceMixin, Base, IdMixin, utcnow


class DeltaState(IdMixin, AccountServiceMixin, Base):
    """Where Graph delta stands for one collection (a mail folder, a drive, a list...).

    ``delta_link`` covers everything already durable; ``resume_link`` is the next page of a run
    that was interrupted, saved only after the pages before it were written.
    """

    __tablename__ = "delta_state"
    __table_args__ = (UniqueConstraint("account_id", "service", "collection"),)

    collection: Mapped[str] = mapped_column(String(500))
    delta_link: Mapped[str | None] = mapped_column(Text)
    resume_link: Mapped[str | None] = mapped_column(Text)
    resume_seq: Mapped[int | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
