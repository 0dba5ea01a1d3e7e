from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from safekeep.api.policy.schemas import Service
from safekeep.api.schemas import RequestSchema, Schema


class DetectionOut(Schema):
    """A suspected ransomware run or mass deletion on one account and service, with its
    evidence. Until released, retention keeps every version of the account."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    account_id: uuid.UUID
    service: Service
    kind: Literal["ransomware", "mass_deletion"]
    status: Literal["open", "acknowledged", "released"]
    detected_at: datetime = Field(validation_alias="created_at")
    first_suspicious_at: datetime
    snapshot_id: uuid.UUID | None = Field(description="The snapshot that showed it")
    last_clean_snapshot_id: uuid.UUID | None = Field(
        description="The newest backup before it: what the restore call goes back to"
    )
    last_clean_at: datetime | None
    evidence: dict[str, Any] = Field(
        description="Counts that crossed the threshold (suspicious files, renames, extension "
        "changes, encrypted-looking new versions, ransom notes, deletions), the threshold, "
        "sample names"
    )
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    released_at: datetime | None
    released_by: str | None


class ThresholdsIn(RequestSchema):
    """When an incremental raises a detection for this tenant's accounts: its suspicious
    files (deletions) reach the account's own mean plus ``sigmas`` standard deviations, and
    at least the floor."""

    min_files: int = Field(ge=1, le=100_000, description="Floor of suspicious files per run")
    min_deletions: int = Field(ge=1, le=1_000_000, description="Floor of deletions per run")
    sigmas: float = Field(ge=1, le=20, description="Spread above the account's own mean")


class ThresholdsOut(ThresholdsIn):
    source: Literal["tenant", "deployment"] = Field(
        description="tenant: set for this tenant; deployment: the SAFEKEEP_DETECTION_* defaults"
    )
