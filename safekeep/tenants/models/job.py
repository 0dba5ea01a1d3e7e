from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import (
    Base,
    CreatedMixin,
    EnumText,
    IdMixin,
    JSONType,
    page_index,
    utcnow,
)


class JobKind(enum.StrEnum):
    discover = "discover"
    backup = "backup"
    restore = "restore"
    export = "export"
    purge = "purge"


class JobTrigger(enum.StrEnum):
    manual = "manual"
    scheduled = "scheduled"
    system = "system"
    change = "change"  # Graph change notifications (continuous protection)


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    partial = "partial"  # finished, but some accounts or items could not be processed
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_JOB_STATUSES


FINISHED_JOB_STATUSES = frozenset(
    {JobStatus.succeeded, JobStatus.partial, JobStatus.failed, JobStatus.cancelled}
)
# The jobs still to finish, as SQL text (constants, not an expanding parameter rendered on each
# execution): the MSP-wide list of them (GET /v1/jobs).
UNFINISHED_JOBS_SQL = "status IN ('queued', 'running')"


class Job(IdMixin, CreatedMixin, Base):
    """A unit of slow work that an MSP can watch: discovery, backup, restore, export, purge."""

    __tablename__ = "job"
    __table_args__ = (
        page_index("job", "tenant_id"),
        # Jobs by status, then MSP: the MSP-wide list of unfinished jobs enters it at both
        # and reads that MSP's work in progress alone, whatever the history or other MSPs'.
        Index("ix_job_status_msp", "status", "msp_id"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    # The tenant's MSP (a tenant never changes MSP), so that the MSP-wide list of unfinished
    # jobs reads that MSP's alone.
    msp_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("msp.id", ondelete="CASCADE"))
    kind: Mapped[JobKind] = mapped_column(EnumText(JobKind))
    trigger: Mapped[JobTrigger] = mapped_column(EnumText(JobTrigger), default=JobTrigger.manual)
    status: Mapped[JobStatus] = mapped_column(EnumText(JobStatus), default=JobStatus.queued)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(60))
    error_detail: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str | None] = mapped_column(String(100))  # "api_key:<id>" or "scheduler"
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    cancel_requested_at: Mapped[datetime | None]
    # The lease of a single-step job's run (discovery, restore, export, purge), renewed while
    # it runs, as a backup task's: null when no run holds it (queued, or given back for a
    # retry). A backup job runs in its tasks and leaves it null.
    heartbeat_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
