from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import Base, EnumText, IdMixin, JSONType, page_index, utcnow


class DetectionKind(enum.StrEnum):
    ransomware = "ransomware"
    mass_deletion = "mass_deletion"


class DetectionStatus(enum.StrEnum):
    open = "open"  # raised; the account's clean versions are held
    acknowledged = "acknowledged"  # an operator has seen it; still held
    released = "released"  # hold lifted: retention applies again


class Detection(IdMixin, Base):
    """A suspected ransomware run or mass deletion on one account and service.

    While it is not released, retention keeps every version of the account (the clean ones
    the attack superseded above all), and ``last_clean_snapshot_id`` is what a one-call
    restore goes back to.
    """

    __tablename__ = "detection"
    __table_args__ = (page_index("detection", "tenant_id"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), index=True
    )
    service: Mapped[str] = mapped_column(String(20))
    kind: Mapped[DetectionKind] = mapped_column(EnumText(DetectionKind))
    status: Mapped[DetectionStatus] = mapped_column(
        EnumText(DetectionStatus), default=DetectionStatus.open
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)  # detected at
    first_suspicious_at: Mapped[datetime]
    snapshot_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("snapshot.id", ondelete="SET NULL")
    )
    last_clean_snapshot_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("snapshot.id", ondelete="SET NULL")
    )
    last_clean_at: Mapped[datetime | None]
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    released_at: Mapped[datetime | None]
    released_by: Mapped[str | None] = mapped_column(String(200))


class DetectionBaseline(Base):
    """An account and service's own normal: running mean and spread (Welford) of what its
    incrementals see, from runs that raised nothing, so an attack never becomes normal."""

    __tablename__ = "detection_baseline"

    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), primary_key=True
    )
    service: Mapped[str] = mapped_column(String(20), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenant.id", ondelete="CASCADE"), index=True
    )
    runs: Mapped[int] = mapped_column(default=0)
    suspicious_mean: Mapped[float] = mapped_column(default=0.0)
    suspicious_m2: Mapped[float] = mapped_column(default=0.0)
    deleted_mean: Mapped[float] = mapped_column(default=0.0)
    deleted_m2: Mapped[float] = mapped_column(default=0.0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DetectionThreshold(Base):
    """A tenant's own detection thresholds; without a row the deployment's settings apply."""

    __tablename__ = "detection_threshold"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True
    )
    min_files: Mapped[int]
    min_deletions: Mapped[int]
    sigmas: Mapped[float]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
