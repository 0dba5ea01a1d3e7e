"""The restore job's report: counters on the job, one issue row per item not restored and
per thing observed in the target (such as ransomware-encrypted copies).

Items already in the target and left alone by the caller's conflict rule are counted apart
(``skipped_existing``): they are in the target as asked, so they never make a job partial.
Only items that are not in the target afterwards (``failed``, or ``skipped`` because
something else is in their place) do, each with an issue row naming the reason. An item
restored with a caveat (attendees not invited, fields the target lacked, a file whose changed
copy it replaced) is ``restored`` and counted ``noted`` too, with an issue row
(``restored_with_note``) that says what; it does not make a job partial."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from safekeep.runtime import Runtime, unit_of_work
from safekeep.tenants.models import ItemVersion, JobIssue

OBSERVED_IN_RESULT = 100
NOTED = "restored_with_note"  # the issue code of an item restored with a caveat


@dataclass
class JobRestoreReport:
    runtime: Runtime
    job_id: uuid.UUID | None
    account_id: uuid.UUID
    service: str
    restored_count: int = 0
    existing_count: int = 0
    skipped_count: int = 0
    failed_count: int = 0
    noted_count: int = 0
    bytes: int = 0
    observed_list: list[dict[str, str]] = field(default_factory=list)
    observed_count: int = 0

    async def _issue(self, *, ref: str | None, name: str | None, code: str, detail: str) -> None:
        if self.job_id is None:
            return
        async with unit_of_work(self.runtime) as session:
            session.add(
                JobIssue(
                    job_id=self.job_id,
                    account_id=self.account_id,
                    service=self.service,
                    item_ref=ref,
                    item_name=(name or "")[:500] or None,
                    code=code[:60],
                    detail=detail[:4000],
                )
            )

    async def restored(
        self, version: ItemVersion, *, target_id: str | None, note: str | None = None
    ) -> None:
        self.restored_count += 1
        self.bytes += version.size
        if note:
            self.noted_count += 1
            await self._issue(ref=str(version.item_id), name=version.name, code=NOTED, detail=note)

    async def existing(self, version: ItemVersion, *, target_id: str | None) -> None:
        self.existing_count += 1

    async def skipped(self, version: ItemVersion, *, reason: str) -> None:
        self.skipped_count += 1
        await self._issue(
            ref=str(version.item_id), name=version.name, code="skipped", detail=reason
        )

    async def failed(self, version: ItemVersion, *, code: str, detail: str) -> None:
        self.failed_count += 1
        await self._issue(ref=str(version.item_id), name=version.name, code=code, detail=detail)

    async def observed(self, *, code: str, name: str, detail: str) -> None:
        self.observed_count += 1
        if len(self.observed_list) < OBSERVED_IN_RESULT:
            self.observed_list.append({"code": code, "name": name, "detail": detail})
        await self._issue(ref=None, name=name, code=code, detail=detail)

    def summary(self) -> dict[str, Any]:
        return {
            "account_id": str(self.account_id),
            "service": self.service,
            "restored": self.restored_count,
            "skipped_existing": self.existing_count,
            "skipped": self.skipped_count,
            "failed": self.failed_count,
            "noted": self.noted_count,
            "bytes": self.bytes,
            "observed": self.observed_count,
            "observed_items": self.observed_list,
        }
