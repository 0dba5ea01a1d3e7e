"""What partner portals rely on when they poll: conditional reads (ETag / If-None-Match / 304),
Retry-After and the long poll on unfinished jobs, authentication that writes nothing on most
reads yet still records use and refuses a revoked key on the very next request, and list
pages whose statement count does not grow with the page."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from safekeep.api.app import create_app
from safekeep.api.jobs.schemas import JobOut, JobProgress
from safekeep.api.schemas import Page
from safekeep.runtime import Runtime
from safekeep.settings import Settings
from safekeep.tenants.api_key import service as api_key_service
from safekeep.tenants.models import (
    ApiKey,
    Job,
    JobIssue,
    JobKind,
    JobStatus,
    JobTask,
    TaskStatus,
    Tenant,
    utcnow,
)
from tests.factories import MspHandle, create_account, create_key, create_msp, create_tenant
from tests.plans import statements


async def make_job(
    runtime: Runtime, tenant: Tenant, status: JobStatus, *, tasks: int = 2
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    account = await create_account(runtime, tenant, name=f"User {uuid.uuid4().hex[:6]}")
    async with runtime.db.session() as session:
        job = Job(
            tenant_id=tenant.id,
            msp_id=tenant.msp_id,
            kind=JobKind.backup,
            status=status,
            params={},
        )
        session.add(job)
        await session.flush()
        rows = [
            JobTask(
                job_id=job.id,
                tenant_id=tenant.id,
                account_id=account.id,
                service=service,
                status=TaskStatus.running if status == JobStatus.running else TaskStatus.succeeded,
            )
            for service in ("mail", "onedrive", "calendar", "contacts", "sharepoint")[:tasks]
        ]
        session.add_all(rows)
        await session.flush()
        return job.id, [t.id for t in rows]


async def add_items(runtime: Runtime, task_id: uuid.UUID, items: int) -> None:
    async with runtime.db.session() as session:
        await session.execute(
            update(JobTask).where(JobTask.id == task_id).values(items=JobTask.items + items)
        )


@pytest.fixture
async def msp(runtime: Runtime) -> MspHandle:
    return await create_msp(runtime, "Poller MSP")


async def test_job_etag_gives_304_until_progress_moves(
    client: httpx.AsyncClient, runtime: Runtime, msp: MspHandle
) -> None:
    tenant = await create_tenant(runtime, msp)
    job_id, tasks = await make_job(runtime, tenant, JobStatus.running)
    first = await client.get(f"/v1/jobs/{job_id}", headers=msp.headers)
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert first.headers["retry-after"] == "5"
    assert first.json()["progress"]["tasks_total"] == 2

    same = await client.get(f"/v1/jobs/{job_id}", headers={**msp.headers, "If-None-Match": etag})
    assert same.status_code == 304
    assert same.content == b""
    assert same.headers["etag"] == etag
    assert same.headers["retry-after"] == "5"
    # A weak form of the tag, or one of several, matches too (RFC 9110's weak comparison).
    listed = {**msp.headers, "If-None-Match": f'"other", W/{etag}'}
    assert (await client.get(f"/v1/jobs/{job_id}", headers=listed)).status_code == 304

    await add_items(runtime, tasks[0], 7)
    moved = await client.get(f"/v1/jobs/{job_id}", headers={**msp.headers, "If-None-Match": etag})
    assert moved.status_code == 200
    assert moved.json()["progress"]["items"] == 7
    assert moved.headers["etag"] != etag


async def test_a_polled_job_lists_its_issues_and_a_new_one_changes_its_etag(
    client: httpx.AsyncClient, runtime: Runtime, msp: MspHandle
) -> None:
    tenant = await create_tenant(runtime, msp)
    job_id, tasks = await make_job(runtime, tenant, JobStatus.running)
    first_at = utcnow() - timedelta(minutes=5)
    async with runtime.db.session() as session:
        session.add_all(
            [
                JobIssue(
                    job_id=job_id,
                    task_id=tasks[1],
                    service="onedrive",
                    item_ref="01ABC",
                    item_name="Budget.xlsx",
                    code="ItemTooLarge",
                    detail="larger than the policy allows",
                    created_at=first_at + timedelta(minutes=1),
                ),
                JobIssue(
                    job_id=job_id,
                    task_id=tasks[0],
                    account_id=None,
                    service="mail",
                    item_ref=None,
                    item_name=None,
                    code="NotReadable",
                    detail="Graph answered 500 three times",
                    created_at=first_at,
                ),
            ]
        )
    quiet_id, _ = await make_job(runtime, tenant, JobStatus.running)
    assert (await client.get(f"/v1/jobs/{quiet_id}", headers=msp.headers)).status_code == 200
    with statements(runtime) as quiet_poll:
        quiet = await client.get(f"/v1/jobs/{quiet_id}", headers=msp.headers)
    assert quiet.json()["issues"] == []
    with statements(runtime) as poll:
        first = await client.get(f"/v1/jobs/{job_id}", headers=msp.headers)
    # A job without issues is read in one statement; its issues cost one more, when it has any.
    assert len(poll) == len(quiet_poll) + 1
    assert first.status_code == 200
    issues = first.json()["issues"]
    assert [(i["code"], i["service"], i["item_ref"], i["item_name"]) for i in issues] == [
        ("NotReadable", "mail", None, None),
        ("ItemTooLarge", "onedrive", "01ABC", "Budget.xlsx"),
    ]
    assert issues[1]["detail"] == "larger than the policy allows"
    assert issues[0]["created_at"] == first_at.isoformat().replace("+00:00", "Z")
    shown = {"id", "account_id", "service", "item_ref", "item_name", "code", "detail"}
    assert all(set(i) == shown | {"created_at"} for i in issues)

    async with runtime.db.session() as session:
        session.add(JobIssue(job_id=job_id, code="Throttled", detail="gave up after 429s"))
    etag = first.headers["etag"]
    moved = await client.get(f"/v1/jobs/{job_id}", headers={**msp.headers, "If-None-Match": etag})
    assert moved.status_code == 200
    assert [i["code"] for i in moved.json()["issues"]][-1] == "Throttled"


async def test_finished_job_has_no_retry_after(
    client: httpx.AsyncClient, runtime: Runtime, msp: MspHandle
) -> None:
    tenant = await create_tenant(runtime, msp)
    job_id, _ = await make_job(runtime, tenant, JobStatus.succeeded)
    r = await client.get(f"/v1/jobs/{job_id}", headers=msp.headers)
    assert r.status_code == 200
    assert "retry-after" not in r.headers
    assert r.headers["etag"]


async def test_tenant_etag_changes_with_the_tenant(
    client: httpx.AsyncClient, runtime: Runtime, msp: MspHandle
) -> None:
    tenant = await create_tenant(runtime, msp, name="Before")
    path = f"/v1/tenants/{tenant.id}"
    first = await client.get(path, headers=msp.headers)
    etag = first.headers["etag"]
    assert first.json()["name"] == "Before"
    assert (
        await client.get(path, headers={**msp.headers, "If-None-Match": etag})
    ).status_code == 304
    listing = await client.get("/v1/tenants", headers=msp.headers)
    list_etag = listing.headers["etag"]
    assert (
        await client.get("/v1/tenants", headers={**msp.headers, "If-None-Match": list_etag})
    ).status_code == 304

    patched = await client.patch(path, json={"name": "After"}, headers=msp.headers)
    assert patched.status_code == 200, patched.text
    after = await client.get(path, headers={**msp.headers, "If-None-Match": etag})
    assert after.status_code == 200
    assert after.json()["name"] == "After"
    assert (
        await client.get("/v1/tenants", headers={**msp.headers, "If-None-Match": list_etag})
    ).status_code == 200


async def test_another_msps_etag_reveals_nothing(
    client: httpx.AsyncClient, runtime: Runtime, msp: MspHandle
) -> None:
    tenant = await create_tenant(runtime, msp)
    job_id, _ = await make_job(runtime, tenant, JobStatus.running)
    etag = (await client.get(f"/v1/jobs/{job_id}", headers=msp.headers)).headers["etag"]
    other = await create_msp(runtime, "Other MSP")
    for path in (f"/v1/jobs/{job_id}", f"/v1/tenants/{tenant.id}"):
        r = await client.get(path, headers={**other.headers, "If-None-Match": etag})
        assert r.status_code == 404, path
        r = await client.get(path, headers={**other.headers, "If-None-Match": "*"})
        assert r.status_code == 404, path


async def test_long_poll_answers_when_the_job_moves(
    client: httpx.AsyncClient, runtime: Runtime, msp: MspHandle
) -> None:
    tenant = await create_tenant(runtime, msp)
    job_id, tasks = await make_job(runtime, tenant, JobStatus.running)
    etag = (await client.get(f"/v1/jobs/{job_id}", headers=msp.headers)).headers["etag"]
    conditional = {**msp.headers, "If-None-Match": etag}

    started = time.monotonic()
    unchanged = await client.get(f"/v1/jobs/{job_id}?wait=1", headers=conditional)
    assert unchanged.status_code == 304
    assert time.monotonic() - started >= 0.9

    async def move_later() -> None:
        await asyncio.sleep(0.5)
        await add_items(runtime, tasks[1], 3)

    mover = asyncio.create_task(move_later())
    started = time.monotonic()
    moved = await client.get(f"/v1/jobs/{job_id}?wait=20", headers=conditional)
    await mover
    assert moved.status_code == 200
    assert moved.json()["progress"]["items"] == 3
    assert time.monotonic() - started < 10

    too_long = await client.get(f"/v1/jobs/{job_id}?wait=31", headers=msp.headers)
    assert too_long.status_code == 422


async def last_used(runtime: Runtime, secret_prefix: str) -> object:
    async with runtime.db.session() as session:
        return (
            await session.execute(select(ApiKey.last_used_at).where(ApiKey.prefix == secret_prefix))
        ).scalar_one()


async def test_reads_record_key_use_at_most_once_a_minute(
    client: httpx.AsyncClient, runtime: Runtime, msp: MspHandle
) -> None:
    secret = await create_key(runtime, msp, ["read"])
    headers = {"Authorization": f"Bearer {secret}"}
    prefix = secret[:9]
    assert await last_used(runtime, prefix) is None

    with statements(runtime) as sql:
        assert (await client.get("/v1/tenants", headers=headers)).status_code == 200
    assert any(s.lstrip().upper().startswith("UPDATE API_KEY") for s in sql)
    first = await last_used(runtime, prefix)
    assert first is not None

    with statements(runtime) as sql:
        for _ in range(3):
            assert (await client.get("/v1/tenants", headers=headers)).status_code == 200
    assert not [s for s in sql if s.lstrip().upper().startswith(("UPDATE", "INSERT"))]
    assert await last_used(runtime, prefix) == first

    # A use older than the resolution is refreshed by the next request (once the process's
    # memory of the key has lapsed, as it does after GRANT_CACHE_SECONDS).
    stale = utcnow() - timedelta(minutes=5)
    async with runtime.db.session() as session:
        await session.execute(
            update(ApiKey).where(ApiKey.prefix == prefix).values(last_used_at=stale)
        )
    api_key_service.GRANTS.invalidate()
    assert (await client.get("/v1/tenants", headers=headers)).status_code == 200
    refreshed = await last_used(runtime, prefix)
    assert isinstance(refreshed, type(stale)) and refreshed > stale + timedelta(minutes=4)


@pytest.fixture
async def second_api(scaleout_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Another API process over the same database (a second api pod)."""
    runtime = Runtime.build(scaleout_settings, send=lambda _messages: None)
    transport = httpx.ASGITransport(app=create_app(runtime=runtime), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://other.test") as c:
            yield c
    finally:
        await runtime.close()


async def test_a_revoked_key_is_refused_at_once_by_the_revoking_process(
    client: httpx.AsyncClient, second_api: httpx.AsyncClient, msp: MspHandle
) -> None:
    """Both apps here live in one process and share its memory of keys, which the
    revocation clears when it commits. A separate process notices within
    GRANT_CACHE_SECONDS (tests/api/test_key_cache.py)."""
    created = await client.post(
        "/v1/api-keys", json={"name": "portal", "scopes": ["read"]}, headers=msp.headers
    )
    assert created.status_code == 201, created.text
    headers = {"Authorization": f"Bearer {created.json()['key']}"}
    for api in (client, second_api):
        for _ in range(2):  # warm any cache there might be
            assert (await api.get("/v1/tenants", headers=headers)).status_code == 200

    revoked = await client.delete(f"/v1/api-keys/{created.json()['id']}", headers=msp.headers)
    assert revoked.status_code == 204
    for api in (second_api, client):
        r = await api.get("/v1/tenants", headers=headers)
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_a_page_of_jobs_costs_the_same_statements_as_one_job(
    client: httpx.AsyncClient, runtime: Runtime, msp: MspHandle
) -> None:
    tenant = await create_tenant(runtime, msp)
    path = f"/v1/tenants/{tenant.id}/jobs"
    await make_job(runtime, tenant, JobStatus.running)
    assert (await client.get(path, headers=msp.headers)).status_code == 200  # warm up
    with statements(runtime) as one:
        page = await client.get(path, headers=msp.headers)
    assert len(page.json()["items"]) == 1
    for _ in range(6):
        await make_job(runtime, tenant, JobStatus.succeeded, tasks=3)
    with statements(runtime) as seven:
        page = await client.get(path, headers=msp.headers)
    items = page.json()["items"]
    assert len(items) == 7
    assert sorted(i["progress"]["tasks_total"] for i in items) == [2, 3, 3, 3, 3, 3, 3]
    assert len(seven) == len(one)


async def test_a_page_reads_the_tasks_of_its_unfinished_jobs_only(
    client: httpx.AsyncClient, runtime: Runtime, msp: MspHandle
) -> None:
    """A settled backup keeps its progress in its result (the engine writes it when the last
    task ends): a page of them reads no task, and shows what a poll of each shows."""
    tenant = await create_tenant(runtime, msp)
    path = f"/v1/tenants/{tenant.id}/jobs"
    settled = [(await make_job(runtime, tenant, JobStatus.succeeded, tasks=3))[0] for _ in range(4)]
    polled = {}
    for n, job_id in enumerate(settled):
        await add_items(runtime, (await tasks_of(runtime, job_id))[0], 10 + n)
        polled[str(job_id)] = (await client.get(f"/v1/jobs/{job_id}", headers=msp.headers)).json()
        async with runtime.db.session() as session:
            await session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(result={"progress": polled[str(job_id)]["progress"], "tasks": {"ok": 3}})
            )
    assert (await client.get(path, headers=msp.headers)).status_code == 200  # warm up
    with statements(runtime) as sent:
        page = await client.get(path, headers=msp.headers)
    assert not [sql for sql in sent if "job_task" in sql]
    assert {i["id"]: i["progress"] for i in page.json()["items"]} == {
        job_id: job["progress"] for job_id, job in polled.items()
    }

    running, running_tasks = await make_job(runtime, tenant, JobStatus.running)
    await add_items(runtime, running_tasks[1], 5)
    with statements(runtime) as sent:
        page = await client.get(path, headers=msp.headers)
    assert len([sql for sql in sent if "job_task" in sql]) == 1
    progress = {i["id"]: i["progress"] for i in page.json()["items"]}
    assert progress[str(running)]["items"] == 5  # an unfinished job's is summed, live
    assert progress[str(running)]["tasks_total"] == 2
    assert {k: v for k, v in progress.items() if k != str(running)} == {
        job_id: job["progress"] for job_id, job in polled.items()
    }


async def tasks_of(runtime: Runtime, job_id: uuid.UUID) -> list[uuid.UUID]:
    async with runtime.db.session() as session:
        found = await session.execute(select(JobTask.id).where(JobTask.job_id == job_id))
        return [row[0] for row in found]


async def test_job_pages_are_written_as_the_documented_model_writes_them(
    client: httpx.AsyncClient, runtime: Runtime, msp: MspHandle
) -> None:
    """Pages of jobs and restores are written from their rows (no model per job): read back
    into ``Page[JobOut]`` and written again by it they give the same bytes, whatever order
    a settled job's progress was stored in, and a restore shows its totals."""
    tenant = await create_tenant(runtime, msp)
    settled, _ = await make_job(runtime, tenant, JobStatus.succeeded, tasks=3)
    await make_job(runtime, tenant, JobStatus.running)
    progress = dict(
        reversed(
            {
                "tasks_total": 3,
                "tasks_done": 3,
                "items": 12,
                "bytes": 3456,
                "errors": 1,
                "skipped": 0,
                "graph_requests": 40,
                "throttled": 2,
            }.items()
        )
    )
    totals = {"failed": 1, "restored": 7, "bytes": 900, "observed": 0, "skipped": 2}
    async with runtime.db.session() as session:
        await session.execute(
            update(Job).where(Job.id == settled).values(result={"progress": progress})
        )
        restore = Job(
            tenant_id=tenant.id,
            msp_id=tenant.msp_id,
            kind=JobKind.restore,
            status=JobStatus.partial,
            params={"target": "same", "note": 'a "quoted" Ünïcode note'},
            result={"totals": totals},
            requested_by="key:pages",
            finished_at=utcnow(),
        )
        session.add(restore)
        await session.flush()
        restore_id = str(restore.id)
    for path in (f"/v1/tenants/{tenant.id}/jobs", f"/v1/tenants/{tenant.id}/restores"):
        answer = await client.get(path, headers=msp.headers)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
        page = Page[JobOut].model_validate_json(answer.content)
        assert page.model_dump_json().encode() == answer.content
    jobs = {i["id"]: i for i in (await client.get(path, headers=msp.headers)).json()["items"]}
    assert list(jobs) == [restore_id]
    assert jobs[restore_id]["restore"] == {
        "restored": 7,
        "skipped_existing": 0,
        "skipped": 2,
        "failed": 1,
        "noted": 0,
        "bytes": 900,
        "observed": 0,
    }
    listed = (await client.get(f"/v1/tenants/{tenant.id}/jobs", headers=msp.headers)).json()
    shown = {i["id"]: i for i in listed["items"]}
    assert shown[str(settled)]["progress"] == {k: progress[k] for k in reversed(progress)}
    assert list(shown[str(settled)]["progress"]) == list(JobProgress.model_fields)
    assert shown[str(settled)]["restore"] is None


async def test_one_poll_lists_the_unfinished_jobs_of_every_tenant_a_key_sees(
    any_client: httpx.AsyncClient, any_runtime: Runtime
) -> None:
    """GET /v1/jobs: the queued and running jobs of all the MSP's live tenants, newest first,
    none finished, none of another MSP's, none outside a limited key's tenants; filtered by
    kind and status; paged; 304 until one moves; the same statements for one job or seven."""
    runtime, client = any_runtime, any_client
    msp, other = await create_msp(runtime, "Portal MSP"), await create_msp(runtime, "Other")
    first, second, gone = [await create_tenant(runtime, msp, name=n) for n in "ABC"]
    theirs = await create_tenant(runtime, other)
    unfinished = []
    for tenant, status in (
        (first, JobStatus.queued),
        (second, JobStatus.running),
        (first, JobStatus.running),
        (gone, JobStatus.running),
    ):
        unfinished.append((await make_job(runtime, tenant, status))[0])
    for tenant in (first, second):
        await make_job(runtime, tenant, JobStatus.succeeded)
        await make_job(runtime, tenant, JobStatus.failed)
    await make_job(runtime, theirs, JobStatus.running)
    async with runtime.db.session() as session:
        await session.execute(update(Tenant).where(Tenant.id == gone.id).values(status="deleted"))
    live = list(reversed(unfinished[:3]))  # newest first

    def ids(r: httpx.Response) -> list[str]:
        assert r.status_code == 200, r.text
        return [j["id"] for j in r.json()["items"]]

    r = await client.get("/v1/jobs", headers=msp.headers)
    assert ids(r) == [str(j) for j in live]
    assert {j["status"] for j in r.json()["items"]} == {"queued", "running"}
    assert (
        await client.get("/v1/jobs", headers={**msp.headers, "If-None-Match": r.headers["etag"]})
    ).status_code == 304
    running = await client.get("/v1/jobs", params={"status": "running"}, headers=msp.headers)
    assert ids(running) == [str(j) for j in live if j != unfinished[0]]
    none = await client.get("/v1/jobs", params={"kind": "restore"}, headers=msp.headers)
    assert ids(none) == []
    finished = await client.get("/v1/jobs", params={"status": "succeeded"}, headers=msp.headers)
    assert finished.status_code == 422
    pages, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await client.get("/v1/jobs", params=params, headers=msp.headers)
        pages += ids(page)
        if not (cursor := page.json()["next_cursor"]):
            break
    assert pages == [str(j) for j in live]
    limited = {"Authorization": f"Bearer {await create_key(runtime, msp, ['read'], [second.id])}"}
    assert ids(await client.get("/v1/jobs", headers=limited)) == [str(unfinished[1])]
    their_jobs = ids(await client.get("/v1/jobs", headers=other.headers))
    assert len(their_jobs) == 1 and not set(their_jobs) & {str(j) for j in unfinished}
    # a poll that moved: a job finished leaves the list and changes the ETag
    async with runtime.db.session() as session:
        await session.execute(
            update(Job).where(Job.id == unfinished[2]).values(status=JobStatus.succeeded)
        )
    after = await client.get(
        "/v1/jobs", headers={**msp.headers, "If-None-Match": r.headers["etag"]}
    )
    assert ids(after) == [str(unfinished[1]), str(unfinished[0])]
    with statements(runtime) as two:
        await client.get("/v1/jobs", headers=msp.headers)
    for _ in range(5):
        await make_job(runtime, first, JobStatus.running)
    with statements(runtime) as seven:
        assert len(ids(await client.get("/v1/jobs", headers=msp.headers))) == 7
    assert len(seven) == len(two)
