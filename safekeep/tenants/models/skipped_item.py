from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import AccountServiceMixin, Base, CreatedMixin, IdMixin, utcnow


class SkippedItem(IdMixin, CreatedMixin, AccountServiceMixin, Base):
    """An item a backup could not read. Delta has moved past it, so the next run retries it
    from this list; it leaves the list once backed up (or gone from Microsoft 365)."""

    __tablename__ = "skipped_item"
    __table_args__ = (UniqueConstraint("account_id", "service", "external_id"),)

    external_id: Mapped[str] = mapped_column(String(500))
    collection: Mapped[str | None] = mapped_column(String(500))  # folder / drive it lives in
    name: Mapped[str | None] = mapped_column(String(500))
    code: Mapped[str] = mapped_column(String(60))
    detail: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=1)
    last_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
