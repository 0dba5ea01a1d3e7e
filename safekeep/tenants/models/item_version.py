from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    ColumnExpressionArgument,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    func,
    literal_column,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from safekeep.tenants.models.base import AccountServiceMixin, Base, CreatedMixin, IdMixin, JSONType


class ItemVersion(IdMixin, CreatedMixin, AccountServiceMixin, Base):
    """One state of one item, valid from snapshot ``first_seq`` to ``last_seq`` (inclusive;
    NULL while it is still the current state). The view of an account and service at snapshot
    S is every version with ``first_seq <= S <= coalesce(last_seq, S)``: an unchanged item
    costs nothing per snapshot."""

    __tablename__ = "item_version"
    __table_args__ = (
        UniqueConstraint("item_id", "first_seq"),
        Index("ix_item_version_open", "account_id", "service", "last_seq"),
        # A tenant's versions in id order: the daily retention sweep and the blob collector's
        # mark phase walk them in batches, each starting where the last one ended.
        Index("ix_item_version_tenant", "tenant_id", "id"),
        # An account's state in item order: restore and export page through it
        # (``catalog.versions_at``), each page starting after the last one's item.
        Index("ix_item_version_state", "account_id", "service", "item_id"),
        # The search index's backlog, oldest first: versions whose documents are not known to
        # be indexed (the scheduler sends old ones again; the fleet metrics count them).
        Index(
            "ix_item_version_unindexed",
            "valid_from",
            postgresql_where=text("indexed IS false"),
            sqlite_where=text("indexed IS false"),
        ),
    )

    item_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("item.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    first_seq: Mapped[int]
    last_seq: Mapped[int | None]
    valid_from: Mapped[datetime]  # when the snapshot first_seq started
    valid_to: Mapped[datetime | None]  # when the snapshot that ended it started
    parent_external_id: Mapped[str | None] = mapped_column(String(500))
    name: Mapped[str] = mapped_column(String(1000), default="")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    modified_at: Mapped[datetime | None]
    change_key: Mapped[str | None] = mapped_column(String(500))  # changeKey / cTag / eTag
    content_hash: Mapped[str | None] = mapped_column(String(128))  # sha256 of `content`
    # Where the bytes are (storage ContentRef JSON): MIME / file / ICS or VCF source document.
    content: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # The Graph JSON document needed to restore it faithfully (with attachments), as a blob.
    document: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Other blobs the version depends on (attachments or photos referenced from its document):
    # listed here so the blob garbage collector never has to open documents to find them.
    refs: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # Small metadata for browsing: sender, dates, flags, hashes, path at capture time...
    meta: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    indexed: Mapped[bool] = mapped_column(default=False)


# Browse lists a folder's children by name. A whole name (up to 1,000 characters, up to 4,000
# bytes) can be longer than a PostgreSQL B-tree entry may be (about 2,700 bytes), so the
# index keys the first NAME_KEY_CHARS characters, then the item: children are listed in that
# order (names alike in their first 200 characters by item), read from the index, never sorted.
NAME_KEY_CHARS = 200


def name_key(name: ColumnExpressionArgument[str]) -> ColumnElement[str]:
    """The browse order's key of a name, as the index holds it (constants written into the
    SQL, so that the planner matches the index's expression)."""
    return func.substr(name, literal_column("1"), literal_column(str(NAME_KEY_CHARS)))


Index(
    "ix_item_version_children",
    ItemVersion.account_id,
    ItemVersion.service,
    ItemVersion.parent_external_id,
    name_key(ItemVersion.name),
    ItemVersion.item_id,
)
