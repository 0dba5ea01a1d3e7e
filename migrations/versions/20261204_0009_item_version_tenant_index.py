"""ix_item_version_tenant: a tenant's versions in id order, for the daily retention sweep and
the blob collector's mark phase, which read them in batches; without it each batch (or each
sweep) read the versions of every tenant.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 17:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

from safekeep.migrate import create_index, drop_index

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_index("ix_item_version_tenant", "item_version", ["tenant_id", "id"])


def downgrade() -> None:
    drop_index("ix_item_version_tenant", "item_version")
