from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import Base


class EnumerationSeen(Base):
    """An item a full enumeration (a first pass or a resync) of one collection has seen, kept
    until the pass ends and what it did not see is removed.

    In the database rather than in memory so that a worker's memory does not grow with the
    size of a mailbox or a drive; written in the same transaction as the page that saw it, so
    a pass resumed after a crash still knows what it saw.
    """

    __tablename__ = "enumeration_seen"

    snapshot_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("snapshot.id", ondelete="CASCADE"), primary_key=True
    )
    collection: Mapped[str] = mapped_column(String(500), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(500), primary_key=True)
