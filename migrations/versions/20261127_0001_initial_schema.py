"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27 16:24:27.247165
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import safekeep.tenants.models.base
from sqlalchemy.dialects import postgresql


revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "msp",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=100), nullable=True),
        sa.Column("billing_email", sa.String(length=320), nullable=True),
        sa.Column(
            "status_changed_at",
            safekeep.tenants.models.base.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_msp")),
        sa.UniqueConstraint("stripe_customer_id", name=op.f("uq_msp_stripe_customer_id")),
    )
    with op.batch_alter_table("msp", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_msp_created_at"), ["created_at"], unique=False)

    op.create_table(
        "stripe_event",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "handled_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_event")),
    )
    with op.batch_alter_table("stripe_event", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stripe_event_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "api_key",
        sa.Column("msp_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "scopes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "tenant_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column(
            "last_used_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "expires_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "revoked_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["msp_id"], ["msp.id"], name=op.f("fk_api_key_msp_id_msp"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_api_key_secret_hash")),
    )
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_key_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_api_key_msp_id"), ["msp_id"], unique=False)

    op.create_table(
        "audit_event",
        sa.Column("msp_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=60), nullable=False),
        sa.Column("target_type", sa.String(length=40), nullable=True),
        sa.Column("target_id", sa.String(length=100), nullable=True),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["msp_id"], ["msp.id"], name=op.f("fk_audit_event_msp_id_msp"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_event_created_at"), ["created_at"], unique=False)
        batch_op.create_index("ix_audit_event_msp_created", ["msp_id", "created_at"], unique=False)

    op.create_table(
        "idempotency_record",
        sa.Column("msp_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column(
            "body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["msp_id"],
            ["msp.id"],
            name=op.f("fk_idempotency_record_msp_id_msp"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_record")),
        sa.UniqueConstraint("msp_id", "key", name=op.f("uq_idempotency_record_msp_id_key")),
    )
    with op.batch_alter_table("idempotency_record", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_record_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "tenant",
        sa.Column("msp_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("requested_domain", sa.String(length=255), nullable=True),
        sa.Column("entra_tenant_id", sa.String(length=64), nullable=True),
        sa.Column("consent_state", sa.String(length=20), nullable=False),
        sa.Column(
            "consent_changed_at",
            safekeep.tenants.models.base.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column("consent_error", sa.String(length=1000), nullable=True),
        sa.Column("app_client_id", sa.String(length=64), nullable=True),
        sa.Column("app_client_secret_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("wrapped_data_key", sa.LargeBinary(), nullable=False),
        sa.Column("storage_prefix", sa.String(length=200), nullable=False),
        sa.Column(
            "next_backup_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "last_backup_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "updated_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "deleted_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["msp_id"], ["msp.id"], name=op.f("fk_tenant_msp_id_msp"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant")),
    )
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tenant_created_at"), ["created_at"], unique=False)
        batch_op.create_index("ix_tenant_due", ["status", "next_backup_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_tenant_entra_tenant_id"), ["entra_tenant_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_tenant_msp_id"), ["msp_id"], unique=False)

    op.create_table(
        "usage_report",
        sa.Column("msp_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("protected_seats", sa.Integer(), nullable=False),
        sa.Column("retained_seats", sa.Integer(), nullable=False),
        sa.Column("stored_bytes", sa.BigInteger(), nullable=False),
        sa.Column(
            "reported_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "stripe_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["msp_id"], ["msp.id"], name=op.f("fk_usage_report_msp_id_msp"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_report")),
        sa.UniqueConstraint("msp_id", "day", name=op.f("uq_usage_report_msp_id_day")),
    )
    with op.batch_alter_table("usage_report", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_usage_report_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "webhook_endpoint",
        sa.Column("msp_id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column(
            "events",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("secret_sealed", sa.LargeBinary(), nullable=False),
        sa.Column(
            "deleted_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["msp_id"], ["msp.id"], name=op.f("fk_webhook_endpoint_msp_id_msp"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoint")),
    )
    with op.batch_alter_table("webhook_endpoint", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_endpoint_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_webhook_endpoint_msp_id"), ["msp_id"], unique=False)

    op.create_table(
        "account",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("graph_id", sa.String(length=300), nullable=False),
        sa.Column("display_name", sa.String(length=300), nullable=False),
        sa.Column("principal_name", sa.String(length=500), nullable=True),
        sa.Column("mail", sa.String(length=320), nullable=True),
        sa.Column("protected", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("licensed", sa.Boolean(), nullable=False),
        sa.Column("account_enabled", sa.Boolean(), nullable=False),
        sa.Column(
            "sku_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "services_found",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "last_seen_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "cancelled_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("cancel_reason", sa.String(length=40), nullable=True),
        sa.Column(
            "purged_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_account_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account")),
        sa.UniqueConstraint(
            "tenant_id", "kind", "graph_id", name=op.f("uq_account_tenant_id_kind_graph_id")
        ),
    )
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_account_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_account_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "job",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column(
            "params",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("error_code", sa.String(length=60), nullable=True),
        sa.Column("error_detail", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=100), nullable=True),
        sa.Column(
            "started_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "finished_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "cancel_requested_at",
            safekeep.tenants.models.base.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column(
            "updated_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_job_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job")),
    )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_job_status"), ["status"], unique=False)
        batch_op.create_index("ix_job_tenant_created", ["tenant_id", "created_at"], unique=False)

    op.create_table(
        "policy",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column(
            "services",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("backups_per_day", sa.Integer(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.Column("auto_protect", sa.Boolean(), nullable=False),
        sa.Column("include_deleted_items", sa.Boolean(), nullable=False),
        sa.Column("include_junk", sa.Boolean(), nullable=False),
        sa.Column("include_recoverable_items", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_policy_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_policy")),
    )
    op.create_table(
        "webhook_delivery",
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("msp_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(length=60), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "next_attempt_at",
            safekeep.tenants.models.base.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column(
            "delivered_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoint.id"],
            name=op.f("fk_webhook_delivery_endpoint_id_webhook_endpoint"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["msp_id"], ["msp.id"], name=op.f("fk_webhook_delivery_msp_id_msp"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery")),
    )
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_delivery_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            "ix_webhook_delivery_endpoint", ["endpoint_id", "created_at"], unique=False
        )

    op.create_table(
        "delta_state",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("service", sa.String(length=20), nullable=False),
        sa.Column("collection", sa.String(length=500), nullable=False),
        sa.Column("delta_link", sa.Text(), nullable=True),
        sa.Column("resume_link", sa.Text(), nullable=True),
        sa.Column("resume_seq", sa.Integer(), nullable=True),
        sa.Column(
            "updated_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_delta_state_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_delta_state_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delta_state")),
        sa.UniqueConstraint(
            "account_id",
            "service",
            "collection",
            name=op.f("uq_delta_state_account_id_service_collection"),
        ),
    )
    op.create_table(
        "export",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("blob_key", sa.String(length=500), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column(
            "options",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "expires_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["job.id"], name=op.f("fk_export_job_id_job"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_export_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_export")),
    )
    with op.batch_alter_table("export", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_export_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_export_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "item",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("service", sa.String(length=20), nullable=False),
        sa.Column("external_id", sa.String(length=500), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_item_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_item_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_item")),
        sa.UniqueConstraint(
            "account_id",
            "service",
            "external_id",
            name=op.f("uq_item_account_id_service_external_id"),
        ),
    )
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_item_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_item_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "job_task",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("service", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("throttled", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(length=60), nullable=True),
        sa.Column("error_detail", sa.Text(), nullable=True),
        sa.Column("snapshot_id", sa.Uuid(), nullable=True),
        sa.Column(
            "started_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "finished_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "heartbeat_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_job_task_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["job.id"], name=op.f("fk_job_task_job_id_job"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_job_task_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_task")),
        sa.UniqueConstraint(
            "job_id", "account_id", "service", name=op.f("uq_job_task_job_id_account_id_service")
        ),
    )
    with op.batch_alter_table("job_task", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_task_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_job_task_job_id"), ["job_id"], unique=False)

    op.create_table(
        "skipped_item",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("service", sa.String(length=20), nullable=False),
        sa.Column("external_id", sa.String(length=500), nullable=False),
        sa.Column("collection", sa.String(length=500), nullable=True),
        sa.Column("name", sa.String(length=500), nullable=True),
        sa.Column("code", sa.String(length=60), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "last_attempt_at",
            safekeep.tenants.models.base.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_skipped_item_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_skipped_item_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_skipped_item")),
        sa.UniqueConstraint(
            "account_id",
            "service",
            "external_id",
            name=op.f("uq_skipped_item_account_id_service_external_id"),
        ),
    )
    with op.batch_alter_table("skipped_item", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_skipped_item_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "snapshot",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("service", sa.String(length=20), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column(
            "started_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "completed_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("items_added", sa.Integer(), nullable=False),
        sa.Column("items_changed", sa.Integer(), nullable=False),
        sa.Column("items_removed", sa.Integer(), nullable=False),
        sa.Column("items_total", sa.Integer(), nullable=False),
        sa.Column("bytes_added", sa.BigInteger(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_snapshot_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["job.id"], name=op.f("fk_snapshot_job_id_job"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_snapshot_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshot")),
        sa.UniqueConstraint(
            "account_id", "service", "seq", name=op.f("uq_snapshot_account_id_service_seq")
        ),
    )
    with op.batch_alter_table("snapshot", schema=None) as batch_op:
        batch_op.create_index(
            "ix_snapshot_tenant_completed", ["tenant_id", "completed_at"], unique=False
        )

    op.create_table(
        "item_version",
        sa.Column("item_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("service", sa.String(length=20), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=True),
        sa.Column(
            "valid_from", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "valid_to", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("parent_external_id", sa.String(length=500), nullable=True),
        sa.Column("name", sa.String(length=1000), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column(
            "modified_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("change_key", sa.String(length=500), nullable=True),
        sa.Column("content_hash", sa.String(length=128), nullable=True),
        sa.Column(
            "content",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "document",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "refs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "meta",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("indexed", sa.Boolean(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_item_version_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["item.id"], name=op.f("fk_item_version_item_id_item"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_item_version_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_item_version")),
        sa.UniqueConstraint("item_id", "first_seq", name=op.f("uq_item_version_item_id_first_seq")),
    )
    with op.batch_alter_table("item_version", schema=None) as batch_op:
        batch_op.create_index(
            "ix_item_version_browse",
            ["account_id", "service", "parent_external_id", "first_seq"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_item_version_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            "ix_item_version_open", ["account_id", "service", "last_seq"], unique=False
        )

    op.create_table(
        "job_issue",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=True),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("service", sa.String(length=20), nullable=True),
        sa.Column("item_ref", sa.String(length=500), nullable=True),
        sa.Column("item_name", sa.String(length=500), nullable=True),
        sa.Column("code", sa.String(length=60), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", safekeep.tenants.models.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["job.id"], name=op.f("fk_job_issue_job_id_job"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["job_task.id"],
            name=op.f("fk_job_issue_task_id_job_task"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_issue")),
    )
    with op.batch_alter_table("job_issue", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_issue_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_job_issue_job_id"), ["job_id"], unique=False)

    _audit_event_append_only()


def _audit_event_append_only() -> None:
    """Audit events are append-only: the database refuses UPDATE and DELETE."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit_event is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event "
            "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_event_no_{verb.lower()} BEFORE {verb} ON audit_event "
                "BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_event_append_only ON audit_event")
        op.execute("DROP FUNCTION audit_event_append_only()")
    with op.batch_alter_table("job_issue", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_issue_job_id"))
        batch_op.drop_index(batch_op.f("ix_job_issue_created_at"))

    op.drop_table("job_issue")
    with op.batch_alter_table("item_version", schema=None) as batch_op:
        batch_op.drop_index("ix_item_version_open")
        batch_op.drop_index(batch_op.f("ix_item_version_created_at"))
        batch_op.drop_index("ix_item_version_browse")

    op.drop_table("item_version")
    with op.batch_alter_table("snapshot", schema=None) as batch_op:
        batch_op.drop_index("ix_snapshot_tenant_completed")

    op.drop_table("snapshot")
    with op.batch_alter_table("skipped_item", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_skipped_item_created_at"))

    op.drop_table("skipped_item")
    with op.batch_alter_table("job_task", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_task_job_id"))
        batch_op.drop_index(batch_op.f("ix_job_task_created_at"))

    op.drop_table("job_task")
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_item_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_item_created_at"))

    op.drop_table("item")
    with op.batch_alter_table("export", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_export_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_export_created_at"))

    op.drop_table("export")
    op.drop_table("delta_state")
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_delivery_endpoint")
        batch_op.drop_index(batch_op.f("ix_webhook_delivery_created_at"))

    op.drop_table("webhook_delivery")
    op.drop_table("policy")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_tenant_created")
        batch_op.drop_index(batch_op.f("ix_job_status"))
        batch_op.drop_index(batch_op.f("ix_job_created_at"))

    op.drop_table("job")
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_account_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_account_created_at"))

    op.drop_table("account")
    with op.batch_alter_table("webhook_endpoint", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_endpoint_msp_id"))
        batch_op.drop_index(batch_op.f("ix_webhook_endpoint_created_at"))

    op.drop_table("webhook_endpoint")
    with op.batch_alter_table("usage_report", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_report_created_at"))

    op.drop_table("usage_report")
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tenant_msp_id"))
        batch_op.drop_index(batch_op.f("ix_tenant_entra_tenant_id"))
        batch_op.drop_index("ix_tenant_due")
        batch_op.drop_index(batch_op.f("ix_tenant_created_at"))

    op.drop_table("tenant")
    with op.batch_alter_table("idempotency_record", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_record_created_at"))

    op.drop_table("idempotency_record")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_event_msp_created")
        batch_op.drop_index(batch_op.f("ix_audit_event_created_at"))

    op.drop_table("audit_event")
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_key_msp_id"))
        batch_op.drop_index(batch_op.f("ix_api_key_created_at"))

    op.drop_table("api_key")
    with op.batch_alter_table("stripe_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_event_created_at"))

    op.drop_table("stripe_event")
    with op.batch_alter_table("msp", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_msp_created_at"))

    op.drop_table("msp")
