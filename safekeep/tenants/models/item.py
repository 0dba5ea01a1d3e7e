from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import AccountServiceMixin, Base, CreatedMixin, IdMixin


class Item(IdMixin, CreatedMixin, AccountServiceMixin, Base):
    """The stable identity of one backed-up thing (a message, folder, file, event, contact,
    list item) in one account and service; its states over time are ``item_version`` rows."""

    __tablename__ = "item"
    __table_args__ = (UniqueConstraint("account_id", "service", "external_id"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenant.id", ondelete="CASCADE"), index=True
    )
    external_id: Mapped[str] = mapped_column(String(500))  # the Graph id (immutable where we can)
    kind: Mapped[str] = mapped_column(String(20))
