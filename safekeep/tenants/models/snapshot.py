from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import AccountServiceMixin, Base, EnumText, IdMixin, page_index


class SnapshotStatus(enum.StrEnum):
    running = "running"  # being written; resumed by the next run if interrupted
    complete = "complete"
    partial = "partial"  # complete, but some items were skipped


class Snapshot(IdMixin, AccountServiceMixin, Base):
    """One backup of one account and service. ``seq`` orders them per account and service;
    item versions are valid over an interval of seqs."""

    __tablename__ = "snapshot"
    __table_args__ = (
        UniqueConstraint("account_id", "service", "seq"),
        page_index("snapshot", "tenant_id", "started_at"),
    )

    seq: Mapped[int]
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("job.id", ondelete="SET NULL"))
    status: Mapped[SnapshotStatus] = mapped_column(
        EnumText(SnapshotStatus), default=SnapshotStatus.running
    )
    started_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    items_added: Mapped[int] = mapped_column(default=0)
    items_changed: Mapped[int] = mapped_column(default=0)
    items_removed: Mapped[int] = mapped_column(default=0)
    items_total: Mapped[int] = mapped_column(default=0)
    bytes_added: Mapped[int] = mapped_column(BigInteger, default=0)
    skipped: Mapped[int] = mapped_column(default=0)
