"""ix_item_version_state: an account's versions in item order, for restore and export, which
page through an account's state 500 items at a time; without it each page read and sorted
every version of the account (a 100,000-item mailbox: 6.6 s of SQLite for the walk, 0.26 s
with the index).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 17:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

from safekeep.migrate import create_index, drop_index

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_index(
        "ix_item_version_state", "item_version", ["account_id", "service", "item_id"]
    )


def downgrade() -> None:
    drop_index("ix_item_version_state", "item_version")
