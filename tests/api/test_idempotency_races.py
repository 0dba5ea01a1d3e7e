"""Idempotency-Key under concurrency and faults, on PostgreSQL and SQLite alike: one key makes
one change however many requests carry it at once; a repeat while the first runs is a 409
that changes nothing; a failed or dead first attempt does not hold the key; a key limited to
some tenants can neither see nor replace another key's record; a hostile body is never a 500.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from safekeep.api.idempotency import canonical_body
from safekeep.errors import NotFound
from safekeep.runtime import Runtime
from safekeep.tenants.idempotency import service as idempotency_service
from safekeep.tenants.job import service as job_service
from safekeep.tenants.models import IdempotencyRecord, Job, JobKind, Tenant, utcnow
from safekeep.tenants.tenant import service as tenant_service
from tests.factories import MspHandle, create_key, create_msp, create_tenant
from tests.fixtures.app import SentMessages

PROBLEM = "application/problem+json"
IN_PROGRESS = "https://safekeep.dev/problems/idempotency-key-in-progress"
REUSED = "https://safekeep.dev/problems/idempotency-key-reused"


def slowed(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str, wait: Callable[[], Awaitable[Any]]
) -> list[int]:
    """``module.name`` made to await ``wait()`` before doing its work; the list counts calls."""
    original = getattr(module, name)
    calls: list[int] = []

    async def patched(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        await wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(module, name, patched)
    return calls


async def count_tenants(runtime: Runtime, msp: MspHandle, name: str) -> int:
    async with runtime.db.session() as session:
        stmt = select(func.count()).where(Tenant.msp_id == msp.id, Tenant.name == name)
        return int((await session.execute(stmt)).scalar_one())


async def manual_backups(runtime: Runtime, tenant: Tenant) -> int:
    async with runtime.db.session() as session:
        stmt = select(func.count()).where(
            Job.tenant_id == tenant.id, Job.kind == JobKind.backup, Job.trigger == "manual"
        )
        return int((await session.execute(stmt)).scalar_one())


async def records(runtime: Runtime, msp: MspHandle) -> list[IdempotencyRecord]:
    async with runtime.db.session() as session:
        stmt = select(IdempotencyRecord).where(IdempotencyRecord.msp_id == msp.id)
        return list((await session.execute(stmt)).scalars())


async def new_msp(client: httpx.AsyncClient, runtime: Runtime) -> MspHandle:
    """An MSP whose admin key has been used once: its use is recorded, so that concurrent
    requests with it do not queue behind that write (on the key's row or SQLite's lock)."""
    msp = await create_msp(runtime)
    assert (await client.get("/v1/tenants", headers=msp.headers)).status_code == 200
    return msp


def assert_in_progress(r: httpx.Response) -> None:
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == IN_PROGRESS
    assert int(r.headers["retry-after"]) >= 1


async def test_concurrent_creates_with_one_key_make_one_tenant(
    any_client: httpx.AsyncClient,
    any_runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, runtime = any_client, any_runtime
    msp = await new_msp(client, runtime)
    slowed(monkeypatch, tenant_service, "create", lambda: asyncio.sleep(0.05))
    headers = {**msp.headers, "Idempotency-Key": "onboard-race"}

    answers = await asyncio.gather(
        *[client.post("/v1/tenants", json={"name": "Race"}, headers=headers) for _ in range(8)]
    )

    assert await count_tenants(runtime, msp, "Race") == 1
    created = [r for r in answers if r.status_code == 201]
    first = [r for r in created if "idempotent-replayed" not in r.headers]
    assert len(first) == 1, [r.text for r in answers]
    assert {r.json()["id"] for r in created} == {first[0].json()["id"]}
    for r in answers:
        if r.status_code != 201:
            assert_in_progress(r)
    again = await client.post("/v1/tenants", json={"name": "Race"}, headers=headers)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first[0].json()["id"]


async def test_a_repeat_while_the_first_runs_is_a_409_that_changes_nothing(
    any_client: httpx.AsyncClient,
    any_runtime: Runtime,
    sent: SentMessages,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, runtime = any_client, any_runtime
    msp = await new_msp(client, runtime)
    tenant = await create_tenant(runtime, msp)
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        if not entered.is_set():  # the first request only
            entered.set()
            await release.wait()

    calls = slowed(monkeypatch, job_service, "start_backup", hold)
    path = f"/v1/tenants/{tenant.id}/backups"
    headers = {**msp.headers, "Idempotency-Key": "nightly"}

    first = asyncio.create_task(client.post(path, json={}, headers=headers))
    try:
        await asyncio.wait_for(entered.wait(), 10)
        repeat = await client.post(path, json={}, headers=headers)
        assert_in_progress(repeat)
        other = await client.post(path, json={"services": ["mail"]}, headers=headers)
        assert other.status_code == 422 and other.json()["type"] == REUSED
        assert len(calls) == 1 and sent.messages == []
        assert await manual_backups(runtime, tenant) == 0
    finally:
        release.set()
    done = await first
    assert done.status_code == 202, done.text
    replay = await client.post(path, json={}, headers=headers)
    assert replay.status_code == 202 and replay.json()["id"] == done.json()["id"]
    assert replay.headers["idempotent-replayed"] == "true"
    assert len(calls) == 1 and len(sent.messages) == 1
    assert await manual_backups(runtime, tenant) == 1


async def test_a_claim_that_went_stale_is_taken_and_its_request_changes_nothing(
    any_client: httpx.AsyncClient,
    any_runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A first request slower than the claim's timeout loses the key to a retry: the retry
    runs, and the first one's change is rolled back (409), so one change is made still."""
    client, runtime = any_client, any_runtime
    msp = await new_msp(client, runtime)
    monkeypatch.setattr(idempotency_service, "CLAIM_TIMEOUT", timedelta(0))
    entered, first_may_finish = asyncio.Event(), asyncio.Event()

    async def wait() -> None:
        if not entered.is_set():  # the first request only
            entered.set()
            await first_may_finish.wait()

    slowed(monkeypatch, tenant_service, "create", wait)
    headers = {**msp.headers, "Idempotency-Key": "slow"}

    first = asyncio.create_task(client.post("/v1/tenants", json={"name": "Slow"}, headers=headers))
    try:
        await asyncio.wait_for(entered.wait(), 10)
        retry = await client.post("/v1/tenants", json={"name": "Slow"}, headers=headers)
        assert retry.status_code == 201, retry.text
    finally:
        first_may_finish.set()
    assert_in_progress(await first)
    assert await count_tenants(runtime, msp, "Slow") == 1
    replay = await client.post("/v1/tenants", json={"name": "Slow"}, headers=headers)
    assert replay.json()["id"] == retry.json()["id"]


@pytest.mark.parametrize("fault", ["crash", "refusal"])
async def test_a_failed_first_attempt_does_not_hold_the_key(
    any_client: httpx.AsyncClient,
    any_runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    client, runtime = any_client, any_runtime
    msp = await new_msp(client, runtime)
    failures = [RuntimeError("boom") if fault == "crash" else NotFound("gone")]

    async def fail_once() -> None:
        if failures:
            raise failures.pop()

    tenant = await create_tenant(runtime, msp)
    slowed(monkeypatch, job_service, "start_backup", fail_once)
    path = f"/v1/tenants/{tenant.id}/backups"
    headers = {**msp.headers, "Idempotency-Key": "retry-me"}

    failed = await client.post(path, json={}, headers=headers)
    assert failed.status_code == (500 if fault == "crash" else 404), failed.text
    assert await records(runtime, msp) == []
    retry = await client.post(path, json={}, headers=headers)
    assert retry.status_code == 202, retry.text
    assert "idempotent-replayed" not in retry.headers
    assert await manual_backups(runtime, tenant) == 1


async def test_dead_claims_and_expired_records_free_the_key_but_live_ones_never(
    any_client: httpx.AsyncClient, any_runtime: Runtime
) -> None:
    client, runtime = any_client, any_runtime
    msp = await new_msp(client, runtime)
    now = utcnow()
    answered: dict[str, Any] = {"status_code": 201, "body": {"id": "earlier"}}
    kept: dict[str, dict[str, Any]] = {
        "dead": dict(created_at=now - timedelta(minutes=5)),
        "expired": dict(created_at=now - timedelta(hours=25), **answered),
        "running": dict(created_at=now),
        "answered": dict(created_at=now - timedelta(hours=23), **answered),
    }
    body = {"name": "Again"}
    request_hash = hashlib.sha256(b"POST /v1/tenants\n" + canonical_body(b'{"name":"Again"}'))
    async with runtime.db.session() as session:
        for key, fields in kept.items():
            session.add(
                IdempotencyRecord(
                    msp_id=msp.id,
                    key=key,
                    method="POST",
                    path="/v1/tenants",
                    request_hash=request_hash.hexdigest(),
                    **fields,
                )
            )

    def post(key: str) -> Awaitable[httpx.Response]:
        return client.post(
            "/v1/tenants", json=body, headers={**msp.headers, "Idempotency-Key": key}
        )

    for key in ("dead", "expired"):
        r = await post(key)
        assert r.status_code == 201 and "idempotent-replayed" not in r.headers, r.text
    assert_in_progress(await post("running"))
    r = await post("answered")
    assert (r.status_code, r.json()) == (201, {"id": "earlier"})
    assert await count_tenants(runtime, msp, "Again") == 2
    stored = {r.key: r for r in await records(runtime, msp)}
    assert stored["running"].status_code is None and stored["answered"].body == {"id": "earlier"}
    assert stored["dead"].status_code == stored["expired"].status_code == 201


async def test_a_limited_key_neither_replays_nor_replaces_an_admins_record(
    any_client: httpx.AsyncClient, any_runtime: Runtime, sent: SentMessages
) -> None:
    """A key limited to T1 sends the Idempotency-Key the MSP's admin used on T2: a key reused
    with another request (422), the route does not run, and the admin's retry still gets its
    replay."""
    client, runtime = any_client, any_runtime
    msp = await new_msp(client, runtime)
    t1 = await create_tenant(runtime, msp, name="One")
    t2 = await create_tenant(runtime, msp, name="Two")
    limited = {"Authorization": f"Bearer {await create_key(runtime, msp, ['backup'], [t1.id])}"}
    key = {"Idempotency-Key": "shared"}

    first = await client.post(
        f"/v1/tenants/{t2.id}/backups", json={}, headers={**msp.headers, **key}
    )
    assert first.status_code == 202, first.text
    r = await client.post(f"/v1/tenants/{t1.id}/backups", json={}, headers={**limited, **key})
    assert r.status_code == 422 and r.json()["type"] == REUSED, r.text
    assert first.json()["id"] not in r.text
    # outside its limit the tenant is not found, as without a record
    r = await client.post(f"/v1/tenants/{t2.id}/backups", json={}, headers={**limited, **key})
    assert r.status_code == 404 and first.json()["id"] not in r.text, r.text

    again = await client.post(
        f"/v1/tenants/{t2.id}/backups", json={}, headers={**msp.headers, **key}
    )
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"], again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert await manual_backups(runtime, t1) == 0 and await manual_backups(runtime, t2) == 1
    assert len(sent.messages) == 1


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("with_key", [False, True])
async def test_a_deeply_nested_body_is_never_a_500(
    client: httpx.AsyncClient, runtime: Runtime, with_key: bool
) -> None:
    msp = await new_msp(client, runtime)
    tenant = await create_tenant(runtime, msp)
    headers = {**msp.headers, "Content-Type": "text/plain"}
    if with_key:
        headers["Idempotency-Key"] = "deep"
    r = await client.post(f"/v1/tenants/{tenant.id}/discover", content=DEEP, headers=headers)
    assert r.status_code == 202, r.text  # the route takes no body
    for content_type in ("text/plain", "application/json"):
        r = await client.post(
            "/v1/tenants",
            content=DEEP,
            headers={**headers, "Content-Type": content_type, "Idempotency-Key": content_type},
        )
        assert 400 <= r.status_code < 500 and r.headers["content-type"] == PROBLEM, r.text


@pytest.mark.parametrize(
    "body",
    [
        DEEP.encode(),
        b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"1" * 5000,  # past int's digit limit
        b'{"a": "\xff\xfe"}',  # not UTF-8
        b'"\\ud800"',  # a lone surrogate
        b"",
    ],
)
def test_canonicalising_a_hostile_body_never_raises(body: bytes) -> None:
    assert isinstance(canonical_body(body), bytes)


def test_canonical_body_ignores_whitespace_and_key_order() -> None:
    assert canonical_body(b'{ "b": 1, "a" : [1, 2] }') == canonical_body(b'{"a":[1,2],"b":1}')
