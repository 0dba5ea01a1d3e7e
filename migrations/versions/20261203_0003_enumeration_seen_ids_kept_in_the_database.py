"""enumeration_seen: the ids a full enumeration has seen, kept in the database

A first pass or a resync of a collection removes, at its end, what it did not see. The ids it
saw were a set in the worker's memory, which grew with the mailbox or drive; they are now rows
written with each page and deleted when the pass ends.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "enumeration_seen",
        sa.Column("snapshot_id", sa.Uuid(), nullable=False),
        sa.Column("collection", sa.String(length=500), nullable=False),
        sa.Column("external_id", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshot.id"],
            name=op.f("fk_enumeration_seen_snapshot_id_snapshot"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "snapshot_id", "collection", "external_id", name=op.f("pk_enumeration_seen")
        ),
    )


def downgrade() -> None:
    op.drop_table("enumeration_seen")
