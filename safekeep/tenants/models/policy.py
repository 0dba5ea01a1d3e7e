from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from safekeep import registry
from safekeep.tenants.models.base import Base, JSONType


def _all_services() -> list[str]:
    """A new tenant's policy protects every declared service that is on by default."""
    return list(registry.defaults())


class Policy(Base):
    """How one tenant is backed up. One row per tenant."""

    __tablename__ = "policy"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True
    )
    services: Mapped[list[str]] = mapped_column(JSONType, default=_all_services)
    backups_per_day: Mapped[int] = mapped_column(default=3)
    retention_days: Mapped[int | None] = mapped_column(default=None)  # None: keep forever
    auto_protect: Mapped[bool] = mapped_column(default=True)
    include_deleted_items: Mapped[bool] = mapped_column(default=True)
    include_junk: Mapped[bool] = mapped_column(default=False)
    include_recoverable_items: Mapped[bool] = mapped_column(default=False)
    # Change-driven backups: Graph notifications start an incremental within this many
    # minutes; None leaves the tenant on its schedule alone.
    rpo_minutes: Mapped[int | None] = mapped_column(default=None)
