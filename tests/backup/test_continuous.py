"""Continuous protection end to end: the engine subscribes a tenant's protected accounts at
graphsim, graphsim validates and notifies Safekeep's real API over HTTP, notifications mark
accounts dirty, and the debounced incremental backs the change up. Renewal, lifecycle
removal and the policy switching off are followed through too."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import uvicorn

from graphsim import Simulator, ops
from safekeep.api.app import create_app
from safekeep.backup.services.sharepoint.lists import SKIPPED_TEMPLATES
from safekeep.backup.subscriptions import sync_tenant
from safekeep.runtime import Runtime
from safekeep.settings import Settings
from safekeep.tenants import outbox
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import (
    Account,
    GraphSubscription,
    Job,
    JobStatus,
    SubscriptionStatus,
    utcnow,
)
from safekeep.tenants.outbox import Message
from safekeep.tenants.subscription import repository as subscription_repository
from safekeep.tenants.subscription import service as subscription_service
from tests.backup.harness import EngineHarness
from tests.fixtures.live import free_port

MIME = (
    b"From: Partner <p@example.com>\r\nTo: someone@example.com\r\nSubject: continuous\r\n"
    b"Content-Type: text/plain\r\n\r\nbacked up within minutes\r\n"
)


@contextmanager
def live_api(settings: Settings) -> Iterator[str]:
    """Safekeep's API on a loopback port, on its own thread and event loop, so graphsim can
    call the public notification endpoints as Graph would."""
    runtime = Runtime.build(settings, send=lambda messages: None)
    port = free_port()
    config = uvicorn.Config(
        create_app(runtime=runtime), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def notified_api(h: EngineHarness) -> Iterator[str]:
    """The live API, with the engine's settings pointing the subscriptions it makes at it."""
    with live_api(h.runtime.settings) as api:
        h.runtime.settings = h.runtime.settings.model_copy(update={"notification_base_url": api})
        yield api


async def rows(h: EngineHarness) -> list[GraphSubscription]:
    async with h.runtime.db.session() as session:
        return await subscription_repository.for_tenant(session, h.tenant.id)


async def wait_for(check: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def enqueue_changes(h: EngineHarness) -> tuple[list[uuid.UUID], list[Message]]:
    """One scheduler round with no debounce: the jobs started for dirty rows, and the messages
    their committed unit of work hands the queue."""
    with outbox.collect() as box:
        async with h.runtime.db.session() as session:
            started = await subscription_service.enqueue_changed(session, debounce=timedelta(0))
    return started, box.messages


async def finish(h: EngineHarness, job_id: uuid.UUID) -> None:
    """Mark a started job done without running it, so the next change may start another."""
    async with h.runtime.db.session() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        job.status = JobStatus.succeeded


async def job_params(h: EngineHarness, job_id: uuid.UUID) -> dict[str, object]:
    async with h.runtime.db.session() as session:
        job = await session.get(Job, job_id)
    assert job is not None
    return job.params


async def make_due_for_renewal(h: EngineHarness, stored: list[GraphSubscription]) -> None:
    async with h.runtime.db.session() as session:
        for r in stored:
            row = await session.get(GraphSubscription, r.id)
            assert row is not None
            row.next_action_at = utcnow() - timedelta(seconds=1)


async def backed_up_ids(h: EngineHarness, account: Account, service: str, kind: str) -> set[str]:
    """The external ids of the account's items of ``kind`` in the catalog now."""
    async with h.runtime.db.session() as session:
        return set(await catalog.open_external_ids(session, account.id, service, [kind]))


def sim_subscriptions(sim: Simulator) -> list[dict[str, object]]:
    with httpx.Client(base_url=sim.base_url, verify=sim.ssl_context()) as control:
        listed: list[dict[str, object]] = control.get("/_sim/subscriptions").json()
    return listed


def site_resources(sim: Simulator, site_id: str) -> set[str]:
    """What a site should be subscribed to, from graphsim's own state: every library's drive
    root and every list the backup collects."""
    tenant = sim.tenant()
    site = tenant.sites[site_id]
    return {f"drives/{d}/root" for d in site.drive_ids} | {
        f"sites/{site_id}/lists/{i}"
        for i in site.list_ids
        if tenant.lists[i].template not in SKIPPED_TEMPLATES
    }


async def test_notifications_drive_debounced_incrementals(
    scaleout_engine: EngineHarness, sim: Simulator
) -> None:
    h = scaleout_engine
    with notified_api(h) as api:
        found = await h.discover()
        accounts = [a for a in found if a.kind == "user" and a.protected]
        sites = [a for a in found if a.kind == "site" and a.protected]
        async with h.runtime.db.session() as session:
            # Nothing is asked for until the policy sets an RPO.
            assert await subscription_repository.tenants_needing_sync(session, utcnow(), 10) == []
        await h.set_policy(rpo_minutes=15)
        async with h.runtime.db.session() as session:
            due = await subscription_repository.tenants_needing_sync(session, utcnow(), 10)
        assert due == [h.tenant.id]

        result = await sync_tenant(h.runtime, str(h.tenant.id))
        expected = sum(
            1
            for a in accounts
            for s in ("mail", "calendar", "contacts", "onedrive")
            if (a.services_found or {}).get("mail" if s != "onedrive" else "onedrive", True)
        ) + sum(len(site_resources(sim, s.graph_id)) for s in sites)
        assert result.created == expected > 0, result
        at_graph = sim_subscriptions(sim)
        assert len(at_graph) == expected
        assert {s["notificationUrl"] for s in at_graph} == {f"{api}/v1/graph/notifications"}
        assert {s["lifecycleNotificationUrl"] for s in at_graph} == {f"{api}/v1/graph/lifecycle"}
        stored = await rows(h)
        assert all(r.status == SubscriptionStatus.active for r in stored)
        # The secret is at Graph, never in our database.
        assert all(r.client_state_hash and r.client_state_hash not in str(at_graph) for r in stored)
        # A new subscription covers the gap before it with one incremental.
        assert all(r.dirty_since is not None for r in stored)
        async with h.runtime.db.session() as session:
            assert await subscription_repository.tenants_needing_sync(session, utcnow(), 10) == []

        first, _messages = await enqueue_changes(h)
        assert len(first) == 1
        await finish(h, first[0])
        user = accounts[0]
        await h.backup(user, "mail")

        # A change at Graph reaches our API as a notification and marks that mailbox dirty.
        mid = sim.add_message(sim.tenant().id, user.graph_id, MIME)

        async def mailbox_dirty() -> bool:
            return any(
                r.dirty_since is not None and r.account_id == user.id and r.service == "mail"
                for r in await rows(h)
            )

        await wait_for(mailbox_dirty)
        dirty = [(r.account_id, r.service) for r in await rows(h) if r.dirty_since is not None]
        assert dirty == [(user.id, "mail")]
        started, messages = await enqueue_changes(h)
        assert len(started) == 1 and [m.actor for m in messages] == ["run_backup"]
        assert await job_params(h, started[0]) == {
            "account_ids": [str(user.id)],
            "services": ["mail"],
        }
        run, _skipped = await h.backup(user, "mail")
        assert run.counters.added >= 1
        assert mid in await backed_up_ids(h, user, "mail", "message")

        # Renewal before expiry: a PATCH at Graph, a later expiry here.
        mail_row = next(r for r in await rows(h) if r.account_id == user.id and r.service == "mail")
        await make_due_for_renewal(h, [mail_row])
        renewed = await sync_tenant(h.runtime, str(h.tenant.id))
        assert (renewed.renewed, renewed.created) == (1, 0)
        after = next(r for r in await rows(h) if r.id == mail_row.id)
        assert after.expires_at is not None and mail_row.expires_at is not None
        assert after.expires_at >= mail_row.expires_at
        assert after.next_action_at is not None and after.next_action_at > utcnow()

        # Graph removes a subscription: the lifecycle event brings a new one.
        async with httpx.AsyncClient(base_url=sim.base_url, verify=sim.ssl_context()) as control:
            resp = await control.post(
                f"/_sim/subscriptions/{mail_row.subscription_id}/lifecycle",
                json={"event": "subscriptionRemoved"},
            )
            assert resp.status_code == 202

        async def removed() -> bool:
            return any(
                r.id == mail_row.id and r.status == SubscriptionStatus.removed
                for r in await rows(h)
            )

        await wait_for(removed)
        recreated = await sync_tenant(h.runtime, str(h.tenant.id))
        assert recreated.created == 1
        fresh = next(r for r in await rows(h) if r.id == mail_row.id)
        assert fresh.status == SubscriptionStatus.active
        assert fresh.subscription_id != mail_row.subscription_id
        assert fresh.subscription_id in {s["id"] for s in sim_subscriptions(sim)}

        # The policy stops asking: every subscription goes, at Graph and here.
        await h.set_policy(rpo_minutes=None)
        async with h.runtime.db.session() as session:
            assert await subscription_repository.tenants_needing_sync(session, utcnow(), 10) == [
                h.tenant.id
            ]
        gone = await sync_tenant(h.runtime, str(h.tenant.id))
        assert gone.deleted == expected
        assert sim_subscriptions(sim) == []
        assert await rows(h) == []


async def test_a_site_is_subscribed_per_library_and_list_and_backed_up_on_change(
    scaleout_engine: EngineHarness, sim: Simulator
) -> None:
    h = scaleout_engine
    with notified_api(h):
        site = next(a for a in await h.discover() if a.kind == "site" and a.protected)
        wanted = site_resources(sim, site.graph_id)
        assert any(r.startswith("drives/") for r in wanted)
        assert any("/lists/" in r for r in wanted)
        await h.set_policy(rpo_minutes=15)
        await sync_tenant(h.runtime, str(h.tenant.id))

        def of_site(stored: list[GraphSubscription]) -> list[GraphSubscription]:
            return [r for r in stored if r.account_id == site.id]

        mine = of_site(await rows(h))
        assert {r.resource for r in mine} == wanted
        assert {r.service for r in mine} == {"sharepoint"}
        assert all(r.status == SubscriptionStatus.active for r in mine)
        at_graph = {str(s["resource"]): s for s in sim_subscriptions(sim)}
        assert wanted <= set(at_graph)
        assert {at_graph[r]["changeType"] for r in wanted} == {"updated"}

        # The first incremental after subscribing, then a baseline of the site.
        first, _messages = await enqueue_changes(h)
        await finish(h, first[0])
        await h.backup(site, "sharepoint")

        # A list item added at Graph: the list's subscription notifies, the site is dirty.
        tracker = sorted(r.rsplit("/", 1)[1] for r in wanted if "/lists/" in r)[0]
        item = sim.add_list_item(sim.tenant().id, tracker, {"Title": "continuous"})
        list_row = next(r for r in mine if r.resource.endswith(f"/lists/{tracker}"))

        async def site_dirty() -> bool:
            return any(r.id == list_row.id and r.dirty_since is not None for r in await rows(h))

        await wait_for(site_dirty)
        dirty = {(r.account_id, r.service) for r in await rows(h) if r.dirty_since is not None}
        assert dirty == {(site.id, "sharepoint")}
        started, _messages = await enqueue_changes(h)
        assert len(started) == 1
        assert await job_params(h, started[0]) == {
            "account_ids": [str(site.id)],
            "services": ["sharepoint"],
        }
        run, _skipped = await h.backup(site, "sharepoint")
        assert run.counters.added >= 1
        assert f"list:{tracker}:{item}" in await backed_up_ids(h, site, "sharepoint", "list_item")

        # Renewal: each of the site's rows is PATCHed, none re-created.
        await make_due_for_renewal(h, mine)
        renewed = await sync_tenant(h.runtime, str(h.tenant.id))
        assert (renewed.renewed, renewed.created, renewed.deleted) == (len(wanted), 0, 0)
        after = {r.id: r for r in of_site(await rows(h))}
        assert set(after) == {r.id for r in mine}
        assert all(
            (a.next_action_at or utcnow()) > utcnow() and a.status == SubscriptionStatus.active
            for a in after.values()
        )

        # A list deleted from the site: at the next renewal its subscription goes, here and
        # at Graph, and the others are renewed.
        with sim.engine.world.lock:
            tenant = sim.tenant()
            ops.delete_list(tenant, tenant.sites[site.graph_id], tenant.lists[tracker])
        await make_due_for_renewal(h, mine)
        pruned = await sync_tenant(h.runtime, str(h.tenant.id))
        assert (pruned.renewed, pruned.created, pruned.deleted) == (len(wanted) - 1, 0, 1)
        left = {r.resource for r in of_site(await rows(h))}
        assert left == wanted - {list_row.resource}
        assert list_row.subscription_id not in {s["id"] for s in sim_subscriptions(sim)}
