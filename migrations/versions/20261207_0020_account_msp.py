"""account.msp_id: the MSP of the account's tenant, and ix_account_msp_page (msp_id,
created_at, id), for the MSP-wide list of seats (GET /v1/accounts) that a portal reads instead
of one list per client tenant. Filled from the accounts' tenants (a tenant never changes MSP).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 10:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from safekeep.migrate import create_index, drop_index

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.add_column(sa.Column("msp_id", sa.Uuid(), nullable=True))
    op.execute(
        "UPDATE account SET msp_id = "
        "(SELECT tenant.msp_id FROM tenant WHERE tenant.id = account.tenant_id)"
    )
    with op.batch_alter_table("account") as batch:
        batch.alter_column("msp_id", existing_type=sa.Uuid(), nullable=False)
        batch.create_foreign_key(
            "fk_account_msp_id_msp", "msp", ["msp_id"], ["id"], ondelete="CASCADE"
        )
    create_index("ix_account_msp_page", "account", ["msp_id", "created_at", "id"])


def downgrade() -> None:
    drop_index("ix_account_msp_page", "account")
    with op.batch_alter_table("account") as batch:
        batch.drop_constraint("fk_account_msp_id_msp", type_="foreignkey")
        batch.drop_column("msp_id")
