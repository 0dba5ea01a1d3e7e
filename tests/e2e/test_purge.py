"""Data leaves only by an audited purge or the policy's retention; the blob garbage collector
deletes exactly the chunks nothing names any more."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select, update

from graphsim.state import Drive
from safekeep.backup.context import open_repository
from safekeep.backup.jobs.purge import run_purge_job
from safekeep.search.query import SearchQuery
from safekeep.tenants.models import (
    Account,
    AuditEvent,
    Item,
    ItemVersion,
    Job,
    JobKind,
    Snapshot,
    utcnow,
)
from tests.backup.harness import EngineHarness


async def chunk_names(h: EngineHarness) -> set[str]:
    repo = await open_repository(h.runtime, h.tenant)
    return {name async for name in repo.list_chunk_names()}


async def count(h: EngineHarness, model: type, account: Account) -> int:
    async with h.runtime.db.session() as session:
        stmt = select(func.count()).select_from(model).where(model.account_id == account.id)  # type: ignore[attr-defined]
        return int((await session.execute(stmt)).scalar_one())


async def stored_bytes(h: EngineHarness, api: httpx.AsyncClient) -> tuple[int, int]:
    """The tenant's stored bytes as /v1/usage reports them, and as its snapshots sum them."""
    usage = (await api.get("/v1/usage", headers=h.msp.headers)).json()
    [reported] = [t["stored_bytes"] for t in usage["tenants"] if t["tenant_id"] == str(h.tenant.id)]
    async with h.runtime.db.session() as session:
        stmt = select(func.coalesce(func.sum(Snapshot.bytes_added), 0)).where(
            Snapshot.tenant_id == h.tenant.id
        )
        summed = int((await session.execute(stmt)).scalar_one())
    return reported, summed


async def test_an_account_is_purged_only_on_request_and_only_it(
    engine: EngineHarness, api: httpx.AsyncClient
) -> None:
    h = engine
    users = [a for a in await h.accounts() if a.kind == "user" and a.services_found.get("onedrive")]
    leaver, stayer = users[0], users[1]
    for account in (leaver, stayer):
        await h.backup(account, "onedrive")
    reported, summed = await stored_bytes(h, api)
    assert reported == summed > 0
    for account in (leaver, stayer):
        shown = await api.get(
            f"/v1/tenants/{h.tenant.id}/accounts/{account.id}", headers=h.msp.headers
        )
        assert shown.json()["last_backup_at"] is not None
    before = await chunk_names(h)
    base = f"/v1/tenants/{h.tenant.id}/accounts/{leaver.id}"
    # a protected seat is never purged; release it first (its data stays, as a retained seat)
    r = await api.post(f"{base}/purge", json={"confirm": str(leaver.id)}, headers=h.msp.headers)
    assert r.status_code == 409
    r = await api.patch(base, json={"protected": False}, headers=h.msp.headers)
    assert r.json()["state"] == "cancelled"
    assert await count(h, ItemVersion, leaver) > 0
    r = await api.post(f"{base}/purge", json={"confirm": "yes"}, headers=h.msp.headers)
    assert r.status_code == 422
    r = await api.post(f"{base}/purge", json={"confirm": str(leaver.id)}, headers=h.msp.headers)
    assert r.status_code == 202, r.text
    await run_purge_job(h.runtime, r.json()["id"])
    job = (await api.get(f"/v1/jobs/{r.json()['id']}", headers=h.msp.headers)).json()
    assert job["status"] == "succeeded", job
    purged = (await api.get(base, headers=h.msp.headers)).json()
    assert (purged["state"], purged["last_backup_at"]) == ("purged", None)  # nothing kept
    for model in (ItemVersion, Item, Snapshot):
        assert await count(h, model, leaver) == 0
    assert await count(h, ItemVersion, stayer) > 0
    # the purged account's bytes leave the tenant's usage with its snapshots
    after_purge, summed_after = await stored_bytes(h, api)
    assert after_purge == summed_after < reported
    gc = job["result"]["gc"]
    after = await chunk_names(h)
    assert gc["deleted"] == len(before - after) > 0
    # what remains is exactly what the other account still needs: its files read back whole
    async with h.runtime.db.session() as session:
        versions = (
            (await session.execute(select(ItemVersion).where(ItemVersion.kind == "file")))
            .scalars()
            .all()
        )
    repo = await open_repository(h.runtime, h.tenant)
    for version in versions:
        from safekeep.storage.repository import ContentRef

        data = await repo.read_bytes(ContentRef.from_json(version.content))  # type: ignore[arg-type]
        assert len(data) == version.size
    backend = await h.runtime.search_backend()
    page = await backend.search(
        SearchQuery(
            tenant_ids=frozenset({str(h.tenant.id)}), account_ids=frozenset({str(leaver.id)})
        )
    )
    assert page.hits == []
    async with h.runtime.db.session() as session:
        actions = (await session.execute(select(AuditEvent.action))).scalars().all()
    assert "purge.requested" in actions and "account.purged" in actions


async def backed_up_drive(h: EngineHarness) -> tuple[Account, Drive]:
    """A user with a OneDrive, backed up once, and graphsim's drive of that user."""
    account = next(
        a for a in await h.accounts() if a.kind == "user" and a.services_found.get("onedrive")
    )
    await h.backup(account, "onedrive")
    tenant = h.sim.tenant()
    return account, tenant.drives[tenant.users[account.graph_id].drive_id or ""]


async def retention_run(h: EngineHarness, *, days: int) -> Job:
    """A retention purge of ``days``, as the scheduler starts it, run to its (successful) end."""
    await h.set_policy(retention_days=days)
    job = await h.start_job(JobKind.purge, {"retention": True})
    await run_purge_job(h.runtime, str(job.id))
    done = await h.job(job.id)
    assert done.status == "succeeded", done.error_detail
    return done


async def test_retention_removes_old_versions_and_keeps_current_ones(engine: EngineHarness) -> None:
    h = engine
    account, drive = await backed_up_drive(h)
    victim = next(i for i in drive.items.values() if not i.is_folder and not i.deleted)
    h.sim.edit_item(h.sim_tenant_id, victim.id, {"content": b"new content " * 100})
    await h.backup(account, "onedrive")
    async with h.runtime.db.session() as session:
        closed = (
            (await session.execute(select(ItemVersion).where(ItemVersion.last_seq.is_not(None))))
            .scalars()
            .all()
        )
        assert len(closed) == 1
        # it stopped being current ten days ago
        await session.execute(
            update(ItemVersion)
            .where(ItemVersion.id == closed[0].id)
            .values(valid_to=utcnow() - timedelta(days=10))
        )
    current_before = await count(h, ItemVersion, account) - 1
    done = await retention_run(h, days=7)
    assert done.result["retention"]["versions"] == 1
    assert await count(h, ItemVersion, account) == current_before
    async with h.runtime.db.session() as session:
        assert await session.get(ItemVersion, closed[0].id) is None
    assert done.result["gc"]["deleted"] >= 1


async def test_retention_in_batches_removes_every_expired_version_and_no_other(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of one version: each batch of the sweep (and of the collector's mark phase)
    starts after the last one's, and what is not expired stays whatever its place in id order."""
    from safekeep.backup.jobs import purge

    monkeypatch.setattr(purge, "PAGE", 1)
    h = engine
    account, drive = await backed_up_drive(h)
    files = [i for i in drive.items.values() if not i.is_folder and not i.deleted][:4]
    assert len(files) == 4
    for n, item in enumerate(files):
        h.sim.edit_item(h.sim_tenant_id, item.id, {"content": f"edit {n} ".encode() * 100})
    await h.backup(account, "onedrive")
    async with h.runtime.db.session() as session:
        closed = sorted(
            (await session.execute(select(ItemVersion.id).where(ItemVersion.last_seq.is_not(None))))
            .scalars()
            .all()
        )
        assert len(closed) == 4
        # in id order: expired, kept (closed three days ago), expired, expired
        for version_id, days in zip(closed, (10, 3, 12, 30), strict=True):
            await session.execute(
                update(ItemVersion)
                .where(ItemVersion.id == version_id)
                .values(valid_to=utcnow() - timedelta(days=days))
            )
    versions_before = await count(h, ItemVersion, account)
    done = await retention_run(h, days=7)
    assert done.result["retention"]["versions"] == 3
    assert await count(h, ItemVersion, account) == versions_before - 3
    async with h.runtime.db.session() as session:
        left = [v for v in closed if await session.get(ItemVersion, v) is not None]
    assert left == [closed[1]]
    assert done.result["gc"]["deleted"] >= 3


async def test_purge_waits_for_a_running_backup(engine: EngineHarness) -> None:
    from safekeep.backup.jobs.lifecycle import RetryLater
    from safekeep.tenants.models import JobStatus
    from tests.factories import add_job

    h = engine
    async with h.runtime.db.session() as session:
        await add_job(session, h.tenant.id, status=JobStatus.running)
    job = await h.start_job(JobKind.purge, {"retention": True})
    with pytest.raises(RetryLater):
        await run_purge_job(h.runtime, str(job.id))
    assert (await h.job(job.id)).status == "running"  # retried by Dramatiq, not failed


@pytest.mark.parametrize("page", [1000, 3])
async def test_gc_keeps_blobs_referenced_from_documents(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch, page: int
) -> None:
    """Calendar attachments and contact photos are blobs named inside documents: the versions'
    refs list them, so garbage collection leaves them (and deletes only true orphans), also
    when its marks and its sweep of the listed chunks each take many batches."""
    from safekeep.backup.jobs import purge
    from safekeep.backup.jobs.purge import collect_garbage
    from safekeep.backup.services import module_for

    h = engine
    for account in [a for a in await h.accounts() if a.kind == "user"]:
        for service in ("calendar", "contacts"):
            if account.services_found.get("mail"):
                await h.backup(account, service)
    repo = await open_repository(h.runtime, h.tenant)
    orphans = [await repo.put_bytes(f"nobody names blob {i} ".encode() * 10) for i in range(2)]
    async with h.runtime.db.session() as session:
        versions = (
            (
                await session.execute(
                    select(ItemVersion).where(ItemVersion.kind.in_(["event", "contact"]))
                )
            )
            .scalars()
            .all()
        )
    assert any(v.refs for v in versions), "the simulated tenant should have attachments or photos"
    stored = {name async for name in repo.list_chunk_names()}
    monkeypatch.setattr(purge, "PAGE", page)
    result = await collect_garbage(h.runtime, h.tenant)
    assert result.deleted == sum(len(o.chunks) for o in orphans) == 2
    assert result.scanned == len(stored)
    assert result.referenced == len(stored) - 2
    assert {name async for name in repo.list_chunk_names()} == stored - {
        c.name for o in orphans for c in o.chunks
    }
    for version in versions:
        content = await module_for(version.service).content(repo, version)
        body = b"".join([chunk async for chunk in content.open(0, None)])
        assert body  # every ICS/VCF still renders with its attachments and photo
