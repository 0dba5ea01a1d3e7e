from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Date, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import Base, CreatedMixin, IdMixin, JSONType


class StripeEvent(CreatedMixin, Base):
    """Webhook inbox: each Stripe event is stored once (its id is the key) and handled once."""

    __tablename__ = "stripe_event"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    handled_at: Mapped[datetime | None]


class UsageReport(IdMixin, CreatedMixin, Base):
    """Seats of one MSP on one day, as counted and as sent to Stripe (once per day)."""

    __tablename__ = "usage_report"
    __table_args__ = (UniqueConstraint("msp_id", "day"),)

    msp_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("msp.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)
    protected_seats: Mapped[int]
    retained_seats: Mapped[int]
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    reported_at: Mapped[datetime | None]
    stripe_ids: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
