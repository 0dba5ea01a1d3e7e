"""ix_item_version_unindexed: the search index's backlog (versions whose documents are not known
to be indexed), oldest first, as a partial index. The fleet metrics count it every 15 seconds
and the scheduler sends its old entries to be indexed again; both read every version of every
tenant without it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 08:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from safekeep.migrate import create_index, drop_index

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_index(
        "ix_item_version_unindexed",
        "item_version",
        ["valid_from"],
        postgresql_where=sa.text("indexed IS false"),
        sqlite_where=sa.text("indexed IS false"),
    )


def downgrade() -> None:
    drop_index("ix_item_version_unindexed", "item_version")
