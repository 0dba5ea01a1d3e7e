"""A tenant's change-notification subscriptions page like every other list: newest first
along ``(tenant_id, created_at, id)``, which also serves every lookup the index on
``tenant_id`` alone served, so that one goes.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from safekeep.migrate import create_index, drop_index

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_index(
        "ix_graph_subscription_tenant_page", "graph_subscription", ["tenant_id", "created_at", "id"]
    )
    drop_index("ix_graph_subscription_tenant_id", "graph_subscription")


def downgrade() -> None:
    create_index("ix_graph_subscription_tenant_id", "graph_subscription", ["tenant_id"])
    drop_index("ix_graph_subscription_tenant_page", "graph_subscription")
