"""Graph's change notifications: the handshake, clientState checks, lifecycle events, the
debounced incremental they lead to, subscription state per tenant and the policy's rpo."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest

from safekeep.runtime import Runtime
from safekeep.tenants import outbox
from safekeep.tenants.models import (
    Account,
    GraphSubscription,
    Job,
    JobKind,
    JobStatus,
    JobTrigger,
    SubscriptionStatus,
    Tenant,
    utcnow,
)
from safekeep.tenants.subscription import service
from tests import factories
from tests.factories import MspHandle, create_account, create_key, create_msp, create_tenant

SECRET = "a-client-state-secret-of-enough-length"


async def add_subscription(
    runtime: Runtime, tenant: Tenant, account: Account, service_name: str = "mail"
) -> GraphSubscription:
    return await factories.add_subscription(
        runtime, tenant, account, service_name, client_state=SECRET
    )


async def reload(runtime: Runtime, row: GraphSubscription) -> GraphSubscription:
    async with runtime.db.session() as session:
        found = await session.get(GraphSubscription, row.id)
    assert found is not None
    return found


def note(
    row: GraphSubscription, client_state: str | None = SECRET, **extra: str
) -> dict[str, object]:
    return {
        "subscriptionId": row.subscription_id,
        "clientState": client_state,
        "changeType": "created",
        "resource": f"Users/x/Messages/{uuid.uuid4()}",
        "tenantId": str(uuid.uuid4()),
        "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
        **extra,
    }


@pytest.fixture
async def setup(runtime: Runtime) -> tuple[MspHandle, Tenant, Account, GraphSubscription]:
    msp = await create_msp(runtime, "Notified MSP")
    tenant = await create_tenant(runtime, msp)
    account = await create_account(runtime, tenant)
    row = await add_subscription(runtime, tenant, account)
    return msp, tenant, account, row


@pytest.mark.parametrize("path", ["/v1/graph/notifications", "/v1/graph/lifecycle"])
async def test_validation_token_is_echoed_as_plain_text(
    client: httpx.AsyncClient, path: str
) -> None:
    token = "Validation: Testing client application reachability <b>x</b> & more"
    resp = await client.post(path, params={"validationToken": token})
    assert resp.status_code == 200
    assert resp.text == token
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.headers["x-content-type-options"] == "nosniff"
    too_long = await client.post(path, params={"validationToken": "x" * 1025})
    assert too_long.status_code == 422


async def test_genuine_notification_marks_dirty_once(
    runtime: Runtime,
    client: httpx.AsyncClient,
    setup: tuple[MspHandle, Tenant, Account, GraphSubscription],
) -> None:
    _msp, _tenant, _account, row = setup
    resp = await client.post("/v1/graph/notifications", json={"value": [note(row)]})
    assert resp.status_code == 202
    assert resp.content == b""
    first = await reload(runtime, row)
    assert first.dirty_since is not None
    assert first.last_notification_at is not None
    # A storm keeps the first time: the debounce window runs from it.
    resp = await client.post("/v1/graph/notifications", json={"value": [note(row)] * 50})
    assert resp.status_code == 202
    again = await reload(runtime, row)
    assert again.dirty_since == first.dirty_since
    assert again.last_notification_at is not None
    assert again.last_notification_at >= first.last_notification_at


@pytest.mark.parametrize("client_state", ["wrong", None, SECRET + "x", ""])
async def test_forged_or_unknown_notifications_change_nothing(
    runtime: Runtime,
    client: httpx.AsyncClient,
    setup: tuple[MspHandle, Tenant, Account, GraphSubscription],
    client_state: str | None,
) -> None:
    _msp, _tenant, _account, row = setup
    forged = note(row, client_state)
    unknown = {**note(row), "subscriptionId": str(uuid.uuid4())}
    resp = await client.post("/v1/graph/notifications", json={"value": [forged, unknown]})
    # The same answer as for a genuine one: nothing tells a forger what was wrong.
    assert resp.status_code == 202
    after = await reload(runtime, row)
    assert after.dirty_since is None
    assert after.last_notification_at is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"value": {}}',
        b'{"value": [{"clientState": "x"}]}',
        b'{"value": [{"subscriptionId": "' + b"x" * 101 + b'"}]}',
        b'{"value": [' + b",".join([b'{"subscriptionId": "a"}'] * 1001) + b"]}",
    ],
)
async def test_malformed_batches_are_400(
    runtime: Runtime,
    client: httpx.AsyncClient,
    setup: tuple[MspHandle, Tenant, Account, GraphSubscription],
    body: bytes,
) -> None:
    resp = await client.post(
        "/v1/graph/notifications", content=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "application/problem+json"
    assert (await reload(runtime, setup[3])).dirty_since is None


async def test_lifecycle_events(
    runtime: Runtime,
    client: httpx.AsyncClient,
    setup: tuple[MspHandle, Tenant, Account, GraphSubscription],
) -> None:
    msp, tenant, _account, row = setup
    other_account = await create_account(runtime, tenant, name="Bob Other")
    other = await add_subscription(runtime, tenant, other_account)
    before = utcnow()
    resp = await client.post(
        "/v1/graph/lifecycle",
        json={"value": [note(row, lifecycleEvent="reauthorizationRequired")]},
    )
    assert resp.status_code == 202
    renewed = await reload(runtime, row)
    assert renewed.next_action_at is not None and renewed.next_action_at <= utcnow()
    assert renewed.next_action_at >= before - timedelta(seconds=1)
    assert renewed.dirty_since is None
    await client.post(
        "/v1/graph/lifecycle", json={"value": [note(row, lifecycleEvent="subscriptionRemoved")]}
    )
    removed = await reload(runtime, row)
    assert removed.status == SubscriptionStatus.removed
    assert removed.dirty_since is not None  # changes may have gone unnoticed
    await client.post("/v1/graph/lifecycle", json={"value": [note(other, lifecycleEvent="missed")]})
    missed = await reload(runtime, other)
    assert missed.dirty_since is not None
    assert missed.status == SubscriptionStatus.active
    # A forged lifecycle event is ignored like a forged notification.
    third = await add_subscription(
        runtime, tenant, await create_account(runtime, tenant, name="C D")
    )
    await client.post(
        "/v1/graph/lifecycle",
        json={"value": [note(third, "forged", lifecycleEvent="subscriptionRemoved")]},
    )
    assert (await reload(runtime, third)).status == SubscriptionStatus.active
    del msp


async def test_dirty_accounts_become_one_incremental_per_tenant(
    runtime: Runtime, setup: tuple[MspHandle, Tenant, Account, GraphSubscription]
) -> None:
    _msp, tenant, account, row = setup
    second = await create_account(runtime, tenant, name="Second User")
    drive = await add_subscription(runtime, tenant, second, "onedrive")
    async with runtime.db.session() as session:
        await service.accept_changes(
            session,
            [
                service.Notice(str(row.subscription_id), SECRET),
                service.Notice(str(drive.subscription_id), SECRET),
            ],
        )
    # Inside the debounce window: nothing yet.
    with outbox.collect() as box:
        async with runtime.db.session() as session:
            assert await service.enqueue_changed(session, debounce=timedelta(minutes=5)) == []
    assert box.messages == []
    with outbox.collect() as box:
        async with runtime.db.session() as session:
            started = await service.enqueue_changed(session, debounce=timedelta(0))
    assert len(started) == 1
    assert [m.actor for m in box.messages] == ["run_backup"]
    async with runtime.db.session() as session:
        job = await session.get(Job, started[0])
    assert job is not None
    assert job.trigger == JobTrigger.change
    assert job.kind == JobKind.backup
    assert job.params == {
        "account_ids": sorted([str(account.id), str(second.id)]),
        "services": ["mail", "onedrive"],
    }
    assert (await reload(runtime, row)).dirty_since is None
    # While that backup runs, new changes wait for the next round instead of a second job.
    async with runtime.db.session() as session:
        await service.accept_changes(session, [service.Notice(str(row.subscription_id), SECRET)])
        again = await service.enqueue_changed(session, debounce=timedelta(0))
    assert again == []
    assert (await reload(runtime, row)).dirty_since is not None
    async with runtime.db.session() as session:
        found = await session.get(Job, job.id)
        assert found is not None
        found.status = JobStatus.succeeded
    with outbox.collect():
        async with runtime.db.session() as session:
            assert len(await service.enqueue_changed(session, debounce=timedelta(0))) == 1


async def test_subscription_state_is_listed_per_tenant(
    runtime: Runtime,
    client: httpx.AsyncClient,
    setup: tuple[MspHandle, Tenant, Account, GraphSubscription],
) -> None:
    msp, tenant, account, row = setup
    url = f"/v1/tenants/{tenant.id}/subscriptions"
    assert (await client.get(url)).status_code == 401
    other = await create_msp(runtime, "Other MSP")
    assert (await client.get(url, headers=other.headers)).status_code == 404
    missing = f"/v1/tenants/{uuid.uuid4()}/subscriptions"
    assert (await client.get(missing, headers=msp.headers)).status_code == 404
    limited = await create_key(runtime, msp, ["read"], tenant_ids=[uuid.uuid4()])
    assert (
        await client.get(url, headers={"Authorization": f"Bearer {limited}"})
    ).status_code == 404
    resp = await client.get(url, headers=msp.headers)
    assert resp.status_code == 200
    [item] = resp.json()["items"]
    assert item["account_id"] == str(account.id)
    assert item["service"] == "mail"
    assert item["resource"] == row.resource
    assert item["status"] == "active"
    assert item["dirty_since"] is None
    assert "client_state" not in str(resp.json())


async def test_subscriptions_page_newest_first_and_filter_by_status(
    runtime: Runtime,
    client: httpx.AsyncClient,
    setup: tuple[MspHandle, Tenant, Account, GraphSubscription],
) -> None:
    """A tenant of thousands of seats has a subscription per seat and service: the list pages
    like every other (each row once, newest first), and `?status=failed` finds those Graph
    refused among them. Another tenant's rows never show."""
    msp, tenant, account, first = setup
    rows = [first]
    for name in ("calendar", "contacts", "onedrive"):
        rows.append(await add_subscription(runtime, tenant, account, name))
    failed = {rows[1].id, rows[3].id}
    async with runtime.db.session() as session:
        for row_id in failed:
            row = await session.get(GraphSubscription, row_id)
            assert row is not None
            row.status = SubscriptionStatus.failed
            row.last_error = "Graph answered 403: ExtensionError"
    other_tenant = await create_tenant(runtime, msp, name="Fabrikam")
    await add_subscription(runtime, other_tenant, await create_account(runtime, other_tenant))
    url = f"/v1/tenants/{tenant.id}/subscriptions"

    async def every(**params: str | int) -> list[dict]:
        seen: list[dict] = []
        cursor = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            resp = await client.get(url, params=query, headers=msp.headers)
            assert resp.status_code == 200, resp.text
            assert len(resp.json()["items"]) <= int(str(params.get("limit", 50)))
            seen += resp.json()["items"]
            cursor = resp.json()["next_cursor"]
            if cursor is None:
                return seen

    listed = await every(limit=1)
    assert [i["service"] for i in listed] == ["onedrive", "contacts", "calendar", "mail"]
    assert {i["account_id"] for i in listed} == {str(account.id)}
    refused = await every(status="failed", limit=1)
    assert [i["service"] for i in refused] == ["onedrive", "calendar"]
    assert all(i["status"] == "failed" and "403" in i["last_error"] for i in refused)
    assert [i["service"] for i in await every(status="active")] == ["contacts", "mail"]
    for params, code in (
        ({"status": "broken"}, 422),
        ({"limit": 0}, 422),
        ({"limit": 201}, 422),
        ({"cursor": "!!!"}, 400),
    ):
        resp = await client.get(url, params=params, headers=msp.headers)
        assert resp.status_code == code and resp.headers["content-type"].startswith(
            "application/problem+json"
        ), (params, resp.text)


@pytest.mark.parametrize(
    ("value", "status"), [(15, 200), (None, 200), (4, 422), (721, 422), ("x", 422)]
)
async def test_policy_rpo_minutes_bounds(
    runtime: Runtime, client: httpx.AsyncClient, value: object, status: int
) -> None:
    msp = await create_msp(runtime, "Policy MSP")
    tenant = await create_tenant(runtime, msp)
    url = f"/v1/tenants/{tenant.id}/policy"
    resp = await client.put(url, json={"rpo_minutes": value}, headers=msp.headers)
    assert resp.status_code == status, resp.text
    got = (await client.get(url, headers=msp.headers)).json()
    assert got["rpo_minutes"] == (value if status == 200 else None)


async def test_rpo_cuts_the_debounce_short(
    runtime: Runtime,
    client: httpx.AsyncClient,
    setup: tuple[MspHandle, Tenant, Account, GraphSubscription],
) -> None:
    """A debounce longer than the tenant's rpo allows does not make it miss the rpo: the row
    goes once it has been dirty for rpo minus the incremental's time minus one tick."""
    msp, tenant, _account, row = setup
    url = f"/v1/tenants/{tenant.id}/policy"
    assert (await client.put(url, json={"rpo_minutes": 15}, headers=msp.headers)).status_code == 200
    dirty_at = utcnow()
    async with runtime.db.session() as session:
        await service.accept_changes(
            session, [service.Notice(str(row.subscription_id), SECRET)], now=dirty_at
        )
    debounce, tick = timedelta(hours=1), timedelta(minutes=1)
    deadline = timedelta(minutes=15) - service.EXPECTED_INCREMENTAL - tick
    assert service.wait_for(15, debounce=debounce, scheduler_interval=tick) == deadline
    assert service.wait_for(None, debounce=debounce, scheduler_interval=tick) == debounce
    early = dirty_at + deadline - timedelta(seconds=1)
    with outbox.collect() as box:
        async with runtime.db.session() as session:
            assert (
                await service.enqueue_changed(
                    session, debounce=debounce, scheduler_interval=tick, now=early
                )
                == []
            )
    assert box.messages == []
    assert (await reload(runtime, row)).dirty_since is not None
    with outbox.collect() as box:
        async with runtime.db.session() as session:
            started = await service.enqueue_changed(
                session, debounce=debounce, scheduler_interval=tick, now=dirty_at + deadline
            )
    assert len(started) == 1
    assert [m.actor for m in box.messages] == ["run_backup"]
    assert (await reload(runtime, row)).dirty_since is None
    # Without an rpo the same row would still be waiting for its hour.
    assert (
        await client.put(url, json={"rpo_minutes": None}, headers=msp.headers)
    ).status_code == 200


@pytest.mark.parametrize(
    ("interval", "debounce", "floor"), [(60, 30, 4), (60, 600, 13), (300, 3600, 67)]
)
async def test_policy_refuses_an_rpo_the_deployment_cannot_honour(
    runtime: Runtime,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    interval: float,
    debounce: float,
    floor: int,
) -> None:
    monkeypatch.setattr(runtime.settings, "scheduler_interval_seconds", interval)
    monkeypatch.setattr(runtime.settings, "notification_debounce_seconds", debounce)
    assert service.min_rpo_minutes(interval, debounce) == floor
    msp = await create_msp(runtime, "Floor MSP")
    tenant = await create_tenant(runtime, msp)
    url = f"/v1/tenants/{tenant.id}/policy"
    lowest = max(floor, 5)  # the schema's own minimum
    if lowest > 5:
        resp = await client.put(url, json={"rpo_minutes": lowest - 1}, headers=msp.headers)
        assert resp.status_code == 422, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert f"at least {floor}" in resp.json()["detail"]
        got = (await client.get(url, headers=msp.headers)).json()
        assert got["rpo_minutes"] is None  # nothing changed
    resp = await client.put(url, json={"rpo_minutes": lowest}, headers=msp.headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["rpo_minutes"] == lowest
    # Another MSP's tenant still answers 404 for an acceptable body.
    other = await create_msp(runtime, "Other floor MSP")
    resp = await client.put(url, json={"rpo_minutes": lowest}, headers=other.headers)
    assert resp.status_code == 404
    # A new tenant's policy meets the same floor (it was stored as given).
    listed = (await client.get("/v1/tenants", headers=msp.headers)).json()["items"]
    if lowest > 5:
        made = await client.post(
            "/v1/tenants",
            json={"name": "Too eager", "policy": {"rpo_minutes": lowest - 1}},
            headers=msp.headers,
        )
        assert made.status_code == 422, made.text
        assert made.headers["content-type"].startswith("application/problem+json")
        assert f"at least {floor}" in made.json()["detail"]
        assert (await client.get("/v1/tenants", headers=msp.headers)).json()["items"] == listed
    made = await client.post(
        "/v1/tenants",
        json={"name": "Patient", "policy": {"rpo_minutes": lowest}},
        headers=msp.headers,
    )
    assert made.status_code == 201, made.text
    policy = await client.get(f"/v1/tenants/{made.json()['id']}/policy", headers=msp.headers)
    assert policy.json()["rpo_minutes"] == lowest
