"""Every list page (and a job poll's issues) is read in its own order from an index, never
sorted whole.

A page is newest first by (created_at or started_at, id), scoped to an MSP, a tenant or an
endpoint. Without an index in that order the database reads and sorts every row of the scope
for each page: a tenant with a year of snapshots (hundreds of thousands) paid about 170 ms per
page on SQLite where the index reads 51 rows in 0.1 ms. The test runs each list route, first
page and a page after a cursor, records the page statement it sends, and asks the database for
its plan: SQLite's must not sort in a temporary B-tree, PostgreSQL's (with sorting priced out,
so that an empty table cannot make a sort look cheap) must not contain a Sort node, neither the
plan made with the statement's values nor the one made for it prepared (which the server runs
once the driver prepares it); and the page after a cursor must enter the index at the cursor's
row, not filter its way down to it. The MSP-wide list of unfinished jobs is the one exception:
it sorts the MSP's few unfinished jobs, which it reads first by an index of their own.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from safekeep.runtime import Runtime
from safekeep.tenants.models import Job, JobIssue, JobKind, JobStatus
from safekeep.tenants.pagination import decode_cursor, encode_cursor
from tests.factories import (
    create_account,
    create_key,
    create_msp,
    create_tenant,
    create_webhook,
)
from tests.plans import Recorder, plans_of


@pytest.mark.parametrize(
    "path",
    [
        "/v1/tenants",
        "/v1/tenants?consent_state=granted",
        "/v1/tenants/{tenant}/accounts",
        "/v1/tenants/{tenant}/accounts?protected=true",
        "/v1/tenants/{tenant}/accounts?protected=true&not_backed_up_since=2026-12-01T00:00:00Z",
        "/v1/accounts",
        "/v1/accounts?protected=true&not_backed_up_since=2026-12-01T00:00:00Z",
        "/v1/tenants/{tenant}/jobs",
        "/v1/tenants/{tenant}/jobs?status=running",
        "/v1/tenants/{tenant}/restores",
        "/v1/tenants/{tenant}/snapshots",
        "/v1/tenants/{tenant}/snapshots?account_id={account}&service=mail",
        "/v1/tenants/{tenant}/snapshots?status=interrupted",
        "/v1/tenants/{tenant}/detections",
        "/v1/tenants/{tenant}/exports",
        "/v1/audit-events",
        "/v1/audit-events?tenant_id={tenant}",
        "/v1/api-keys",
        "/v1/webhooks",
        "/v1/webhooks/{webhook}/deliveries",
        "/v1/webhooks/{webhook}/deliveries?status=failed",
        "/v1/usage",
        "/v1/tenants/{tenant}/subscriptions",
        "/v1/tenants/{tenant}/subscriptions?status=failed",
    ],
)
async def test_a_page_is_read_in_index_order(
    any_runtime: Runtime, any_client: httpx.AsyncClient, path: str
) -> None:
    msp = await create_msp(any_runtime, "Plans MSP")
    tenant = await create_tenant(any_runtime, msp)
    account = await create_account(any_runtime, tenant)
    webhook, _ = await create_webhook(
        any_runtime, msp.id, "https://partner.example.com/hooks", ["backup.completed"]
    )
    url = path.format(tenant=tenant.id, account=account.id, webhook=webhook.id)
    cursor = encode_cursor({"t": "2026-12-01T00:00:00+00:00", "i": str(uuid.uuid4())})
    with Recorder(any_runtime, keep="ORDER BY") as sent:
        for page in (url, f"{url}{'&' if '?' in url else '?'}cursor={cursor}"):
            answer = await any_client.get(page, headers=msp.headers)
            assert answer.status_code == 200, answer.text
    pages = [(sql, params) for sql, params in sent if "LIMIT" in sql]
    assert len(pages) == 2, pages  # the first page's statement and the one after the cursor
    (first, first_params), (after, after_params) = pages
    for plan in await plans_of(any_runtime, first, first_params):
        assert plan.sorts == [], (first, plan.steps)
    for plan in await plans_of(any_runtime, after, after_params):
        assert plan.sorts == [], (after, plan.steps)
        assert plan.seeks_row_value(), (after, plan.steps)


async def test_a_poll_reads_its_jobs_first_issues_in_index_order(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    """A poll lists a job's first 100 issues by when they were met: read in that order, not
    all of a job's issues sorted on every poll."""
    msp = await create_msp(any_runtime, "Issues MSP")
    tenant = await create_tenant(any_runtime, msp)
    async with any_runtime.db.session() as session:
        job = Job(
            tenant_id=tenant.id,
            msp_id=msp.id,
            kind=JobKind.backup,
            status=JobStatus.running,
            params={},
        )
        session.add(job)
        await session.flush()
        session.add(JobIssue(job_id=job.id, code="NotReadable", detail="Graph answered 500"))
    with Recorder(any_runtime, keep="FROM job_issue") as sent:
        answer = await any_client.get(f"/v1/jobs/{job.id}", headers=msp.headers)
    assert answer.status_code == 200 and len(answer.json()["issues"]) == 1
    [(sql, params)] = [(q, p) for q, p in sent if "ORDER BY" in q]
    for plan in await plans_of(any_runtime, sql, params):
        assert plan.sorts == [], (sql, plan.steps)
        assert plan.reads_by_index("job_issue", "job_id"), plan.steps


@pytest.mark.parametrize("query", ["", "?status=running&kind=backup"])
async def test_unfinished_jobs_are_read_by_msp_not_through_the_deployment(
    any_runtime: Runtime, any_client: httpx.AsyncClient, query: str
) -> None:
    """GET /v1/jobs reads the unfinished jobs of an MSP's tenants through the index of jobs by
    status and MSP, entered at both, and sorts what it found into the page: never through
    every job a tenant ever ran, nor through other MSPs' work in progress (walking the
    deployment's unfinished jobs, a poll of an MSP of 1,000 tenants read 20,005 jobs to find
    its one; the prepared statement's plan read the status index once per tenant)."""
    msp = await create_msp(any_runtime, "Unfinished MSP")
    tenant = await create_tenant(any_runtime, msp)
    other = await create_msp(any_runtime, "Busy MSP")
    busy = await create_tenant(any_runtime, other)
    async with any_runtime.db.session() as session:
        session.add(
            Job(tenant_id=tenant.id, msp_id=msp.id, kind=JobKind.backup, status=JobStatus.running)
        )
        session.add_all(
            Job(tenant_id=busy.id, msp_id=other.id, kind=JobKind.backup, status=JobStatus.running)
            for _ in range(3)
        )
    cursor = encode_cursor({"t": "2026-12-01T00:00:00+00:00", "i": str(uuid.uuid4())})
    url = f"/v1/jobs{query}"
    with Recorder(any_runtime, keep="ORDER BY") as sent:
        answers = [
            await any_client.get(page, headers=msp.headers)
            for page in (url, f"{url}{'&' if '?' in url else '?'}cursor={cursor}")
        ]
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    listed = [[job["tenant_id"] for job in answer.json()["items"]] for answer in answers]
    assert listed == [[str(tenant.id)], []]  # the cursor is older than every job
    pages = [(sql, params) for sql, params in sent if "LIMIT" in sql]
    assert len(pages) == 2, pages
    for sql, params in pages:
        for plan in await plans_of(any_runtime, sql, params):
            reads = plan.reads_of("job")
            assert reads and all(
                "ix_job_status_msp" in read and re.search(r"status.*msp_id ?=", read)
                for read in reads
            ), plan.steps
            # What is sorted into the page is what that read found (the MSP's work in progress).
            scans = [step for step in plan.steps if step.startswith("SCAN ")]
            assert scans in ([], ["SCAN unfinished"]), plan.steps
            assert all("unfinished." in sort or "TEMP B-TREE" in sort for sort in plan.sorts)


@pytest.mark.parametrize("path", ["/v1/api-keys", "/v1/tenants"])
async def test_a_cursor_names_the_same_row_in_any_utc_offset(
    any_runtime: Runtime, any_client: httpx.AsyncClient, path: str
) -> None:
    """The cursor's time is compared as the column stores it (UTC), so a client that rewrites
    it in another offset, as ISO 8601 allows, lands on the same row (both page builders)."""
    msp = await create_msp(any_runtime, "Offsets MSP")
    for n in range(4):
        await create_key(any_runtime, msp, ["read"])
        await create_tenant(any_runtime, msp, name=f"Client {n}")
    first = (await any_client.get(f"{path}?limit=2", headers=msp.headers)).json()
    value = decode_cursor(first["next_cursor"])
    shifted = datetime.fromisoformat(value["t"]).astimezone(timezone(timedelta(hours=5)))
    pages = []
    for cursor in (first["next_cursor"], encode_cursor({**value, "t": shifted.isoformat()})):
        page = await any_client.get(f"{path}?limit=2&cursor={cursor}", headers=msp.headers)
        assert page.status_code == 200, page.text
        pages.append([item["id"] for item in page.json()["items"]])
    assert pages[0] == pages[1] and len(pages[0]) == 2


async def test_usage_totals_read_the_scopes_accounts_by_tenant(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    """Usage's totals, on every page, pass once over the accounts of the key's tenants,
    entered by tenant: never over the deployment's accounts, other MSPs' included."""
    msp = await create_msp(any_runtime, "Totals MSP")
    tenant = await create_tenant(any_runtime, msp)
    await create_account(any_runtime, tenant)
    limited = await create_key(any_runtime, msp, ["read"], [tenant.id])
    for headers in (msp.headers, {"Authorization": f"Bearer {limited}"}):
        with Recorder(any_runtime, keep="FILTER") as sent:
            answer = await any_client.get("/v1/usage", headers=headers)
        assert answer.status_code == 200 and answer.json()["protected_seats"] == 1, answer.text
        [(sql, params)] = sent
        for plan in await plans_of(any_runtime, sql, params):
            assert plan.reads_by_index("account", "tenant_id"), plan.steps
