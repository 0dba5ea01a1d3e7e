from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import Base, CreatedMixin, EnumText, IdMixin, JSONType, page_index


class WebhookEndpoint(IdMixin, CreatedMixin, Base):
    __tablename__ = "webhook_endpoint"
    __table_args__ = (page_index("webhook_endpoint", "msp_id"),)

    msp_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("msp.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(JSONType)
    description: Mapped[str | None] = mapped_column(String(500))
    secret_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    # The secret a rotation replaced, sealed as ``secret_sealed`` is (the same context):
    # deliveries are signed with both until ``previous_secret_expires_at``, so a receiver
    # can switch to the new secret without refusing a delivery in between.
    previous_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_expires_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]


class DeliveryStatus(enum.StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"  # gave up after the last retry


# A pending delivery, as SQL text: the partial index's predicate, repeated word for word by
# the scheduler's read of them (SQLite uses a partial index only for its own terms).
PENDING_DELIVERY_SQL = "status = 'pending'"


class WebhookDelivery(IdMixin, CreatedMixin, Base):
    """One event sent (or being sent) to one endpoint, with its attempts."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        page_index("webhook_delivery", "endpoint_id"),
        # The scheduler's read of every MSP's pending deliveries each tick, for those whose
        # message may be lost (the sweep past retention reads created_at's own index).
        Index(
            "ix_webhook_delivery_pending",
            "next_attempt_at",
            postgresql_where=text(PENDING_DELIVERY_SQL),
            sqlite_where=text(PENDING_DELIVERY_SQL),
        ),
    )

    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoint.id", ondelete="CASCADE")
    )
    msp_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("msp.id", ondelete="CASCADE"))
    event_id: Mapped[uuid.UUID]
    event_type: Mapped[str] = mapped_column(String(60))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[DeliveryStatus] = mapped_column(
        EnumText(DeliveryStatus), default=DeliveryStatus.pending
    )
    attempts: Mapped[int] = mapped_column(default=0)
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
