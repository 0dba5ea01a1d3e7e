"""job.msp_id: the MSP of the job's tenant, and ix_job_status_msp (status, msp_id) in place of
ix_job_status and ix_job_unfinished_page. The MSP-wide list of unfinished jobs (GET /v1/jobs)
walked the deployment's unfinished jobs in page order and kept its MSP's: an MSP of 1,000
tenants with one job running, among 20,000 running for other MSPs, read all 20,005 per poll
(21 ms of PostgreSQL). Entered at the status and the MSP, a poll reads that MSP's unfinished
jobs alone. Filled from the jobs' tenants (a tenant never changes MSP).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 10:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from safekeep.migrate import create_index, drop_index

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = "status IN ('queued', 'running')"  # as 0015 had it


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("msp_id", sa.Uuid(), nullable=True))
    op.execute(
        "UPDATE job SET msp_id = (SELECT tenant.msp_id FROM tenant WHERE tenant.id = job.tenant_id)"
    )
    with op.batch_alter_table("job") as batch:
        batch.alter_column("msp_id", existing_type=sa.Uuid(), nullable=False)
        batch.create_foreign_key("fk_job_msp_id_msp", "msp", ["msp_id"], ["id"], ondelete="CASCADE")
    create_index("ix_job_status_msp", "job", ["status", "msp_id"])
    drop_index("ix_job_status", "job")
    drop_index("ix_job_unfinished_page", "job")


def downgrade() -> None:
    create_index(
        "ix_job_unfinished_page",
        "job",
        ["created_at", "id"],
        postgresql_where=sa.text(UNFINISHED),
        sqlite_where=sa.text(UNFINISHED),
    )
    create_index("ix_job_status", "job", ["status"])
    drop_index("ix_job_status_msp", "job")
    with op.batch_alter_table("job") as batch:
        batch.drop_constraint("fk_job_msp_id_msp", type_="foreignkey")
        batch.drop_column("msp_id")
