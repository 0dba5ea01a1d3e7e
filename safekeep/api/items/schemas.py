from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from safekeep.api.schemas import Schema


class SnapshotRef(Schema):
    id: uuid.UUID
    seq: int
    started_at: datetime
    completed_at: datetime | None


class ItemOut(Schema):
    id: uuid.UUID = Field(description="The item (stable across versions)")
    version_id: uuid.UUID
    kind: str
    name: str
    is_folder: bool
    size: int
    modified_at: datetime | None
    meta: dict[str, Any]
    valid_from: datetime
    valid_to: datetime | None
    links: dict[str, str]


class ItemListing(Schema):
    snapshot: SnapshotRef
    service: str
    folder: ItemOut | None = Field(description="The folder listed; null at the root")
    items: list[ItemOut]
    next_cursor: str | None


class VersionOut(Schema):
    id: uuid.UUID
    first_seq: int
    last_seq: int | None = Field(description="null: still the current version")
    valid_from: datetime
    valid_to: datetime | None
    name: str
    size: int
    modified_at: datetime | None
    content_sha256: str | None
    meta: dict[str, Any]


class ItemVersions(Schema):
    item_id: uuid.UUID
    service: str
    kind: str
    versions: list[VersionOut]
