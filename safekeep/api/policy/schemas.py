"""The backup policy as the API reads and writes it. The services and each service's switches
come from the registry (safekeep/registry.py): a new service appears here by being declared."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, create_model, field_validator

from safekeep import registry
from safekeep.api.schemas import RequestSchema

if TYPE_CHECKING:
    Service = str
else:
    Service = Literal[registry.names()]
ALL: tuple[Service, ...] = registry.names()


def described() -> str:
    """The services in words, for parameter descriptions ("mail, ... or sharepoint")."""
    *rest, last = registry.names()
    return f"{', '.join(rest)} or {last}" if rest else last


class _Policy(RequestSchema):
    services: list[Service] = Field(
        default_factory=lambda: list(registry.defaults()),
        min_length=1,
        max_length=len(ALL),
    )
    backups_per_day: int = Field(default=3, ge=1, le=24)
    retention_days: int | None = Field(
        default=None, ge=1, le=36500, description="null: keep forever"
    )
    auto_protect: bool = Field(default=True, description="Protect new licensed users when found")
    rpo_minutes: int | None = Field(
        default=None,
        ge=5,
        le=720,
        description="Continuous protection: Graph change notifications start an incremental "
        "backup so that a change is backed up within this many minutes; the schedule stays as "
        "the safety net. Accounts dirty for close to this long are backed up even inside the "
        "notification debounce window. It must be at least the deployment's scheduler interval "
        "plus its notification debounce plus 2 minutes for the incremental itself, in whole "
        "minutes rounded up (5 with the default 60 s and 30 s); a smaller value is refused "
        "with 422. null: scheduled backups only",
    )

    @field_validator("services")
    @classmethod
    def _unique(cls, value: list[Service]) -> list[Service]:
        if len(set(value)) != len(value):
            raise ValueError("services must not repeat")
        return value


# Each service's yes/no switches (mail's include_junk, ...), as declared.
_SWITCHES: dict[str, Any] = {s.name: (bool, s.default) for s in registry.switches()}

if TYPE_CHECKING:
    PolicyIn = _Policy
else:
    PolicyIn = create_model("PolicyIn", __base__=_Policy, __module__=__name__, **_SWITCHES)


class PolicyOut(PolicyIn):
    pass
