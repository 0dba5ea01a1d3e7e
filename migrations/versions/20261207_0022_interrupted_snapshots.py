"""Snapshots whose task ended unfinished (failed or cancelled) are ``interrupted`` instead of
``running`` for ever: the account's next backup of the service resumes them as before. Those
already left running by a finished job (or one since deleted) are marked so here; an index
serves a page of one state (``GET .../snapshots?status=interrupted``).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 14:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from safekeep.migrate import create_index, drop_index

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FINISHED_JOB = "('succeeded', 'partial', 'failed', 'cancelled')"


def upgrade() -> None:
    create_index(
        "ix_snapshot_tenant_status_page", "snapshot", ["tenant_id", "status", "started_at", "id"]
    )
    op.execute(
        "UPDATE snapshot SET status = 'interrupted' WHERE status = 'running' AND "
        f"(job_id IS NULL OR job_id IN (SELECT id FROM job WHERE status IN {FINISHED_JOB}))"
    )


def downgrade() -> None:
    op.execute("UPDATE snapshot SET status = 'running' WHERE status = 'interrupted'")
    drop_index("ix_snapshot_tenant_status_page", "snapshot")
