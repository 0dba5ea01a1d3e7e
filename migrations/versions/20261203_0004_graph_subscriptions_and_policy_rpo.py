"""change-notification subscriptions per account and service; the policy's rpo_minutes

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import safekeep.tenants.models.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = safekeep.tenants.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.add_column("policy", sa.Column("rpo_minutes", sa.Integer(), nullable=True))
    op.create_table(
        "graph_subscription",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("service", sa.String(length=20), nullable=False),
        sa.Column("resource", sa.String(length=500), nullable=False),
        sa.Column("subscription_id", sa.String(length=100), nullable=True),
        sa.Column("client_state_hash", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("expires_at", UTC, nullable=True),
        sa.Column("next_action_at", UTC, nullable=True),
        sa.Column("dirty_since", UTC, nullable=True),
        sa.Column("last_notification_at", UTC, nullable=True),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_graph_subscription_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_graph_subscription_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_graph_subscription")),
        sa.UniqueConstraint(
            "account_id", "service", name=op.f("uq_graph_subscription_account_id_service")
        ),
        sa.UniqueConstraint(
            "subscription_id", name=op.f("uq_graph_subscription_subscription_id")
        ),
    )
    op.create_index(
        op.f("ix_graph_subscription_tenant_id"), "graph_subscription", ["tenant_id"]
    )
    op.create_index(
        op.f("ix_graph_subscription_next_action_at"), "graph_subscription", ["next_action_at"]
    )
    op.create_index(
        op.f("ix_graph_subscription_dirty_since"), "graph_subscription", ["dirty_since"]
    )


def downgrade() -> None:
    op.drop_table("graph_subscription")
    with op.batch_alter_table("policy") as batch:
        batch.drop_column("rpo_minutes")
