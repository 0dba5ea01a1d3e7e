"""webhook_endpoint.previous_secret_sealed and previous_secret_expires_at: a rotated signing
secret kept, sealed, until its overlap ends, so that deliveries carry a signature under both
the new and the old secret while a receiver switches from one to the other.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from safekeep.tenants.models.base import UTCDateTime

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoint") as batch:
        batch.add_column(sa.Column("previous_secret_sealed", sa.LargeBinary(), nullable=True))
        batch.add_column(
            sa.Column("previous_secret_expires_at", UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_endpoint") as batch:
        batch.drop_column("previous_secret_expires_at")
        batch.drop_column("previous_secret_sealed")
