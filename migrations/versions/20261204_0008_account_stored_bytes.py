"""account.stored_bytes: the bytes its snapshots added, kept as each snapshot finishes, so
that usage reads a tenant's stored bytes from its accounts instead of summing its whole
history of snapshots on every request. Filled from the snapshots already there.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 17:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.add_column(
            sa.Column("stored_bytes", sa.BigInteger(), server_default="0", nullable=False)
        )
    op.execute(
        "UPDATE account SET stored_bytes = (SELECT coalesce(sum(snapshot.bytes_added), 0) "
        "FROM snapshot WHERE snapshot.account_id = account.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.drop_column("stored_bytes")
