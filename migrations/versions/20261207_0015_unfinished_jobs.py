"""ix_job_unfinished_page: the jobs not finished yet (queued or running) in page order, as a
partial index, for the MSP-wide list of them (GET /v1/jobs) that a portal polls instead of
one list per tenant: without it PostgreSQL read the job table's created_at index through
every tenant's history.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 06:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from safekeep.migrate import create_index, drop_index

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = "status IN ('queued', 'running')"  # as safekeep.tenants.models.job has it


def upgrade() -> None:
    create_index(
        "ix_job_unfinished_page",
        "job",
        ["created_at", "id"],
        postgresql_where=sa.text(UNFINISHED),
        sqlite_where=sa.text(UNFINISHED),
    )


def downgrade() -> None:
    drop_index("ix_job_unfinished_page", "job")
