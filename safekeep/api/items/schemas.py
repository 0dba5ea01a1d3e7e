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


EXTERNAL_ID = (
    "The item's id in Microsoft 365 (the Graph id: an immutable message, event or contact id, "
    "a driveItem id, or for list items `<list id>:<item id>`), to correlate with what Microsoft "
    "365 shows"
)
FOLDER_PATH = "The path of the folder the item was in, e.g. `/Inbox/Projects` (`/` at the top)"


class ItemOut(Schema):
    id: uuid.UUID = Field(description="The item (stable across versions)")
    external_id: str = Field(description=EXTERNAL_ID)
    folder_path: str = Field(description=FOLDER_PATH)
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
    folder_path: str = Field(description=FOLDER_PATH + ", when this version was backed up")
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
    external_id: str = Field(description=EXTERNAL_ID)
    service: str
    kind: str
    versions: list[VersionOut] = Field(description="A page of versions, newest first")
    next_cursor: str | None
