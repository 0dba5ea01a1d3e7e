from __future__ import annotations

import uuid
from typing import Literal

from pydantic import Field, model_validator

from safekeep.api.policy.schemas import Service
from safekeep.api.schemas import RequestSchema, Timestamp


class ScopeIn(RequestSchema):
    """What to restore or export."""

    type: Literal["items", "folders", "service", "account", "tenant"] = Field(
        description="items: chosen items; folders: chosen folders and all below; service: one "
        "account's service; account: every service of an account; tenant: every account"
    )
    account_id: uuid.UUID | None = None
    service: Service | None = None
    item_ids: list[uuid.UUID] = Field(default_factory=list, max_length=1000)


class PointIn(RequestSchema):
    scope: ScopeIn
    at: Timestamp | None = Field(
        default=None, description="As of this time (the newest backup at or before it)"
    )
    snapshot_id: uuid.UUID | None = Field(default=None, description="As of this snapshot")

    @model_validator(mode="after")
    def _one_point(self) -> PointIn:
        if self.at is not None and self.snapshot_id is not None:
            raise ValueError("give at or snapshot_id, not both")
        return self


class TargetIn(RequestSchema):
    account_id: uuid.UUID | None = Field(
        default=None, description="Another account of the same tenant; default: the original"
    )
    folder: Literal["original", "new"] = Field(
        default="original",
        description="original: back where it was; new: under a new 'Restored <date>' folder",
    )
    channels: Literal["import", "transcript"] = Field(
        default="import",
        description="Teams channel conversations (scope.service teams only). import: into the "
        "channel through Graph's import API; transcript: as an HTML transcript uploaded to the "
        "channel's files",
    )


class RestoreRequest(PointIn):
    target: TargetIn = Field(default_factory=TargetIn)
    conflict: Literal["skip", "overwrite", "keep_both"] = Field(
        default="skip", description="When the item still exists in the target"
    )
