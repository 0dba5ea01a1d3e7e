from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import Base, CreatedMixin, IdMixin


class JobIssue(IdMixin, CreatedMixin, Base):
    """An item a job could not process (skipped after retries), with a reason to act on."""

    __tablename__ = "job_issue"
    # A poll lists a job's first issues in the order they were met: read in that order from
    # the index, whatever the number of issues (not all of them sorted on every poll).
    __table_args__ = (Index("ix_job_issue_job_created", "job_id", "created_at"),)

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    task_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("job_task.id", ondelete="CASCADE"))
    account_id: Mapped[uuid.UUID | None]
    service: Mapped[str | None] = mapped_column(String(20))
    item_ref: Mapped[str | None] = mapped_column(String(500))  # Graph id or our item id
    item_name: Mapped[str | None] = mapped_column(String(500))
    code: Mapped[str] = mapped_column(String(60))
    detail: Mapped[str] = mapped_column(Text)
