"""An Idempotency-Key is claimed before its request runs: ``idempotency_record`` holds the
claim (``status_code`` and ``body`` null) under its unique ``(msp_id, key)`` until the answer
replaces it, so that a concurrent request with the same key finds it taken.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-08 01:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BODY = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("idempotency_record") as batch:
        batch.alter_column("status_code", existing_type=sa.Integer(), nullable=True)
        batch.alter_column("body", existing_type=_BODY, nullable=True)


def downgrade() -> None:
    # Claims of requests still running have no answer to keep.
    op.execute("DELETE FROM idempotency_record WHERE status_code IS NULL OR body IS NULL")
    with op.batch_alter_table("idempotency_record") as batch:
        batch.alter_column("body", existing_type=_BODY, nullable=False)
        batch.alter_column("status_code", existing_type=sa.Integer(), nullable=False)
