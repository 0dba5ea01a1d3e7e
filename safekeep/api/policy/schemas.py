from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from safekeep.api.schemas import Schema

Service = Literal["mail", "calendar", "contacts", "onedrive", "sharepoint"]
ALL: tuple[Service, ...] = ("mail", "calendar", "contacts", "onedrive", "sharepoint")


class PolicyIn(Schema):
    services: list[Service] = Field(
        default_factory=lambda: list(ALL),
        min_length=1,
        max_length=5,
    )
    backups_per_day: int = Field(default=3, ge=1, le=24)
    retention_days: int | None = Field(
        default=None, ge=1, le=36500, description="null: keep forever"
    )
    auto_protect: bool = Field(default=True, description="Protect new licensed users when found")
    include_deleted_items: bool = True
    include_junk: bool = False
    include_recoverable_items: bool = False
    rpo_minutes: int | None = Field(
        default=None,
        ge=5,
        le=720,
        description="Continuous protection: Graph change notifications start an incremental "
        "backup so that a change is backed up within this many minutes; the schedule stays as "
        "the safety net. null: scheduled backups only",
    )

    @field_validator("services")
    @classmethod
    def _unique(cls, value: list[Service]) -> list[Service]:
        if len(set(value)) != len(value):
            raise ValueError("services must not repeat")
        return value


class PolicyOut(PolicyIn):
    pass
