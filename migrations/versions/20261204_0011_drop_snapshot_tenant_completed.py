"""Drop ix_snapshot_tenant_completed. No list filters snapshots on completed_at (the snapshots
page filters and pages on started_at, ``ix_snapshot_tenant_page``), and the one statement that
reads it, the newest snapshot of an account at a point in time, was led by it to read and sort
every snapshot of the tenant before that point (72 ms with 100,000 of them, on SQLite without
statistics) instead of stepping back through the account's own snapshots.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 17:25:00
"""

from __future__ import annotations

from collections.abc import Sequence

from safekeep.migrate import create_index, drop_index

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    drop_index("ix_snapshot_tenant_completed", "snapshot")


def downgrade() -> None:
    create_index("ix_snapshot_tenant_completed", "snapshot", ["tenant_id", "completed_at"])
