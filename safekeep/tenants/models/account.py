from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import (
    Base,
    CreatedMixin,
    EnumText,
    IdMixin,
    InstantsByName,
    JSONType,
    page_index,
)


class AccountKind(enum.StrEnum):
    user = "user"
    site = "site"


class AccountState(enum.StrEnum):
    active = "active"
    cancelled = "cancelled"  # licence gone or seat released: data kept, billed as retained
    purged = "purged"  # data deleted after retention or on an audited request


class Account(IdMixin, CreatedMixin, Base):
    """A protected resource (a seat): a user's mailbox/calendar/contacts/OneDrive, or a site."""

    __tablename__ = "account"
    __table_args__ = (
        UniqueConstraint("tenant_id", "kind", "graph_id"),
        page_index("account", "tenant_id"),
        page_index("account", "msp_id"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    # The tenant's MSP (a tenant never changes MSP): the MSP-wide list of seats pages along it.
    msp_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("msp.id", ondelete="CASCADE"))
    kind: Mapped[AccountKind] = mapped_column(EnumText(AccountKind))
    graph_id: Mapped[str] = mapped_column(String(300))
    display_name: Mapped[str] = mapped_column(String(300))
    # userPrincipalName for users, webUrl for sites
    principal_name: Mapped[str | None] = mapped_column(String(500))
    mail: Mapped[str | None] = mapped_column(String(320))
    protected: Mapped[bool] = mapped_column(default=False)
    state: Mapped[AccountState] = mapped_column(EnumText(AccountState), default=AccountState.active)
    licensed: Mapped[bool] = mapped_column(default=True)
    account_enabled: Mapped[bool] = mapped_column(default=True)
    sku_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # What discovery found: {"mail": true, "onedrive": false, ...}
    services_found: Mapped[dict[str, bool]] = mapped_column(JSONType, default=dict)
    last_seen_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    cancel_reason: Mapped[str | None] = mapped_column(String(40))
    purged_at: Mapped[datetime | None]
    # ``bytes_added`` summed over the account's snapshots, grown as each snapshot finishes
    # (``catalog.finish_snapshot``) and zeroed with its catalog: usage reads a tenant's stored
    # bytes from its accounts instead of summing a history of snapshots on every request.
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # When a backup of one of its services last finished (its snapshot complete, or partial:
    # some items skipped), set as each snapshot finishes and cleared with its catalog: how a
    # portal finds the seats whose backups have stopped without reading their snapshots.
    last_backup_at: Mapped[datetime | None]
    # When each service's backup last finished ({"mail": <datetime>, ...}, kept as ISO 8601
    # text), and the oldest of those among the services the account is backed up for (its
    # kind's, its tenant's policy's, less what discovery found it lacks; None while one has
    # never finished): a seat whose mailbox stopped while its OneDrive goes on has stopped too.
    last_backups: Mapped[dict[str, datetime]] = mapped_column(
        InstantsByName, default=dict, server_default="{}"
    )
    least_recent_backup_at: Mapped[datetime | None]
