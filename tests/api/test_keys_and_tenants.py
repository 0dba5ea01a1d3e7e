"""API keys and tenants: valid flows, bad input, idempotency, audit."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import update

from safekeep.runtime import Runtime
from safekeep.tenants.models import (
    Account,
    AccountState,
    Snapshot,
    SnapshotStatus,
    Tenant,
    utcnow,
)
from safekeep.tenants.pagination import encode_cursor
from tests.api.conftest import World
from tests.factories import create_account, create_key, create_msp, create_tenant

PROBLEM = "application/problem+json"


async def every_page(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], **params: str | int
) -> list[dict]:
    """Every item of a list, following ``next_cursor`` page by page."""
    items: list[dict] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = await client.get(path, params=query, headers=headers)
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items


async def test_key_is_shown_once_stored_hashed_and_revocable(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    msp = await create_msp(runtime)
    r = await client.post(
        "/v1/api-keys", json={"name": "portal", "scopes": ["read"]}, headers=msp.headers
    )
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created["key"]
    assert secret.startswith("sk_") and created["prefix"] == secret[: len(created["prefix"])]
    listed = (await client.get("/v1/api-keys", headers=msp.headers)).json()["items"]
    assert all("key" not in k for k in listed)
    one = await client.get(f"/v1/api-keys/{created['id']}", headers=msp.headers)
    assert one.status_code == 200
    assert one.json() == {k: v for k, v in created.items() if k != "key"}  # never the secret
    from sqlalchemy import text

    async with runtime.db.session() as session:
        rows = (await session.execute(text("SELECT secret_hash FROM api_key"))).scalars().all()
    assert secret not in rows and all(len(h) == 64 for h in rows)
    assert (
        await client.get("/v1/tenants", headers={"Authorization": f"Bearer {secret}"})
    ).status_code == 200
    assert (
        await client.delete(f"/v1/api-keys/{created['id']}", headers=msp.headers)
    ).status_code == 204
    r = await client.get("/v1/tenants", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 401
    revoked = (await client.get(f"/v1/api-keys/{created['id']}", headers=msp.headers)).json()
    assert revoked["revoked_at"] is not None  # still readable, as revoked
    # revoking twice: it no longer exists as a live key
    assert (
        await client.delete(f"/v1/api-keys/{created['id']}", headers=msp.headers)
    ).status_code == 404


async def test_key_cannot_outgrow_its_creator(client: httpx.AsyncClient, runtime: Runtime) -> None:
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp)
    r = await client.post(
        "/v1/api-keys",
        json={"name": "bad", "scopes": ["read"], "tenant_ids": [str(uuid.uuid4())]},
        headers=msp.headers,
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "tenant_ids"]
    r = await client.post(
        "/v1/api-keys",
        json={"name": "portal", "scopes": ["read", "export"], "tenant_ids": [str(tenant.id)]},
        headers=msp.headers,
    )
    assert r.status_code == 201
    limited = {"Authorization": f"Bearer {r.json()['key']}"}
    listed = (await client.get("/v1/tenants", headers=limited)).json()["items"]
    assert [t["id"] for t in listed] == [str(tenant.id)]
    # a tenant-limited key cannot manage keys at all
    assert (await client.get("/v1/api-keys", headers=limited)).status_code == 403


async def test_bad_key_input_is_422_problem(client: httpx.AsyncClient, runtime: Runtime) -> None:
    msp = await create_msp(runtime)
    for body in (
        {},
        {"name": "", "scopes": ["read"]},
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["superuser"]},
        {"name": "x", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"},
        {"name": "x" * 201, "scopes": ["read"]},
    ):
        r = await client.post("/v1/api-keys", json=body, headers=msp.headers)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["status"] == 422


async def test_tenant_lifecycle(client: httpx.AsyncClient, runtime: Runtime) -> None:
    msp = await create_msp(runtime)
    r = await client.post(
        "/v1/tenants",
        json={
            "name": "Contoso",
            "domain": "contoso.onmicrosoft.com",
            "policy": {"backups_per_day": 6},
        },
        headers=msp.headers,
    )
    assert r.status_code == 201, r.text
    tenant = r.json()
    assert tenant["consent_state"] == "pending"
    assert "/contoso.onmicrosoft.com/oauth2/v2.0/authorize?" in tenant["consent_url"]
    assert (
        "redirect_uri=http%3A%2F%2Fsafekeep.test%2Fv1%2Fconsent%2Fcallback" in tenant["consent_url"]
    )
    assert "code_challenge_method=S256" in tenant["consent_url"]
    policy = (await client.get(f"/v1/tenants/{tenant['id']}/policy", headers=msp.headers)).json()
    assert policy["backups_per_day"] == 6
    r = await client.patch(
        f"/v1/tenants/{tenant['id']}", json={"name": "Contoso Ltd"}, headers=msp.headers
    )
    assert r.status_code == 200 and r.json()["name"] == "Contoso Ltd"
    # consent can be re-requested at any time
    r = await client.post(f"/v1/tenants/{tenant['id']}/consent", headers=msp.headers)
    assert r.status_code == 200 and "/oauth2/v2.0/authorize?" in r.json()["consent_url"]
    # a custom Entra app needs both halves, and never shows its secret
    r = await client.patch(
        f"/v1/tenants/{tenant['id']}",
        json={"app_client_id": str(uuid.uuid4())},
        headers=msp.headers,
    )
    assert r.status_code == 400
    app_id = str(uuid.uuid4())
    r = await client.patch(
        f"/v1/tenants/{tenant['id']}",
        json={"app_client_id": app_id, "app_client_secret": "very-secret-value"},
        headers=msp.headers,
    )
    assert r.status_code == 200
    assert r.json()["custom_app_client_id"] == app_id and "very-secret-value" not in r.text
    assert (
        await client.delete(f"/v1/tenants/{tenant['id']}", headers=msp.headers)
    ).status_code == 204
    assert (await client.get(f"/v1/tenants/{tenant['id']}", headers=msp.headers)).status_code == 404
    actions = [
        e["action"]
        for e in (await client.get("/v1/audit-events", headers=msp.headers)).json()["items"]
    ]
    assert actions[:4] == ["tenant.deleted", "tenant.updated", "tenant.updated", "tenant.created"]


async def test_bad_tenant_input(client: httpx.AsyncClient, runtime: Runtime) -> None:
    msp = await create_msp(runtime)
    body: object
    for body in (
        {"name": ""},
        {"name": "x", "domain": "not a domain"},
        {"name": "x", "app_client_id": str(uuid.uuid4())},
        {"name": "x", "policy": {"backups_per_day": 25}},
        {"name": "x", "policy": {"services": ["fax"]}},
        {"name": "x", "policy": {"services": ["mail", "mail"]}},
        [],
        "tenant",
    ):
        r = await client.post("/v1/tenants", json=body, headers=msp.headers)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"] == PROBLEM
    r = await client.post(
        "/v1/tenants",
        content=b'{"name": "x"',
        headers={**msp.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    assert (
        await client.get("/v1/tenants", params={"cursor": "!!!"}, headers=msp.headers)
    ).status_code == 400
    assert (
        await client.get("/v1/tenants", params={"limit": 0}, headers=msp.headers)
    ).status_code == 422
    assert (
        await client.get("/v1/tenants", params={"limit": 201}, headers=msp.headers)
    ).status_code == 422


async def test_idempotent_create_replays_and_refuses_a_different_body(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    msp = await create_msp(runtime)
    headers = {**msp.headers, "Idempotency-Key": "create-contoso-1"}
    first = await client.post("/v1/tenants", json={"name": "Contoso"}, headers=headers)
    again = await client.post("/v1/tenants", json={"name": "Contoso"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers.get("idempotent-replayed") == "true"
    assert first.json()["id"] == again.json()["id"]
    listed = (await client.get("/v1/tenants", headers=msp.headers)).json()["items"]
    assert len(listed) == 1
    other = await client.post("/v1/tenants", json={"name": "Fabrikam"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-reused")


async def test_pagination_walks_every_row_once(client: httpx.AsyncClient, runtime: Runtime) -> None:
    msp = await create_msp(runtime)
    for i in range(7):
        await create_tenant(runtime, msp, name=f"Client {i}")
    seen = [t["id"] for t in await every_page(client, "/v1/tenants", msp.headers, limit=3)]
    assert len(seen) == len(set(seen)) == 7


async def test_usage_pages_tenants_and_totals_all_on_every_page(
    any_client: httpx.AsyncClient, any_runtime: Runtime
) -> None:
    """Usage lists tenants a page at a time, newest first, like every list; its totals are
    over every tenant the key sees, whichever page is asked for. A key limited to some
    tenants pages and totals those only; a cursor that is not one we gave is a 400. On
    SQLite and PostgreSQL alike."""
    client, runtime = any_client, any_runtime
    msp = await create_msp(runtime)
    tenants = [await create_tenant(runtime, msp, name=f"Client {i}") for i in range(5)]
    want: dict[str, tuple[int, int, int]] = {}

    async def seat(tenant: Tenant, name: str, stored: int, **state: Any) -> Account:
        account = await create_account(runtime, tenant, name=name, **state)
        async with runtime.db.session() as session:
            await session.execute(
                update(Account).where(Account.id == account.id).values(stored_bytes=stored)
            )
        return account

    for i, tenant in enumerate(tenants):
        for n in range(i):  # i protected seats of 1,000 * (i + 1) bytes each
            await seat(tenant, f"User {n}", 1_000 * (i + 1))
        want[str(tenant.id)] = (i, 0, 1_000 * (i + 1) * i)
    # a leaver whose data is kept: a retained seat of the second tenant; another without
    # data, which is no seat at all
    leaver = await seat(tenants[1], "Leaver One", 7, protected=False, state=AccountState.cancelled)
    await seat(tenants[1], "Leaver Two", 0, protected=False, state=AccountState.cancelled)
    async with runtime.db.session() as session:
        now = utcnow()
        session.add(
            Snapshot(
                tenant_id=tenants[1].id,
                account_id=leaver.id,
                service="mail",
                seq=1,
                status=SnapshotStatus.complete,
                started_at=now,
                completed_at=now,
            )
        )
    want[str(tenants[1].id)] = (1, 1, 2_000 + 7)
    limited = await create_key(runtime, msp, ["read"], [tenants[1].id, tenants[3].id])

    async def pages(headers: dict[str, str], limit: int) -> list[dict]:
        answers, cursor = [], None
        while True:
            query = {"limit": limit, **({"cursor": cursor} if cursor else {})}
            r = await client.get("/v1/usage", params=query, headers=headers)
            assert r.status_code == 200, r.text
            answers.append(r.json())
            cursor = r.json()["next_cursor"]
            if cursor is None:
                return answers

    for headers, seen in (
        (msp.headers, tenants),
        ({"Authorization": f"Bearer {limited}"}, [tenants[1], tenants[3]]),
    ):
        answers = await pages(headers, limit=2)
        assert [len(a["tenants"]) for a in answers][:-1] == [2] * (len(answers) - 1)
        listed = [t for a in answers for t in a["tenants"]]
        assert [t["tenant_id"] for t in listed] == [str(t.id) for t in reversed(seen)]
        for t in listed:
            figures = (t["protected_seats"], t["retained_seats"], t["stored_bytes"])
            assert figures == want[t["tenant_id"]]
        total = tuple(sum(want[str(t.id)][k] for t in seen) for k in range(3))
        for a in answers:
            assert (a["protected_seats"], a["retained_seats"], a["stored_bytes"]) == total
    assert total == (4, 1, 2_007 + 4_000 * 3)  # the limited key's two tenants
    for params in ({"cursor": "!!!"}, {"cursor": encode_cursor({"t": "x"})}):
        r = await client.get("/v1/usage", params=params, headers=msp.headers)
        assert r.status_code == 400 and r.headers["content-type"] == PROBLEM, r.text
    for limit in (0, 201):
        r = await client.get("/v1/usage", params={"limit": limit}, headers=msp.headers)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text


async def test_tenant_list_shows_what_each_tenant_shows_and_filters_by_consent(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """The list reads rows, not entities: each listed tenant is exactly its own GET's answer
    (no secret in either), and the consent filter pages like the rest."""
    msp = await create_msp(runtime)
    granted = [await create_tenant(runtime, msp, name=f"Granted {i}") for i in range(3)]
    pending = [
        await create_tenant(runtime, msp, name=f"Pending {i}", consented=False) for i in range(2)
    ]
    listed = (await client.get("/v1/tenants", headers=msp.headers)).json()["items"]
    assert [t["name"] for t in listed] == [t.name for t in reversed(granted + pending)]
    for tenant in listed:
        one = await client.get(f"/v1/tenants/{tenant['id']}", headers=msp.headers)
        assert one.json() == tenant
    for state, want in (("granted", granted), ("pending", pending)):
        found = await every_page(client, "/v1/tenants", msp.headers, consent_state=state, limit=1)
        assert all(t["consent_state"] == state for t in found)
        assert [t["id"] for t in found] == [str(t.id) for t in reversed(want)]


async def test_audit_log_is_append_only(runtime: Runtime) -> None:
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    await create_msp(runtime)
    for statement in ("UPDATE audit_event SET action = 'x'", "DELETE FROM audit_event"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with runtime.db.session() as session:
                await session.execute(text(statement))


async def test_unknown_query_parameters_are_refused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    msp = await create_msp(runtime)
    r = await client.get("/v1/tenants", params={"limt": "5"}, headers=msp.headers)
    assert r.status_code == 400
    assert r.json()["errors"] == [{"loc": ["query", "limt"], "msg": "unknown parameter"}]
    assert (
        await client.get("/v1/tenants", params={"limit": "5"}, headers=msp.headers)
    ).status_code == 200
    # parameters that come from a dependency (the search filters) are known too
    r = await client.get(
        "/v1/search", params={"q": "x", "has_attachments": "true"}, headers=msp.headers
    )
    assert r.status_code == 200, r.text


async def test_lists_under_a_tenant_prove_it_by_their_rows_and_404_once_it_is_deleted(
    client: httpx.AsyncClient, world: World
) -> None:
    """A page with rows needs no separate look at its tenant (the rows are scoped and the
    tenant live); an empty page asks, so a tenant without rows still answers 200 and one
    deleted, out of the key's limit, or another MSP's answers 404 even though rows remain."""
    a, b = world.a, world.b
    lists = ("accounts", "jobs", "snapshots", "detections")
    for name in lists:
        full = await client.get(f"/v1/tenants/{a.tenant.id}/{name}", headers=a.msp.headers)
        assert full.status_code == 200 and full.json()["items"], (name, full.text)
        empty = await client.get(f"/v1/tenants/{a.other_tenant.id}/{name}", headers=a.msp.headers)
        assert empty.status_code == 200 and empty.json()["items"] == [], (name, empty.text)
        theirs = await client.get(f"/v1/tenants/{b.tenant.id}/{name}", headers=a.msp.headers)
        assert theirs.status_code == 404 and theirs.headers["content-type"] == PROBLEM
    limited = await world.key(["read"], [a.other_tenant.id])
    for name in lists:
        r = await client.get(f"/v1/tenants/{a.tenant.id}/{name}", headers=limited)
        assert r.status_code == 404, (name, r.text)
    deleted = await client.delete(f"/v1/tenants/{a.tenant.id}", headers=a.msp.headers)
    assert deleted.status_code == 204, deleted.text
    for name in lists:
        r = await client.get(f"/v1/tenants/{a.tenant.id}/{name}", headers=a.msp.headers)
        assert r.status_code == 404 and r.headers["content-type"] == PROBLEM, (name, r.text)


async def test_snapshot_list_pages_newest_first_and_filters(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Snapshots page by start time (they have no created_at): every row once, newest first,
    through cursors, with account, service and time filters; since after until is a 400."""
    from datetime import timedelta

    from safekeep.tenants.models import Snapshot, SnapshotStatus
    from safekeep.tenants.models.base import utcnow
    from tests.factories import add_finished_job, create_account

    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp)
    adele = await create_account(runtime, tenant)
    megan = await create_account(runtime, tenant, name="Megan Bowen")
    start = utcnow().replace(microsecond=0) - timedelta(days=1)
    made: list[tuple[str, str, str]] = []  # (account, service, started_at)
    async with runtime.db.session() as session:
        job = await add_finished_job(session, tenant.id)
        for i in range(9):
            account = adele if i % 3 else megan
            service = "mail" if i % 2 else "onedrive"
            # two snapshots share each start time: the id breaks the tie
            at = start + timedelta(hours=i // 2)
            session.add(
                Snapshot(
                    tenant_id=tenant.id,
                    account_id=account.id,
                    service=service,
                    seq=i + 1,
                    job_id=job.id,
                    status=SnapshotStatus.complete,
                    started_at=at,
                    completed_at=at,
                )
            )
            made.append((str(account.id), service, at.isoformat()))
    base = f"/v1/tenants/{tenant.id}/snapshots"

    async def walk(**params: str) -> list[dict]:
        return await every_page(client, base, msp.headers, limit=2, **params)

    every = await walk()
    assert len(every) == len({s["id"] for s in every}) == 9
    keys = [(s["started_at"], s["id"]) for s in every]
    assert keys == sorted(keys, reverse=True)
    assert {s["seq"] for s in every} == set(range(1, 10))
    assert all(s["status"] == "complete" and s["tenant_id"] == str(tenant.id) for s in every)

    only = await walk(account_id=str(megan.id), service="mail")
    want = [m for m in made if m[0] == str(megan.id) and m[1] == "mail"]
    assert len(only) == len(want) and {s["account_id"] for s in only} == {str(megan.id)}
    since, until = start + timedelta(hours=1), start + timedelta(hours=3)
    window = await walk(since=since.isoformat(), until=until.isoformat())
    assert len(window) == sum(1 for i in range(9) if 1 <= i // 2 <= 3) == 6
    bad = await client.get(
        base,
        params={"since": until.isoformat(), "until": since.isoformat()},
        headers=msp.headers,
    )
    assert bad.status_code == 400 and bad.headers["content-type"] == PROBLEM


async def test_search_parameters_are_validated_one_by_one(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """The search filters are one query-parameter model: each bad value is still named in a
    422 problem, an unknown one is a 400, and repeated ones (service, file_type) are lists."""
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp)
    for path in ("/v1/search", f"/v1/tenants/{tenant.id}/search"):
        for name, value in (
            ("limit", "0"),
            ("limit", "101"),
            ("size_min", "-1"),
            ("date_from", "1700000000"),
            ("service", "fax"),
            ("sort", "random"),
            ("q", "x" * 1001),
            ("account_id", "not-a-uuid"),
        ):
            r = await client.get(path, params={"q": "a", name: value}, headers=msp.headers)
            assert r.status_code == 422, (path, name, r.text)
            assert r.headers["content-type"] == PROBLEM
            assert any(e["loc"][:2] == ["query", name] for e in r.json()["errors"]), r.text
        r = await client.get(path, params={"q": "a", "limt": "5"}, headers=msp.headers)
        assert r.status_code == 400 and r.json()["errors"][0]["loc"] == ["query", "limt"]
        ok = await client.get(
            path,
            params=[
                ("q", "invoice"),
                ("service", "mail"),
                ("service", "onedrive"),
                ("file_type", "pdf"),
                ("file_type", "docx"),
                ("date_from", "2026-01-01T00:00:00Z"),
                ("size_min", "0"),
                ("sort", "date_asc"),
                ("limit", "100"),
            ],
            headers=msp.headers,
        )
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"hits": [], "next_cursor": None, "total": 0}


async def test_msp_wide_reads_show_only_the_keys_tenants(
    client: httpx.AsyncClient, world: World
) -> None:
    """The tenant list and usage read with the scope as bind parameters: a key limited
    to one tenant sees only that one, and another MSP's key none of these tenants."""
    a, b = world.a, world.b
    limited = await world.key(["read"], [a.tenant.id])
    mine = {str(a.tenant.id), str(a.other_tenant.id)}
    for headers, want in ((a.msp.headers, mine), (limited, {str(a.tenant.id)})):
        tenants = (await client.get("/v1/tenants", headers=headers)).json()["items"]
        assert {t["id"] for t in tenants} == want
        usage = (await client.get("/v1/usage", headers=headers)).json()
        assert {t["tenant_id"] for t in usage["tenants"]} == want
        assert usage["protected_seats"] == sum(t["protected_seats"] for t in usage["tenants"])
    theirs = (await client.get("/v1/tenants", headers=b.msp.headers)).json()["items"]
    assert not mine & {t["id"] for t in theirs}
    usage = (await client.get("/v1/usage", headers=b.msp.headers)).json()
    assert not mine & {t["tenant_id"] for t in usage["tenants"]}
    # the account with a snapshot counts once, in its own tenant, and only for its MSP
    seats = {
        t["tenant_id"]: t["protected_seats"]
        for t in (await client.get("/v1/usage", headers=a.msp.headers)).json()["tenants"]
    }
    assert seats[str(a.tenant.id)] >= 1 and seats[str(a.other_tenant.id)] == 0
