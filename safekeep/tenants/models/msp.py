from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import Base, CreatedMixin, EnumText, IdMixin


class MspStatus(enum.StrEnum):
    active = "active"
    past_due = "past_due"  # Stripe says a payment failed; backups still run
    suspended = "suspended"  # backups pause, data stays


class Msp(IdMixin, CreatedMixin, Base):
    """A partner account: owns API keys, tenants, webhooks and a Stripe customer."""

    __tablename__ = "msp"

    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[MspStatus] = mapped_column(EnumText(MspStatus), default=MspStatus.active)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    billing_email: Mapped[str | None] = mapped_column(String(320))
    status_changed_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"Msp({self.id}, {self.name!r})"
