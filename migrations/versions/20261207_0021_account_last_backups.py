"""account.last_backups (when each service's backup last finished) and
account.least_recent_backup_at (the oldest of those among the services the seat is backed up
for), which the seats-whose-backups-stopped filter reads: a seat whose mailbox stopped while its
OneDrive went on was not found by ``last_backup_at``, the latest of any service.

Filled from the snapshots: each service's newest finished one, and the oldest of those. Which
services a seat is backed up for depends on its tenant's policy and on discovery, which SQL
here does not know: until the seat's next backup finishes (which computes it from them), a
service the policy has since dropped still counts and one never backed up does not.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 12:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each service's newest finished snapshot of the account being updated.
LAST = (
    "SELECT service, max(completed_at) AS at FROM snapshot "
    "WHERE snapshot.account_id = account.id AND completed_at IS NOT NULL GROUP BY service"
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    with op.batch_alter_table("account") as batch:
        batch.add_column(
            sa.Column("last_backups", json, nullable=False, server_default=sa.text("'{}'"))
        )
        batch.add_column(
            sa.Column("least_recent_backup_at", sa.DateTime(timezone=True), nullable=True)
        )
    # SQLite keeps an instant as UTC text without a zone ("2026-12-07 10:00:00.000000"):
    # written as the application writes it, ISO 8601 with its offset.
    by_service = (
        f"SELECT jsonb_object_agg(last.service, last.at) FROM ({LAST}) AS last"
        if postgres
        else "SELECT json_group_object(last.service, replace(last.at, ' ', 'T') || '+00:00') "
        f"FROM ({LAST}) AS last"
    )
    op.execute(
        f"UPDATE account SET last_backups = coalesce(({by_service}), '{{}}'), "
        f"least_recent_backup_at = (SELECT min(last.at) FROM ({LAST}) AS last)"
    )


def downgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.drop_column("least_recent_backup_at")
        batch.drop_column("last_backups")
