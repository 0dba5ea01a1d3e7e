"""consent requests (single-use state) and one owner per Entra directory

Before this revision the consent callback trusted an unsigned ``tenant=`` parameter, so two
live tenants may name the same directory. The earliest binding is kept; every later one is
unbound (back to ``pending``, backups stopped) and audited on its MSP's log, since Microsoft
never proved it: its MSP asks the client's admin to sign in again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 07:00:00
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

import safekeep.tenants.models.base

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE_BOUND = "status <> 'deleted' AND entra_tenant_id IS NOT NULL"


def _unbind_duplicates() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT id, msp_id, entra_tenant_id FROM tenant WHERE "
            + LIVE_BOUND
            + " ORDER BY entra_tenant_id, consent_changed_at, created_at"
        )
    ).fetchall()
    seen: set[str] = set()
    now = datetime.now(UTC)
    if bind.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    for tenant_id, msp_id, directory in rows:
        if directory not in seen:
            seen.add(directory)
            continue
        bind.execute(
            sa.text(
                "UPDATE tenant SET entra_tenant_id = NULL, consent_state = 'pending', "
                "next_backup_at = NULL, consent_changed_at = :now, consent_error = :why "
                "WHERE id = :id"
            ),
            {
                "now": now,
                "why": "Unbound: another tenant holds this directory; sign in again",
                "id": tenant_id,
            },
        )
        bind.execute(
            sa.text(
                "INSERT INTO audit_event (id, created_at, msp_id, tenant_id, actor, action, "
                "target_type, target_id, details) VALUES (:id, :now, :msp, :tenant, 'system', "
                "'tenant.consent_unbound', 'tenant', :target, :details)"
            ).bindparams(
                sa.bindparam("id", type_=sa.Uuid()),
                sa.bindparam("msp", type_=sa.Uuid()),
                sa.bindparam("tenant", type_=sa.Uuid()),
                sa.bindparam("details", type_=sa.JSON().with_variant(JSONB(), "postgresql")),
            ),
            {
                "id": uuid.uuid4(),
                "now": now,
                "msp": uuid.UUID(str(msp_id)),
                "tenant": uuid.UUID(str(tenant_id)),
                "target": str(tenant_id),
                "details": {"entra_tenant_id": directory},
            },
        )


def upgrade() -> None:
    op.create_table(
        "consent_request",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("authority", sa.String(length=300), nullable=False),
        sa.Column("flow_sealed", sa.LargeBinary(), nullable=False),
        sa.Column(
            "expires_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "used_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_consent_request_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_request")),
        sa.UniqueConstraint("state_hash", name=op.f("uq_consent_request_state_hash")),
    )
    with op.batch_alter_table("consent_request", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_consent_request_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_consent_request_tenant_id"), ["tenant_id"], unique=False
        )
    _unbind_duplicates()
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.create_index(
            "uq_tenant_entra_directory",
            ["entra_tenant_id"],
            unique=True,
            postgresql_where=sa.text(LIVE_BOUND),
            sqlite_where=sa.text(LIVE_BOUND),
        )


def downgrade() -> None:
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_tenant_entra_directory",
            postgresql_where=sa.text(LIVE_BOUND),
            sqlite_where=sa.text(LIVE_BOUND),
        )
    with op.batch_alter_table("consent_request", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_request_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_consent_request_created_at"))
    op.drop_table("consent_request")
