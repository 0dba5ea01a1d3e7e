"""ix_webhook_delivery_pending: the pending webhook deliveries by next attempt, as a partial
index. Each scheduler tick looks for the few whose message may be lost, and read the whole
table to find them. (The sweep of settled deliveries past their 30 days reads created_at's
index, which every table has.)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 06:25:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from safekeep.migrate import create_index, drop_index

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = "status = 'pending'"  # as safekeep.tenants.models.webhook has it


def upgrade() -> None:
    create_index(
        "ix_webhook_delivery_pending",
        "webhook_delivery",
        ["next_attempt_at"],
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )


def downgrade() -> None:
    drop_index("ix_webhook_delivery_pending", "webhook_delivery")
