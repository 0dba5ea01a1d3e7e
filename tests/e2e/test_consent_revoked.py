"""When the client's admin withdraws consent, the next backup says so (a reason an MSP can act
on), the tenant is marked revoked and subscribed webhooks hear about it, once."""

from __future__ import annotations

from sqlalchemy import select

from safekeep.backup.jobs.backup import run_backup_task, start_backup_job
from safekeep.tenants.models import Job, JobKind, JobTask, WebhookDelivery
from tests.backup.harness import EngineHarness
from tests.factories import create_webhook


async def run_backup(h: EngineHarness) -> Job:
    job = await h.start_job(JobKind.backup)
    await start_backup_job(h.runtime, str(job.id))
    async with h.runtime.db.session() as session:
        tasks = (
            (await session.execute(select(JobTask).where(JobTask.job_id == job.id))).scalars().all()
        )
    for task in tasks:
        await run_backup_task(h.runtime, str(task.id))
    return await h.job(job.id)


async def test_revoked_consent_fails_the_backup_with_a_reason_and_is_announced(
    engine: EngineHarness,
) -> None:
    h = engine
    await create_webhook(
        h.runtime,
        h.msp.id,
        "https://example.com/hooks",
        ["tenant.consent_revoked", "backup.failed"],
    )
    await h.set_policy(services=["contacts"])
    assert (await run_backup(h)).status == "succeeded"
    h.sim.revoke_consent(h.sim_tenant_id)
    job = await run_backup(h)
    assert job.status == "failed"
    assert job.error_code == "consent_revoked"
    tenant = await h.reload_tenant()
    assert tenant.consent_state == "revoked"
    async with h.runtime.db.session() as session:
        tasks = (
            (await session.execute(select(JobTask).where(JobTask.job_id == job.id))).scalars().all()
        )
        events = (await session.execute(select(WebhookDelivery.event_type))).scalars().all()
    assert {t.error_code for t in tasks} == {"consent_revoked"}
    assert all("consent" in (t.error_detail or "") for t in tasks)
    assert sorted(events) == ["backup.failed", "tenant.consent_revoked"]  # announced once


async def test_a_mailbox_an_access_policy_leaves_out_fails_alone_with_what_to_do(
    engine: EngineHarness,
) -> None:
    """An Exchange application access policy that leaves one mailbox out of the app's scope
    makes Exchange answer 403 for that mailbox only: its Outlook tasks fail with a reason
    that names the policy (not a consent to redo), everything else is backed up."""
    h = engine
    await h.set_policy(services=["mail", "contacts", "onedrive"])
    accounts = await h.discover()
    blocked = next(a for a in accounts if a.kind == "user")
    h.sim.restrict_app_access(h.sim_tenant_id, blocked.graph_id)
    job = await run_backup(h)
    assert job.status == "partial"
    async with h.runtime.db.session() as session:
        tasks = (
            (await session.execute(select(JobTask).where(JobTask.job_id == job.id))).scalars().all()
        )
    failed = {(t.account_id, t.service): t for t in tasks if t.status == "failed"}
    assert set(failed) == {(blocked.id, "mail"), (blocked.id, "contacts")}
    assert {t.error_code for t in failed.values()} == {"mailbox_access_denied"}
    assert all("application access policy" in (t.error_detail or "") for t in failed.values())
    assert all(t.status == "succeeded" for t in tasks if (t.account_id, t.service) not in failed)
    assert (await h.reload_tenant()).consent_state != "revoked"
