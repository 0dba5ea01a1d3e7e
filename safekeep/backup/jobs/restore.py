"""Restore jobs: items, folders, an account's service, an account or a whole tenant, as of a
point in time, into the original account or another, in place or under a new folder."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from safekeep.backup.context import graph_client, open_repository
from safekeep.backup.jobs.lifecycle import JobFailed, JobOutcome, run_job
from safekeep.backup.restore.report import JobRestoreReport
from safekeep.backup.selection import Scope, Unit, build_selection, resolve_units
from safekeep.backup.services import module_for
from safekeep.backup.services.base import ChannelMode, ConflictRule, FolderMode, RestoreContext
from safekeep.runtime import Runtime, unit_of_work
from safekeep.tenants.account import repository as account_repository
from safekeep.tenants.job import repository as job_repository
from safekeep.tenants.models import Account, AccountState, Job, Tenant, utcnow
from safekeep.tenants.scope import TenantScope
from safekeep.tenants.tenant.service import system_scope

UNIT_CONCURRENCY = 4


# Keys of the job's result fixed by its first attempt, before it writes anything.
FIRST_ATTEMPT_AT = "first_attempt_at"
FOLDER_NAME = "folder_name"  # the new folder's name (folder mode "new")


def restored_folder_name(now: datetime) -> str:
    return f"Restored {now:%Y-%m-%d %H-%M}"


@dataclass(frozen=True)
class Fixed:
    """What a restore job decides once, at its first attempt, for all of them."""

    folder_name: str  # "Restored <when the first attempt began>"
    retry: bool  # an earlier attempt began: it may have written some items


async def fix_identity(runtime: Runtime, job: Job, *, new_folder: bool) -> Fixed:
    """The job's new folder name, decided once: by its first attempt, from the clock, and
    saved in the job's result before anything is written, so that every later attempt (a lost
    worker's job sent again, a retry after a blip) writes into the same folder and finds there
    what the earlier attempts restored instead of starting a second folder. Whether an
    earlier attempt began is read from the same record (the attempt counter is not that:
    a blip gives its attempt back)."""
    async with unit_of_work(runtime) as session:
        row = await job_repository.get_system(session, job.id)
        if row is None:
            raise JobFailed("job_gone", "The job no longer exists")
        began = row.result.get(FIRST_ATTEMPT_AT)
        retry = isinstance(began, str) and bool(began)
        if not retry:
            began = utcnow().isoformat()
            fixed = {FIRST_ATTEMPT_AT: began}
            if new_folder:
                fixed[FOLDER_NAME] = restored_folder_name(datetime.fromisoformat(began))
            row.result = {**row.result, **fixed}
        result = dict(row.result)
    job.result = {
        **job.result,
        **{k: result[k] for k in (FIRST_ATTEMPT_AT, FOLDER_NAME) if k in result},
    }
    name = result.get(FOLDER_NAME) or restored_folder_name(datetime.fromisoformat(str(began)))
    return Fixed(folder_name=str(name), retry=retry)


async def run_restore_job(runtime: Runtime, job_id: str) -> None:
    await run_job(runtime, job_id, restore)


async def restore(runtime: Runtime, job: Job, tenant: Tenant) -> JobOutcome:
    params = job.params
    tenant_scope = system_scope(tenant)
    scope = Scope.from_params(params)
    target_id = params.get("target", {}).get("account_id")
    units = await resolve_units(runtime, tenant_scope, tenant, scope)
    if not units:
        raise JobFailed("nothing_to_restore", "No backup exists for that scope and point in time")
    target: Account | None = None
    if target_id:
        async with unit_of_work(runtime) as session:
            target = await account_repository.get(
                session, tenant_scope, tenant.id, uuid.UUID(target_id)
            )
        if target is None or target.state != AccountState.active:
            raise JobFailed(
                "target_not_found", "The target account does not exist or is not active"
            )
    # Accounts are restored side by side (each still within Microsoft's per-mailbox limits,
    # which the Graph client enforces); one "Restored <date>" name serves the whole job, and
    # every attempt of it.
    folder_mode = params.get("target", {}).get("folder", "original")
    fixed = await fix_identity(runtime, job, new_folder=folder_mode == "new")
    slots = asyncio.Semaphore(UNIT_CONCURRENCY)

    async def one(unit: Unit) -> dict[str, Any]:
        async with slots:
            report = await restore_unit(
                runtime,
                tenant,
                tenant_scope,
                unit,
                scope,
                target=target or unit.account,
                folder_mode=folder_mode,
                channels=params.get("target", {}).get("channels", "import"),
                conflict=params.get("conflict", "skip"),
                job_id=job.id,
                folder_name=fixed.folder_name,
                retry=fixed.retry,
            )
            return report.summary()

    reports = list(await asyncio.gather(*(one(unit) for unit in units)))
    totals = {
        k: sum(r[k] for r in reports)
        for k in ("restored", "skipped_existing", "skipped", "failed", "noted", "bytes", "observed")
    }
    # Succeeded when every item in scope is in the target as asked (restored, or already
    # there and left alone); partial only when some item is not, each one in the issues.
    partial = bool(totals["failed"] or totals["skipped"])
    return JobOutcome(
        result={"totals": totals, "units": reports},
        partial=partial,
        event=(
            "restore.completed",
            {"status": "partial" if partial else "succeeded", "totals": totals},
        ),
    )


async def restore_unit(
    runtime: Runtime,
    tenant: Tenant,
    tenant_scope: TenantScope,
    unit: Unit,
    scope: Scope,
    *,
    target: Account,
    folder_mode: FolderMode,
    conflict: ConflictRule,
    channels: ChannelMode = "import",
    job_id: uuid.UUID | None = None,
    folder_name: str | None = None,
    retry: bool = False,
) -> JobRestoreReport:
    """Restore one account and service (tests call this directly). ``folder_name``: the new
    folder's name, fixed for the job (made from the clock when not given)."""
    module = module_for(unit.service)
    selection = await build_selection(runtime, tenant_scope, unit, scope)
    report = JobRestoreReport(runtime, job_id, unit.account.id, unit.service)
    repo = await open_repository(runtime, tenant)
    async with graph_client(runtime, tenant) as graph:
        ctx = RestoreContext(
            runtime=runtime,
            tenant=tenant,
            graph=graph,
            repo=repo,
            service=unit.service,
            source=unit.account,
            target=target,
            at=unit.snapshot.completed_at or unit.snapshot.started_at,
            at_seq=unit.snapshot.seq,
            folder_mode=folder_mode,
            new_folder_name=folder_name or restored_folder_name(utcnow()),
            conflict=conflict,
            report=report,
            channels=channels,
            job_id=job_id,
            retry=retry,
        )
        await module.restore(ctx, selection)
    return report
