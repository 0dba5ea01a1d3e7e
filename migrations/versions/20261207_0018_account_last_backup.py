"""account.last_backup_at: when a backup of one of the account's services last finished,
kept as each snapshot finishes, so that a portal can list the seats whose backups have
stopped from the accounts alone. Filled from the snapshots already there.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 08:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from safekeep.tenants.models.base import UTCDateTime

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.add_column(sa.Column("last_backup_at", UTCDateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE account SET last_backup_at = (SELECT max(snapshot.completed_at) FROM snapshot "
        "WHERE snapshot.account_id = account.id AND snapshot.status IN ('complete', 'partial'))"
    )


def downgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.drop_column("last_backup_at")
