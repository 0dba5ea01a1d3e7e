from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import AccountServiceMixin, Base, EnumText, IdMixin, page_index


class SnapshotStatus(enum.StrEnum):
    running = "running"  # being written; a retry of its task (a worker died, a blip) resumes it
    # Its task ended (failed or cancelled) before it finished: what it wrote is kept, and the
    # account's next backup of the service resumes it. Never a point to restore to.
    interrupted = "interrupted"
    complete = "complete"
    partial = "partial"  # complete, but some items were skipped


# The snapshots a backup resumes rather than starting the next one (at most one per account
# and service, its newest).
UNFINISHED_SNAPSHOT = (SnapshotStatus.running, SnapshotStatus.interrupted)


class Snapshot(IdMixin, AccountServiceMixin, Base):
    """One backup of one account and service. ``seq`` orders them per account and service;
    item versions are valid over an interval of seqs."""

    __tablename__ = "snapshot"
    __table_args__ = (
        UniqueConstraint("account_id", "service", "seq"),
        page_index("snapshot", "tenant_id", "started_at"),
        # A page of one state (``?status=interrupted``): the rare ones, read without walking
        # past every finished snapshot of the tenant.
        Index("ix_snapshot_tenant_status_page", "tenant_id", "status", "started_at", "id"),
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
