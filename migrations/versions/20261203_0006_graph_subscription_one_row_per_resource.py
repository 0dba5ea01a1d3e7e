"""graph_subscription: one row per account, service and resource (a SharePoint site has one
subscription per document library and per list)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 11:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite (the unit tests' database) cannot alter constraints in place.
    with op.batch_alter_table("graph_subscription") as batch:
        batch.drop_constraint(op.f("uq_graph_subscription_account_id_service"), type_="unique")
        batch.create_unique_constraint(
            op.f("uq_graph_subscription_account_id_service_resource"),
            ["account_id", "service", "resource"],
        )


def downgrade() -> None:
    # Going back allows one row per account and service again: the extra rows of a site
    # (all but one resource each) are dropped first; their subscriptions expire at Graph.
    op.execute(
        "DELETE FROM graph_subscription WHERE EXISTS (SELECT 1 FROM graph_subscription h "
        "WHERE h.account_id = graph_subscription.account_id "
        "AND h.service = graph_subscription.service AND h.id < graph_subscription.id)"
    )
    with op.batch_alter_table("graph_subscription") as batch:
        batch.drop_constraint(
            op.f("uq_graph_subscription_account_id_service_resource"), type_="unique"
        )
        batch.create_unique_constraint(
            op.f("uq_graph_subscription_account_id_service"), ["account_id", "service"]
        )
