"""Webhook deliveries: signed, recorded, retried with backoff, given up after the last try."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from standardwebhooks import Webhook, WebhookVerificationError

from safekeep.runtime import Runtime
from safekeep.settings import Settings
from safekeep.tenants.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from safekeep.tenants.webhook import repository
from safekeep.tenants.webhook import service as webhooks
from safekeep.workers.webhooks import deliver
from tests.factories import create_msp, create_webhook, emit_event
from tests.fixtures.app import SentMessages
from tests.plans import Recorder, plans_of
from tests.workers.receiver import Receiver


@pytest.fixture
def scaleout_settings(scaleout_settings: Settings) -> Settings:
    """These tests' receivers listen on loopback, which webhooks refuse unless told."""
    return scaleout_settings.model_copy(update={"webhook_allow_private_targets": True})


def signatures(headers: dict[str, str]) -> tuple[int, list[str]]:
    """The documented header's timestamp and its ``v1`` signatures, in order."""
    parts = [p.split("=", 1) for p in headers["safekeep-signature"].split(",")]
    (timestamp,) = [value for name, value in parts if name == "t"]
    return int(timestamp), [value for name, value in parts if name == "v1"]


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does with the documented header: any one ``v1`` may match."""
    timestamp, v1s = signatures(headers)
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    fresh = abs(time.time() - timestamp) < 300
    return fresh and any(hmac.compare_digest(v1, expected.hexdigest()) for v1 in v1s)


async def test_delivery_is_signed_retried_and_recorded(
    client: httpx.AsyncClient, worker_runtime: Runtime, sent: SentMessages, receiver: Receiver
) -> None:
    runtime = worker_runtime
    msp = await create_msp(runtime)
    r = await client.post(
        "/v1/webhooks",
        json={"url": receiver.url, "events": ["backup.completed", "export.ready"]},
        headers=msp.headers,
    )
    secret = r.json()["secret"]
    webhook_id = r.json()["id"]
    (delivery,), messages = await emit_event(runtime, msp.id, "backup.completed", {"job_id": "j1"})
    assert [m.actor for m in messages] == ["deliver_webhook"]
    receiver.answers = [500]
    await deliver(str(delivery.id))
    async with runtime.db.session() as session:
        row = await session.get(WebhookDelivery, delivery.id)
    assert row is not None
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.pending, 1, 500)
    retry = sent.messages[-1]
    assert (retry.actor, retry.args, retry.delay_ms) == (
        "deliver_webhook",
        (str(delivery.id),),
        30_000,
    )
    await deliver(str(delivery.id))
    async with runtime.db.session() as session:
        row = await session.get(WebhookDelivery, delivery.id)
    assert row is not None and row.status == DeliveryStatus.delivered and row.attempts == 2
    assert len(receiver.received) == 2
    headers, body = receiver.received[-1]
    assert verify(secret, headers, body)
    assert not verify("whsec_wrong", headers, body)
    payload = json.loads(body)
    assert payload["type"] == "backup.completed" and payload["data"] == {"job_id": "j1"}
    assert headers["safekeep-event-id"] == payload["id"]
    # delivered: a redelivered message sends nothing more
    await deliver(str(delivery.id))
    assert len(receiver.received) == 2
    listed = (await client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=msp.headers)).json()
    assert [(d["status"], d["attempts"]) for d in listed["items"]] == [("delivered", 2)]


async def test_delivery_gives_up_after_the_last_retry(
    worker_runtime: Runtime, receiver: Receiver
) -> None:
    runtime = worker_runtime
    msp = await create_msp(runtime)
    await create_webhook(runtime, msp.id, receiver.url, ["export.ready"])
    (delivery,), _messages = await emit_event(runtime, msp.id, "export.ready")
    receiver.answers = [503] * 10
    for _ in range(len(webhooks.RETRY_DELAYS) + 1):
        await deliver(str(delivery.id))
    async with runtime.db.session() as session:
        row = await session.get(WebhookDelivery, delivery.id)
    assert row is not None
    assert row.status == DeliveryStatus.failed
    assert row.attempts == len(webhooks.RETRY_DELAYS) + 1
    assert row.next_attempt_at is None


async def test_unreachable_endpoint_is_an_attempt_not_a_crash(worker_runtime: Runtime) -> None:
    runtime = worker_runtime
    msp = await create_msp(runtime)
    await create_webhook(runtime, msp.id, "http://127.0.0.1:9/nothing", ["export.ready"])
    (delivery,), _messages = await emit_event(runtime, msp.id, "export.ready")
    await deliver(str(delivery.id))
    async with runtime.db.session() as session:
        row = await session.get(WebhookDelivery, delivery.id)
    assert row is not None and row.attempts == 1 and row.status == DeliveryStatus.pending
    assert row.last_error and "Connect" in row.last_error


async def test_a_receiver_that_drips_its_answer_is_cut_off_at_the_timeout(
    worker_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver (any MSP may name one) that answers a byte every 0.2 s keeps each read
    within a per-read timeout for ever: the attempt has one deadline in all, and the worker's
    thread is free after it. (A 1 s deadline instead of the deployed one, to keep it quick.)"""
    monkeypatch.setattr("safekeep.workers.webhooks.TIMEOUT_SECONDS", 1.0)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            for byte in answer:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.2)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(drip, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        runtime = worker_runtime
        msp = await create_msp(runtime)
        await create_webhook(runtime, msp.id, f"http://127.0.0.1:{port}/hook", ["export.ready"])
        (delivery,), _messages = await emit_event(runtime, msp.id, "export.ready")
        started = time.monotonic()
        await deliver(str(delivery.id))
        took = time.monotonic() - started
    finally:
        server.close()
    assert took < 5, took  # the whole answer would take about 47 s
    async with runtime.db.session() as session:
        row = await session.get(WebhookDelivery, delivery.id)
    assert row is not None and row.attempts == 1 and row.status == DeliveryStatus.pending
    assert row.last_error and "Timeout" in row.last_error, row.last_error


async def test_a_failed_delivery_is_sent_again_on_request_as_the_same_message(
    client: httpx.AsyncClient, worker_runtime: Runtime, sent: SentMessages, receiver: Receiver
) -> None:
    """A receiver down for longer than the retries: its MSP asks for the delivery again once
    it is back. The same event and ``webhook-id`` (a Standard Webhooks receiver that kept the
    first copy can tell), a fresh signature, the schedule from its start; one redelivery
    at a time; another MSP's key, or this MSP's webhook with another's delivery, finds
    nothing; the request is audited."""
    runtime = worker_runtime
    msp, other = await create_msp(runtime), await create_msp(runtime, "Other MSP")
    r = await client.post(
        "/v1/webhooks",
        json={"url": receiver.url, "events": ["backup.completed"]},
        headers=msp.headers,
    )
    secret, webhook_id = r.json()["secret"], r.json()["id"]
    theirs, _ = await create_webhook(runtime, other.id, receiver.url, ["backup.completed"])
    (delivery,), _ = await emit_event(runtime, msp.id, "backup.completed")
    receiver.answers = [503] * (len(webhooks.RETRY_DELAYS) + 1)
    for _ in range(len(webhooks.RETRY_DELAYS) + 1):
        await deliver(str(delivery.id))
    (first_headers, first_body), *_ = receiver.received
    url = f"/v1/webhooks/{webhook_id}/deliveries/{delivery.id}/redeliver"

    # nothing of another MSP's, in either direction
    assert (await client.post(url, headers=other.headers)).status_code == 404
    (their,), _ = await emit_event(runtime, other.id, "backup.completed")
    crossed = f"/v1/webhooks/{webhook_id}/deliveries/{their.id}/redeliver"
    assert (await client.post(crossed, headers=msp.headers)).status_code == 404
    mine_under_theirs = f"/v1/webhooks/{theirs.id}/deliveries/{delivery.id}/redeliver"
    for key in (msp, other):
        assert (await client.post(mine_under_theirs, headers=key.headers)).status_code == 404

    sent.messages.clear()
    receiver.answers = [204]
    both = await asyncio.gather(*(client.post(url, headers=msp.headers) for _ in range(2)))
    assert sorted(r.status_code for r in both) == [202, 409], [r.text for r in both]
    again = next(r.json() for r in both if r.status_code == 202)
    assert (again["status"], again["attempts"], again["id"]) == ("pending", 0, str(delivery.id))
    assert [(m.actor, m.args) for m in sent.messages] == [("deliver_webhook", (str(delivery.id),))]
    await deliver(str(delivery.id))
    headers, body = receiver.received[-1]
    assert body == first_body and verify(secret, headers, body)
    assert headers["webhook-id"] == first_headers["webhook-id"] == str(delivery.id)
    assert headers["safekeep-event-id"] == first_headers["safekeep-event-id"]
    async with runtime.db.session() as session:
        row = await session.get(WebhookDelivery, delivery.id)
    assert row is not None and (row.status, row.attempts) == (DeliveryStatus.delivered, 1)
    # delivered can be asked for again too (a receiver that lost what it stored)
    assert (await client.post(url, headers=msp.headers)).status_code == 202
    audit = await client.get(
        "/v1/audit-events", params={"action": "webhook.redelivered"}, headers=msp.headers
    )
    assert [e["details"]["delivery_id"] for e in audit.json()["items"]] == [str(delivery.id)] * 2


async def test_a_ping_reaches_one_endpoint_whatever_it_subscribes_to(
    client: httpx.AsyncClient, worker_runtime: Runtime, sent: SentMessages, receiver: Receiver
) -> None:
    runtime = worker_runtime
    msp, other = await create_msp(runtime), await create_msp(runtime, "Other MSP")
    created = []
    for events in (["export.ready"], ["backup.failed"]):
        r = await client.post(
            "/v1/webhooks", json={"url": receiver.url, "events": events}, headers=msp.headers
        )
        created.append(r.json())
    pinged, quiet = created
    url = f"/v1/webhooks/{pinged['id']}/ping"
    assert (await client.post(url, headers=other.headers)).status_code == 404
    sent.messages.clear()
    r = await client.post(url, headers=msp.headers)
    assert r.status_code == 202, r.text
    delivery = r.json()
    assert (delivery["event_type"], delivery["status"]) == ("webhook.ping", "pending")
    assert [(m.actor, m.args) for m in sent.messages] == [("deliver_webhook", (delivery["id"],))]
    await deliver(delivery["id"])
    ((headers, body),) = receiver.received  # this endpoint only
    assert verify(pinged["secret"], headers, body)
    payload = json.loads(body)
    assert payload["type"] == "webhook.ping" and payload["data"] == {"webhook_id": pinged["id"]}
    listed = await client.get(f"/v1/webhooks/{pinged['id']}/deliveries", headers=msp.headers)
    assert [(d["id"], d["status"]) for d in listed.json()["items"]] == [
        (delivery["id"], "delivered")
    ]
    listed = await client.get(f"/v1/webhooks/{quiet['id']}/deliveries", headers=msp.headers)
    assert listed.json()["items"] == []


async def test_settled_deliveries_are_kept_thirty_days_and_the_sweeps_read_by_index(
    any_runtime: Runtime,
) -> None:
    """The scheduler deletes delivered and failed deliveries past their 30 days (a pending
    one, however old, is kept for its retry), and both its reads of every MSP's deliveries
    go through an index, not the table."""
    runtime = any_runtime
    msp = await create_msp(runtime)
    endpoint, _ = await create_webhook(
        runtime, msp.id, "https://hooks.example.com/x", ["export.ready"]
    )
    now = webhooks.utcnow()
    old = now - webhooks.DELIVERY_RETENTION - timedelta(hours=1)
    kept_recent = now - webhooks.DELIVERY_RETENTION + timedelta(hours=1)
    made = {}
    async with runtime.db.session() as session:
        for name, status, created in (
            ("old delivered", DeliveryStatus.delivered, old),
            ("old failed", DeliveryStatus.failed, old),
            ("old pending", DeliveryStatus.pending, old),
            ("recent failed", DeliveryStatus.failed, kept_recent),
        ):
            row = WebhookDelivery(
                endpoint_id=endpoint.id,
                msp_id=msp.id,
                event_id=uuid.uuid4(),
                event_type="export.ready",
                payload={},
                status=status,
                created_at=created,
                next_attempt_at=old if status == DeliveryStatus.pending else None,
            )
            session.add(row)
            await session.flush()
            made[name] = row.id
    with Recorder(runtime, keep="webhook_delivery") as sent:
        async with runtime.db.session() as session:
            assert await webhooks.prune_deliveries(session) == 2
        async with runtime.db.session() as session:
            stale = await repository.stale_pending(session, now, 500)
    assert stale == [made["old pending"]]
    async with runtime.db.session() as session:
        left = set((await session.execute(select(WebhookDelivery.id))).scalars())
    assert left == {made["old pending"], made["recent failed"]}
    for sql, params in sent:
        for plan in await plans_of(runtime, sql.replace("DELETE FROM", "SELECT * FROM", 1), params):
            reads = plan.reads_of("webhook_delivery")
            assert reads and all("index" in r.lower() for r in reads), (sql, plan.steps)
            assert any("ix_webhook_delivery_" in r for r in reads), (sql, plan.steps)


async def test_an_endpoint_moves_and_changes_events_keeping_its_id_secret_and_record(
    client: httpx.AsyncClient, worker_runtime: Runtime, receiver: Receiver
) -> None:
    """A partner moving its receiver, or hearing other events, changes the endpoint rather
    than replacing it: a delivery not yet sent goes to the new URL, signed with the same
    secret; only the new events reach it from then on; another MSP changes nothing."""
    runtime = worker_runtime
    msp, other = await create_msp(runtime), await create_msp(runtime, "Other MSP")
    r = await client.post(
        "/v1/webhooks",
        json={"url": "https://old.example.com/hooks", "events": ["export.ready"]},
        headers=msp.headers,
    )
    created = r.json()
    url = f"/v1/webhooks/{created['id']}"
    (waiting,), _ = await emit_event(runtime, msp.id, "export.ready")

    assert (
        await client.patch(url, json={"url": receiver.url}, headers=other.headers)
    ).status_code == 404
    refusals: list[dict[str, Any]] = [
        {"url": None},
        {"events": None},
        {"events": []},
        {"events": ["backup.done"]},
    ]
    for refused in refusals:
        r = await client.patch(url, json=refused, headers=msp.headers)
        assert r.status_code == 422, (refused, r.text)
    assert (await client.get(url, headers=msp.headers)).json() == {
        k: v for k, v in created.items() if k != "secret"
    }

    r = await client.patch(
        url,
        json={"url": receiver.url, "events": ["backup.completed", "backup.completed"]},
        headers=msp.headers,
    )
    assert r.status_code == 200, r.text
    changed = r.json()
    assert (changed["id"], changed["url"], changed["events"]) == (
        created["id"],
        receiver.url,
        ["backup.completed"],
    )
    assert changed["description"] is None  # left out: kept
    r = await client.patch(url, json={"description": "Partner portal"}, headers=msp.headers)
    assert (r.json()["url"], r.json()["description"]) == (receiver.url, "Partner portal")

    await deliver(str(waiting.id))  # emitted before the move, sent after it: the new URL
    ((headers, body),) = receiver.received
    assert json.loads(body)["id"] == str(waiting.event_id)
    assert verify(created["secret"], headers, body)
    assert await emit_event(runtime, msp.id, "export.ready") == ([], [])  # no longer heard
    (heard,), _ = await emit_event(runtime, msp.id, "backup.completed")
    assert heard.endpoint_id == uuid.UUID(created["id"])
    audit = await client.get(
        "/v1/audit-events", params={"action": "webhook.updated"}, headers=msp.headers
    )
    parsed = httpx.URL(receiver.url)
    origin = f"{parsed.scheme}://{parsed.host}:{parsed.port}"
    assert parsed.path not in ("", "/") and not origin.endswith(parsed.path)
    assert [e["details"] for e in audit.json()["items"]] == [
        {"fields": ["description"]},
        # (the audit log keeps the origin only: the path may be the receiver's credential)
        {"fields": ["events", "url"], "url": origin, "events": ["backup.completed"]},
    ]


async def test_every_event_at_once(client: httpx.AsyncClient, runtime: Runtime) -> None:
    msp = await create_msp(runtime)
    r = await client.post(
        "/v1/webhooks",
        json={"url": "https://hooks.example.com/all", "events": list(webhooks.EVENT_TYPES)},
        headers=msp.headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["events"] == sorted(webhooks.EVENT_TYPES)


async def test_a_rotated_secret_signs_beside_the_new_one_until_its_overlap_ends(
    client: httpx.AsyncClient, worker_runtime: Runtime, receiver: Receiver
) -> None:
    """A partner rotating a secret: from the answer on, deliveries are signed with the new
    secret first and the old one beside it (both headers, each verifiable with either),
    until the overlap ends; a rotation with none (a leaked secret) stops the old one at
    once. Rotations racing on one endpoint each leave their secret valid; another MSP's
    key rotates nothing; an idempotent replay does not show the secret again."""
    runtime = worker_runtime
    msp, other = await create_msp(runtime), await create_msp(runtime, "Other MSP")
    r = await client.post(
        "/v1/webhooks", json={"url": receiver.url, "events": ["export.ready"]}, headers=msp.headers
    )
    first = r.json()["secret"]
    url = f"/v1/webhooks/{r.json()['id']}"

    async def delivered() -> tuple[dict[str, str], bytes]:
        (delivery,), _ = await emit_event(runtime, msp.id, "export.ready")
        await deliver(str(delivery.id))
        return receiver.received[-1]

    def standard(secret: str, headers: dict[str, str], body: bytes) -> bool:
        try:
            Webhook(secret).verify(body, headers)
        except WebhookVerificationError:
            return False
        return True

    assert (await client.post(f"{url}/secret", json={}, headers=other.headers)).status_code == 404
    for overlap in (-1, 7 * 86_400 + 1):
        r = await client.post(
            f"{url}/secret", json={"previous_secret_expires_in": overlap}, headers=msp.headers
        )
        assert r.status_code == 422, r.text
    headers, body = await delivered()
    assert len(signatures(headers)[1]) == 1 and verify(first, headers, body)

    before = webhooks.utcnow()
    rotate = {**msp.headers, "Idempotency-Key": "rotate-1"}
    r = await client.post(f"{url}/secret", json={}, headers=rotate)
    after = webhooks.utcnow()
    assert r.status_code == 200, r.text
    second = r.json()["secret"]
    assert second.startswith("whsec_") and second != first
    expires = datetime.fromisoformat(r.json()["previous_secret_expires_at"])
    assert before + timedelta(days=1) <= expires <= after + timedelta(days=1)
    replay = await client.post(f"{url}/secret", json={}, headers=rotate)
    assert (replay.status_code, replay.json()["secret"]) == (200, None)
    headers, body = await delivered()
    timestamp, v1s = signatures(headers)
    assert v1s == [
        hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        for key in (second, first)
    ]
    assert headers["webhook-signature"].count("v1,") == 2
    for key in (first, second):
        assert verify(key, headers, body) and standard(key, headers, body)
    assert (await client.get(url, headers=msp.headers)).json()["previous_secret_expires_at"]

    # The overlap over: the old secret signs nothing more.
    async with runtime.db.session() as session:
        row = await session.get(WebhookEndpoint, uuid.UUID(r.json()["id"]))
        assert row is not None
        row.previous_secret_expires_at = webhooks.utcnow() - timedelta(seconds=1)
    headers, body = await delivered()
    assert verify(second, headers, body) and standard(second, headers, body)
    assert not verify(first, headers, body) and not standard(first, headers, body)

    # A leaked secret: replaced with no overlap.
    r = await client.post(
        f"{url}/secret", json={"previous_secret_expires_in": 0}, headers=msp.headers
    )
    third = r.json()["secret"]
    assert r.json()["previous_secret_expires_at"] is None
    headers, body = await delivered()
    assert verify(third, headers, body) and standard(third, headers, body)
    assert not any(verify(k, headers, body) or standard(k, headers, body) for k in (first, second))

    # Two rotations at once settle one after the other: both answers' secrets sign. (The
    # body is optional: one of them sends none, as `curl -X POST` would.)
    both = await asyncio.gather(
        client.post(f"{url}/secret", json={}, headers=msp.headers),
        client.post(f"{url}/secret", headers=msp.headers),
    )
    assert [r.status_code for r in both] == [200, 200], [r.text for r in both]
    headers, body = await delivered()
    for answer in both:
        assert verify(answer.json()["secret"], headers, body)
    assert not verify(third, headers, body)

    audit = await client.get(
        "/v1/audit-events", params={"action": "webhook.secret_rotated"}, headers=msp.headers
    )
    assert len(audit.json()["items"]) == 4


async def test_racing_rotations_each_leave_their_secret_signing_on_both_databases(
    any_client: httpx.AsyncClient, any_runtime: Runtime
) -> None:
    """Several rotations of one endpoint at once: they replace one another in some order,
    so the endpoint ends with the last one's secret and the one before it as its previous
    secret, whichever database serialises them; nothing is lost to a stale read."""
    runtime = any_runtime
    msp = await create_msp(runtime)
    endpoint, _ = await create_webhook(
        runtime, msp.id, "https://hooks.example.com/race", ["export.ready"]
    )
    url = f"/v1/webhooks/{endpoint.id}/secret"
    answers = await asyncio.gather(*(any_client.post(url, headers=msp.headers) for _ in range(4)))
    assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
    given = [r.json()["secret"] for r in answers]
    async with runtime.db.session() as session:
        row = await session.get(WebhookEndpoint, endpoint.id)
        assert row is not None
        current, previous = webhooks.signing_secrets(runtime.settings, row, webhooks.utcnow())
    assert current in given and previous in given and current != previous
    audit = await any_client.get(
        "/v1/audit-events", params={"action": "webhook.secret_rotated"}, headers=msp.headers
    )
    assert len(audit.json()["items"]) == 4


async def test_failed_deliveries_since_an_instant_are_sent_again_on_request(
    client: httpx.AsyncClient, worker_runtime: Runtime, sent: SentMessages, receiver: Receiver
) -> None:
    """A receiver down for a day: its MSP lists what failed (``status=failed``) and recovers
    everything that failed since the outage began in one request; what failed before that
    instant, what is pending and what was delivered are left alone; another MSP recovers
    nothing of it; a second call finds nothing more."""
    runtime = worker_runtime
    msp, other = await create_msp(runtime), await create_msp(runtime, "Other MSP")
    endpoint, _ = await create_webhook(runtime, msp.id, receiver.url, ["export.ready"])
    made = [(await emit_event(runtime, msp.id, "export.ready"))[0][0] for _ in range(5)]
    now = webhooks.utcnow()
    outage = now - timedelta(hours=20)
    states = [  # (status, created at)
        (DeliveryStatus.failed, outage - timedelta(hours=2)),  # failed before: left alone
        (DeliveryStatus.failed, outage + timedelta(hours=1)),
        (DeliveryStatus.failed, outage + timedelta(hours=3)),
        (DeliveryStatus.delivered, outage + timedelta(hours=4)),
        (DeliveryStatus.pending, outage + timedelta(hours=5)),
    ]
    async with runtime.db.session() as session:
        for delivery, (status, created) in zip(made, states, strict=True):
            row = await session.get(WebhookDelivery, delivery.id)
            assert row is not None
            row.status, row.created_at, row.attempts = status, created, 6
    url = f"/v1/webhooks/{endpoint.id}"

    failed = await client.get(f"{url}/deliveries", params={"status": "failed"}, headers=msp.headers)
    assert {d["id"] for d in failed.json()["items"]} == {str(d.id) for d in made[:3]}
    body = {"since": outage.isoformat()}
    assert (
        await client.post(f"{url}/recover", json=body, headers=other.headers)
    ).status_code == 404
    sent.messages.clear()
    r = await client.post(f"{url}/recover", json=body, headers=msp.headers)
    assert (r.status_code, r.json()) == (202, {"scheduled": 2}), r.text
    assert sorted(m.args for m in sent.messages) == sorted((str(d.id),) for d in made[1:3])
    again = await client.post(f"{url}/recover", json=body, headers=msp.headers)
    assert again.json() == {"scheduled": 0}
    pending = await client.get(
        f"{url}/deliveries", params={"status": "pending"}, headers=msp.headers
    )
    shown = {d["id"]: d["attempts"] for d in pending.json()["items"]}
    assert shown == {str(made[1].id): 0, str(made[2].id): 0, str(made[4].id): 6}
    for delivery in made[1:3]:
        await deliver(str(delivery.id))
    assert len(receiver.received) == 2
    failed = await client.get(f"{url}/deliveries", params={"status": "failed"}, headers=msp.headers)
    assert [d["id"] for d in failed.json()["items"]] == [str(made[0].id)]
    r = await client.get(f"{url}/deliveries", params={"status": "lost"}, headers=msp.headers)
    assert r.status_code == 422
    audit = await client.get(
        "/v1/audit-events", params={"action": "webhook.recovered"}, headers=msp.headers
    )
    assert [e["details"]["scheduled"] for e in audit.json()["items"]] == [0, 2]


async def test_recover_on_both_databases(
    any_client: httpx.AsyncClient, any_runtime: Runtime
) -> None:
    runtime = any_runtime
    msp = await create_msp(runtime)
    endpoint, _ = await create_webhook(
        runtime, msp.id, "https://hooks.example.com/r", ["export.ready"]
    )
    made = [(await emit_event(runtime, msp.id, "export.ready"))[0][0] for _ in range(3)]
    async with runtime.db.session() as session:
        for delivery in made[:2]:
            row = await session.get(WebhookDelivery, delivery.id)
            assert row is not None
            row.status, row.attempts = DeliveryStatus.failed, 6
    url = f"/v1/webhooks/{endpoint.id}/recover"
    since = {"since": (webhooks.utcnow() - timedelta(hours=1)).isoformat()}
    r = await any_client.post(url, json=since, headers=msp.headers)
    assert (r.status_code, r.json()) == (202, {"scheduled": 2}), r.text
    async with runtime.db.session() as session:
        rows = [await session.get(WebhookDelivery, d.id) for d in made]
    assert [(row.status, row.attempts) for row in rows if row is not None] == [
        (DeliveryStatus.pending, 0),
        (DeliveryStatus.pending, 0),
        (DeliveryStatus.pending, 0),
    ]
