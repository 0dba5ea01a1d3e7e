"""Page indexes: every list route's scope column, then its page order (created_at or
started_at, id), so a page is read in order from the index instead of sorting every row of
the scope (a tenant's year of snapshots). They replace the scope column's own index, or its
(scope, created_at) index, which they cover.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 17:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from safekeep.migrate import create_index, drop_index

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, scope column, page order column, the index it replaces and that index's columns)
PAGES: list[tuple[str, str, str, tuple[str, list[str]] | None]] = [
    ("tenant", "msp_id", "created_at", ("ix_tenant_msp_id", ["msp_id"])),
    ("account", "tenant_id", "created_at", ("ix_account_tenant_id", ["tenant_id"])),
    ("job", "tenant_id", "created_at", ("ix_job_tenant_created", ["tenant_id", "created_at"])),
    ("snapshot", "tenant_id", "started_at", None),
    (
        "detection",
        "tenant_id",
        "created_at",
        ("ix_detection_tenant_created", ["tenant_id", "created_at"]),
    ),
    ("export", "tenant_id", "created_at", ("ix_export_tenant_id", ["tenant_id"])),
    (
        "audit_event",
        "msp_id",
        "created_at",
        ("ix_audit_event_msp_created", ["msp_id", "created_at"]),
    ),
    ("api_key", "msp_id", "created_at", ("ix_api_key_msp_id", ["msp_id"])),
    ("webhook_endpoint", "msp_id", "created_at", ("ix_webhook_endpoint_msp_id", ["msp_id"])),
    (
        "webhook_delivery",
        "endpoint_id",
        "created_at",
        ("ix_webhook_delivery_endpoint", ["endpoint_id", "created_at"]),
    ),
]


def _name(table: str, scope: str) -> str:
    return f"ix_{table}_{scope.removesuffix('_id')}_page"


def upgrade() -> None:
    for table, scope, newest_by, replaced in PAGES:
        create_index(_name(table, scope), table, [scope, newest_by, "id"])
        if replaced is not None:
            drop_index(replaced[0], table)


def downgrade() -> None:
    for table, scope, _newest_by, replaced in reversed(PAGES):
        if replaced is not None:
            create_index(replaced[0], table, replaced[1])
        drop_index(_name(table, scope), table)
