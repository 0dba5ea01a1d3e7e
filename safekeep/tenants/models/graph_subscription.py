from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import (
    AccountServiceMixin,
    Base,
    EnumText,
    IdMixin,
    page_index,
    utcnow,
)


class SubscriptionStatus(enum.StrEnum):
    pending = "pending"  # wanted, not created at Graph yet
    active = "active"  # Graph notifies us; renewed before ``expires_at``
    failed = "failed"  # Graph refused; tried again at ``next_action_at``
    removed = "removed"  # Graph dropped it (lifecycle ``subscriptionRemoved``): re-create


class GraphSubscription(IdMixin, AccountServiceMixin, Base):
    """One Microsoft Graph change-notification subscription: one account, service and
    resource (most services have one resource per account; a site has one per library and
    per list).

    A notification never carries data we trust; it only sets ``dirty_since``, and the
    scheduler turns dirty rows into one incremental backup per tenant per debounce window.
    The ``clientState`` secret is kept only as its SHA-256: Graph echoes it, we compare.
    """

    __tablename__ = "graph_subscription"
    __table_args__ = (
        UniqueConstraint("account_id", "service", "resource"),
        page_index("graph_subscription", "tenant_id"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    resource: Mapped[str] = mapped_column(String(500))
    subscription_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    client_state_hash: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[SubscriptionStatus] = mapped_column(
        EnumText(SubscriptionStatus), default=SubscriptionStatus.pending
    )
    expires_at: Mapped[datetime | None]
    # When the engine should look at it again: renewal, a retry, a re-creation.
    next_action_at: Mapped[datetime | None] = mapped_column(index=True)
    dirty_since: Mapped[datetime | None] = mapped_column(index=True)
    last_notification_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
