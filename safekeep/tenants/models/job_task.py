from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import Base, CreatedMixin, EnumText, IdMixin


class TaskStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    partial = "partial"  # done, some items skipped
    failed = "failed"
    cancelled = "cancelled"


class JobTask(IdMixin, CreatedMixin, Base):
    """One account and service of a job; the unit a worker runs and retries.

    Progress counters live here, not on the job, so parallel workers never contend on one row;
    a job's progress is the sum over its tasks.
    """

    __tablename__ = "job_task"
    __table_args__ = (UniqueConstraint("job_id", "account_id", "service"),)

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE")
    )
    service: Mapped[str] = mapped_column(String(20))
    status: Mapped[TaskStatus] = mapped_column(EnumText(TaskStatus), default=TaskStatus.queued)
    attempts: Mapped[int] = mapped_column(default=0)
    items: Mapped[int] = mapped_column(default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(default=0)
    skipped: Mapped[int] = mapped_column(default=0)
    requests: Mapped[int] = mapped_column(default=0)
    throttled: Mapped[int] = mapped_column(default=0)
    error_code: Mapped[str | None] = mapped_column(String(60))
    error_detail: Mapped[str | None] = mapped_column(Text)
    snapshot_id: Mapped[uuid.UUID | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
