from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from safekeep.api.schemas import RequestSchema, Schema
from safekeep.tenants.models import AccountKind, AccountState


class AccountOut(Schema):
    id: uuid.UUID
    tenant_id: uuid.UUID
    kind: AccountKind
    graph_id: str
    display_name: str
    principal_name: str | None
    mail: str | None
    protected: bool
    state: AccountState
    licensed: bool
    account_enabled: bool
    services_found: dict[str, bool]
    last_seen_at: datetime | None
    cancelled_at: datetime | None
    cancel_reason: str | None
    last_backup_at: datetime | None = Field(
        description="When a backup of one of its services last finished (complete, or with "
        "some items skipped); null before its first. A service's own history is its "
        "snapshots (`GET /v1/tenants/{id}/snapshots?account_id=...`)"
    )
    least_recent_backup_at: datetime | None = Field(
        description="The oldest of the last backups of the services the seat is backed up "
        "for (its tenant's policy's services for its kind, less what discovery found it "
        "lacks); null while one of them has never finished. A seat whose mailbox stopped "
        "backing up while its OneDrive goes on shows when the mailbox last did. Find the "
        "seats whose backups stopped with `?protected=true&not_backed_up_since=...`"
    )
    created_at: datetime


class AccountDetail(AccountOut):
    """One account as its own read answers it: with each service's last backup (a list
    answers the oldest of them, ``least_recent_backup_at``)."""

    last_backups: dict[str, datetime] = Field(
        description="When each service's backup last finished, by service name "
        '(`{"mail": "...", "onedrive": "..."}`); a service never backed up is absent'
    )


class AccountUpdate(RequestSchema):
    protected: bool = Field(
        description="true: protect this seat; false: release it (its data is kept, as a "
        "retained seat)"
    )


class PurgeRequest(RequestSchema):
    confirm: str = Field(
        min_length=1,
        max_length=100,
        description="The account's id again: purging deletes its backed-up data for good",
    )
