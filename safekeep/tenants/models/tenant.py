from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import Base, CreatedMixin, EnumText, IdMixin, page_index, utcnow


class ConsentState(enum.StrEnum):
    pending = "pending"  # created, admin consent not given yet
    granted = "granted"
    denied = "denied"  # the client's admin refused
    revoked = "revoked"  # was granted; Entra now refuses our tokens


class TenantStatus(enum.StrEnum):
    active = "active"
    deleted = "deleted"  # no more backups; data kept until purged by retention or request


class Tenant(IdMixin, CreatedMixin, Base):
    """A client Microsoft 365 organisation of an MSP."""

    __tablename__ = "tenant"
    __table_args__ = (
        Index("ix_tenant_due", "status", "next_backup_at"),
        page_index("tenant", "msp_id"),
        # One directory, one owner: a Microsoft 365 directory is bound to at most one live
        # tenant in the deployment (a deleted tenant keeps its id for the record).
        Index(
            "uq_tenant_entra_directory",
            "entra_tenant_id",
            unique=True,
            postgresql_where=text("status <> 'deleted' AND entra_tenant_id IS NOT NULL"),
            sqlite_where=text("status <> 'deleted' AND entra_tenant_id IS NOT NULL"),
        ),
    )

    msp_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("msp.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[TenantStatus] = mapped_column(
        EnumText(TenantStatus), default=TenantStatus.active
    )
    # Domain or GUID the MSP gave, to aim the sign-in at; the directory bound is the `tid` of
    # the ID token Entra signed for the client's admin (never a query parameter).
    requested_domain: Mapped[str | None] = mapped_column(String(255))
    entra_tenant_id: Mapped[str | None] = mapped_column(String(64), index=True)
    consent_state: Mapped[ConsentState] = mapped_column(
        EnumText(ConsentState), default=ConsentState.pending
    )
    consent_changed_at: Mapped[datetime | None]
    consent_error: Mapped[str | None] = mapped_column(String(1000))
    # An MSP may bring its own multi-tenant Entra app instead of the deployment's.
    app_client_id: Mapped[str | None] = mapped_column(String(64))
    app_client_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The per-tenant data key, wrapped by the master key; blobs live under storage_prefix.
    wrapped_data_key: Mapped[bytes] = mapped_column(LargeBinary)
    storage_prefix: Mapped[str] = mapped_column(String(200))
    next_backup_at: Mapped[datetime | None]
    last_backup_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None]
