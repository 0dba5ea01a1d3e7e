"""job.heartbeat_at: the lease of a single-step job's run (discovery, restore, export, purge),
taken by a compare-and-set and renewed while the run lives, as a backup task's. A second
delivery of the job (a redelivery, the scheduler's recovery) finds it held and leaves the run
to its holder; recovery sends again only a job whose lease expired or was never taken.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-08 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from safekeep.tenants.models.base import UTCDateTime

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Null for the jobs already running: their runs took no lease, and the next delivery
    # (or recovery) takes one, as before.
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("heartbeat_at", UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_column("heartbeat_at")
