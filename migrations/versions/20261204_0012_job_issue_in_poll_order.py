"""ix_job_issue_job_created replaces ix_job_issue_job_id: a job poll lists the job's first 100
issues by created_at, and with an index on job_id alone it read and sorted all of them on
every poll (a job that met tens of thousands of unreadable items).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 17:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from safekeep.migrate import create_index, drop_index

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_index("ix_job_issue_job_created", "job_issue", ["job_id", "created_at"])
    drop_index("ix_job_issue_job_id", "job_issue")


def downgrade() -> None:
    create_index("ix_job_issue_job_id", "job_issue", ["job_id"])
    drop_index("ix_job_issue_job_created", "job_issue")
