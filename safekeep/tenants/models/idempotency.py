from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import Base, CreatedMixin, IdMixin, JSONType


class IdempotencyRecord(IdMixin, CreatedMixin, Base):
    """An Idempotency-Key of an MSP and the creating POST it belongs to: claimed (no answer
    yet, ``status_code`` and ``body`` null) before the request runs, then holding the first
    answer, replayed for repeats. ``created_at`` is when the key was claimed."""

    __tablename__ = "idempotency_record"
    __table_args__ = (UniqueConstraint("msp_id", "key"),)

    msp_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("msp.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(1000))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None]
    body: Mapped[Any] = mapped_column(JSONType, nullable=True)

    @property
    def in_progress(self) -> bool:
        return self.status_code is None
