"""ransomware and mass-deletion detections, which hold an account's versions until released

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 10:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import safekeep.tenants.models.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = safekeep.tenants.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "detection",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("service", sa.String(length=20), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("first_suspicious_at", UTC, nullable=False),
        sa.Column("snapshot_id", sa.Uuid(), nullable=True),
        sa.Column("last_clean_snapshot_id", sa.Uuid(), nullable=True),
        sa.Column("last_clean_at", UTC, nullable=True),
        sa.Column(
            "evidence",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("acknowledged_at", UTC, nullable=True),
        sa.Column("acknowledged_by", sa.String(length=200), nullable=True),
        sa.Column("released_at", UTC, nullable=True),
        sa.Column("released_by", sa.String(length=200), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_detection_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["last_clean_snapshot_id"],
            ["snapshot.id"],
            name=op.f("fk_detection_last_clean_snapshot_id_snapshot"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshot.id"],
            name=op.f("fk_detection_snapshot_id_snapshot"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_detection_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detection")),
    )
    op.create_index(op.f("ix_detection_account_id"), "detection", ["account_id"])
    op.create_index("ix_detection_tenant_created", "detection", ["tenant_id", "created_at"])
    op.create_table(
        "detection_baseline",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("service", sa.String(length=20), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("suspicious_mean", sa.Double(), nullable=False),
        sa.Column("suspicious_m2", sa.Double(), nullable=False),
        sa.Column("deleted_mean", sa.Double(), nullable=False),
        sa.Column("deleted_m2", sa.Double(), nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_detection_baseline_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_detection_baseline_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "service", name=op.f("pk_detection_baseline")),
    )
    op.create_index(
        op.f("ix_detection_baseline_tenant_id"), "detection_baseline", ["tenant_id"]
    )


    op.create_table(
        "detection_threshold",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("min_files", sa.Integer(), nullable=False),
        sa.Column("min_deletions", sa.Integer(), nullable=False),
        sa.Column("sigmas", sa.Double(), nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_detection_threshold_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_detection_threshold")),
    )


def downgrade() -> None:
    op.drop_table("detection_threshold")
    op.drop_table("detection_baseline")
    op.drop_table("detection")
