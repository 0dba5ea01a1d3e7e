"""RabbitMQ as the scale-out queue (``SAFEKEEP_BROKER_URL=amqp://...``), against the real server.

Dramatiq has no delayed delivery of its own on RabbitMQ: a delayed message waits on the server in
``<queue>.DQ`` until a worker's delay consumer takes it and moves it to ``<queue>`` when it is due.
Webhook retries and actor retries depend on that, so it is checked here on the server itself,
and once through the whole path of a webhook retry. Each test has a vhost of its own
(``rabbitmq_url``), deleted afterwards with its queues.
"""

from __future__ import annotations

import asyncio
import queue
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import dramatiq
import httpx
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware.asyncio import AsyncIO

from graphsim import Simulator
from safekeep.api.app import create_app
from safekeep.runtime import Runtime
from safekeep.settings import Settings
from safekeep.tenants.models import DeliveryStatus, WebhookDelivery
from safekeep.tenants.webhook import service as webhooks
from safekeep.workers import broker as queue_setup
from safekeep.workers import context
from tests.api.test_health import LogRecorder
from tests.backup.harness import sim_settings
from tests.e2e.conftest import Deployment, open_deployment
from tests.factories import create_msp, create_webhook, emit_event
from tests.fixtures.app import SentMessages, build_settings
from tests.fixtures.services import rabbitmq_api
from tests.fixtures.sim import running_sim
from tests.workers.receiver import Receiver

WAIT_SECONDS = 30.0


@pytest.fixture
def amqp_broker(rabbitmq_url: str) -> Iterator[RabbitmqBroker]:
    """A broker built as the application builds it, closed before its vhost is deleted."""
    broker = queue_setup.build_broker(Settings(_env_file=None, broker_url=rabbitmq_url))
    assert isinstance(broker, RabbitmqBroker)
    yield broker
    broker.close()


@contextmanager
def running_worker(broker: dramatiq.Broker, *queues: str) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(
        broker, queues=set(queues) or None, worker_threads=2, worker_timeout=100
    )
    worker.start()
    try:
        yield worker
    finally:
        worker.stop(timeout=10_000)


def recording_actor(
    broker: dramatiq.Broker, calls: queue.Queue[tuple[str, float]]
) -> dramatiq.Actor:
    """An async actor, as all of Safekeep's are: it runs on the AsyncIO middleware's loop."""

    async def record(value: str) -> None:
        asyncio.get_running_loop()  # raises unless it runs on an event loop
        calls.put((value, time.monotonic()))

    actor: dramatiq.Actor = dramatiq.actor(
        broker=broker, actor_name="record", queue_name="default"
    )(record)
    return actor


def test_the_application_builds_a_rabbitmq_broker_with_its_middleware(
    amqp_broker: RabbitmqBroker,
) -> None:
    kinds = {type(m) for m in amqp_broker.middleware}
    assert AsyncIO in kinds and queue_setup.CloseRuntimes in kinds
    assert amqp_broker.confirm_delivery  # a send after a commit is on the server when it returns


def test_a_message_waits_on_rabbitmq_until_a_worker_takes_it(
    amqp_broker: RabbitmqBroker,
) -> None:
    calls: queue.Queue[tuple[str, float]] = queue.Queue()
    actor = recording_actor(amqp_broker, calls)
    actor.send("tenant-1")
    # (ready, delayed, dead-lettered): on the server, not in this process.
    assert amqp_broker.get_queue_message_counts("default") == (1, 0, 0)
    with running_worker(amqp_broker):
        value, _at = calls.get(timeout=WAIT_SECONDS)
    assert value == "tenant-1"
    assert amqp_broker.get_queue_message_counts("default") == (0, 0, 0)


def test_a_delayed_message_waits_in_the_delay_queue_and_arrives_after_its_delay(
    amqp_broker: RabbitmqBroker,
) -> None:
    calls: queue.Queue[tuple[str, float]] = queue.Queue()
    actor = recording_actor(amqp_broker, calls)
    sent_at = time.monotonic()
    actor.send_with_options(args=("later",), delay=2_000)
    actor.send("now")
    assert amqp_broker.get_queue_message_counts("default") == (1, 1, 0)
    with running_worker(amqp_broker):
        first = calls.get(timeout=WAIT_SECONDS)
        second = calls.get(timeout=WAIT_SECONDS)
    assert [first[0], second[0]] == ["now", "later"]
    assert second[1] - sent_at >= 2.0
    assert first[1] - sent_at < 2.0
    assert amqp_broker.get_queue_message_counts("default") == (0, 0, 0)


def test_a_failed_message_is_retried_through_rabbitmq(amqp_broker: RabbitmqBroker) -> None:
    """Transient failures become retries with backoff (Dramatiq's Retries middleware), which
    go through the delay queue like any delayed message."""
    attempts: queue.Queue[float] = queue.Queue()
    failures_left = [1]

    async def flaky() -> None:
        attempts.put(time.monotonic())
        if failures_left[0]:
            failures_left[0] -= 1
            raise ConnectionError("Microsoft Graph went away")

    actor = dramatiq.actor(
        broker=amqp_broker, queue_name="default", max_retries=1, min_backoff=500
    )(flaky)
    actor.send()
    with running_worker(amqp_broker):
        first = attempts.get(timeout=WAIT_SECONDS)
        second = attempts.get(timeout=WAIT_SECONDS)
    assert second - first >= 0.2  # the backoff (500 ms, halved at worst by jitter) was waited
    assert amqp_broker.get_queue_message_counts("default") == (0, 0, 0)


def test_a_send_after_the_server_dropped_the_connection_still_arrives(
    amqp_broker: RabbitmqBroker, rabbitmq_url: str, rabbitmq_server_url: str, rabbitmq_http_url: str
) -> None:
    """The API's connection sits idle between requests and is lost to broker restarts and
    missed heartbeats; the next send must reconnect rather than lose its message."""
    calls: queue.Queue[tuple[str, float]] = queue.Queue()
    actor = recording_actor(amqp_broker, calls)
    actor.send("before")
    vhost = rabbitmq_url.rsplit("/", 1)[1]
    with rabbitmq_api(rabbitmq_server_url, rabbitmq_http_url) as api:
        ours = [c["name"] for c in api.get("/connections").json() if c["vhost"] == vhost]
        assert ours
        for name in ours:
            assert api.delete(f"/connections/{quote(name, safe='')}").status_code == 204
        actor.send("after")
        now = [c["name"] for c in api.get("/connections").json() if c["vhost"] == vhost]
    assert now and not set(now) & set(ours)  # a new connection carried it
    assert amqp_broker.get_queue_message_counts("default") == (2, 0, 0)


# --- a real actor: a webhook retry on RabbitMQ -------------------------------------------------


@pytest.fixture
def scaleout_settings(scaleout_settings: Settings) -> Settings:
    """These tests' receivers listen on loopback, which webhooks refuse unless told."""
    return scaleout_settings.model_copy(update={"webhook_allow_private_targets": True})


@pytest.fixture
def amqp_application(runtime: Runtime, rabbitmq_url: str) -> Iterator[dramatiq.Broker]:
    """Safekeep's own actors bound to RabbitMQ, and worker runtimes built from settings that
    share the test's database, as in a `safekeep worker` process."""
    settings = runtime.settings.model_copy(update={"broker_url": rabbitmq_url})
    broker = queue_setup.configure(settings)
    context.configure(settings, send=queue_setup.send_messages)
    yield broker
    broker.close()
    queue_setup.configure(Settings(_env_file=None))
    context.configure(Settings(_env_file=None), send=queue_setup.send_messages)
    context.forget_runtimes()


async def test_a_webhook_retry_waits_its_delay_on_rabbitmq(
    runtime: Runtime,
    amqp_application: dramatiq.Broker,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhooks, "RETRY_DELAYS", (1,))  # 30 s in production
    msp = await create_msp(runtime)
    await create_webhook(runtime, msp.id, receiver.url, ["backup.completed"])
    (delivery,), messages = await emit_event(runtime, msp.id, "backup.completed", {"job_id": "j1"})
    receiver.answers = [500, 200]
    queue_setup.send_messages(messages)  # what the unit of work does after its commit
    with running_worker(amqp_application, "webhooks"):
        deadline = time.monotonic() + WAIT_SECONDS
        row = None
        while time.monotonic() < deadline:
            async with runtime.db.session() as session:
                row = await session.get(WebhookDelivery, delivery.id)
            if row is not None and row.status == DeliveryStatus.delivered:
                break
            await asyncio.sleep(0.05)
    assert len(receiver.arrivals) == 2, receiver.arrivals
    # The retry was sent by the actor itself, with delay_ms, through the delay queue.
    assert receiver.arrivals[1] - receiver.arrivals[0] >= 1.0
    assert row is not None
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.delivered, 2, 200)


# --- /readyz ----------------------------------------------------------------------------------


async def readiness(settings: Settings) -> httpx.Response:
    runtime = Runtime.build(settings, send=SentMessages())
    try:
        transport = httpx.ASGITransport(app=create_app(runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/readyz")
    finally:
        await runtime.close()


async def test_readyz_reports_rabbitmq_as_the_queue(
    scaleout_settings: Settings, rabbitmq_url: str
) -> None:
    r = await readiness(scaleout_settings.model_copy(update={"broker_url": rabbitmq_url}))
    assert r.status_code == 200, r.text
    queue_check = r.json()["checks"]["queue"]
    assert (queue_check["backend"], queue_check["ok"], queue_check["error"]) == ("amqp", True, None)


@pytest.mark.parametrize("where", ["nothing listening", "no such vhost"])
async def test_readyz_names_rabbitmq_when_it_is_down(
    where: str,
    tmp_path: Path,
    sqlite_url: str,
    rabbitmq_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    password = f"pw-{uuid.uuid4().hex[:8]}"
    if where == "nothing listening":
        url = f"amqp://safekeep:{password}@127.0.0.1:9/"  # the discard port: refused
    else:
        url = f"{rabbitmq_url}-gone"  # the server answers, the handshake refuses the vhost
    logs = LogRecorder.install(monkeypatch)
    r = await readiness(build_settings(tmp_path, database_url=sqlite_url, broker_url=url))
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["database"]["ok"] and checks["blobstore"]["ok"] and checks["search"]["ok"]
    assert checks["queue"]["backend"] == "amqp"
    # The answer names the kind of failure; the operator's log says which.
    assert not checks["queue"]["ok"] and checks["queue"]["error"] == "ConnectionError"
    [logged] = [e for e in logs if e["event"] == "readiness_check_failed"]
    assert logged["check"] == "queue"
    assert ("vhost" if where == "no such vhost" else "Connection refused") in logged["error"]
    assert password not in r.text and password not in logged["error"]


# --- one backup through a worker process on RabbitMQ ------------------------------------------


@pytest.fixture
def small_sim(tmp_path: Path) -> Iterator[Simulator]:
    yield from running_sim(tmp_path, seed=11, users=2, messages=5, files=10, sites=1, list_items=2)


@pytest.fixture
async def amqp_deployment(
    tmp_path: Path, scaleout_settings: Settings, rabbitmq_url: str, small_sim: Simulator
) -> AsyncIterator[Deployment]:
    """``tests/e2e``'s deployment with RabbitMQ in place of Redis (and so no shared Redis
    limiter: each worker process throttles on its own)."""
    settings = sim_settings(scaleout_settings, small_sim).model_copy(
        update={"broker_url": rabbitmq_url, "task_lease_seconds": 4.0}
    )
    assert settings.resolved_redis_url is None
    amqp = queue_setup.configure(settings)
    try:
        async with open_deployment(tmp_path, settings, small_sim, "AMQP") as deployment:
            yield deployment
    finally:
        amqp.close()


async def test_a_backup_runs_through_a_worker_process_on_rabbitmq(
    amqp_deployment: Deployment, rabbitmq_url: str, rabbitmq_server_url: str, rabbitmq_http_url: str
) -> None:
    deployment = amqp_deployment
    worker = deployment.start_worker(threads=2)
    tenant = await deployment.onboard(services=["onedrive", "mail"])
    job = await deployment.backup(tenant["id"], timeout=120)
    assert job["status"] == "succeeded", job
    assert job["progress"]["tasks_total"] == job["progress"]["tasks_done"] >= 2
    snapshots = await deployment.get(f"/v1/tenants/{tenant['id']}/snapshots")
    assert sum(s["items_total"] for s in snapshots["items"]) > 0
    assert worker.poll() is None  # still serving
    # Dramatiq's layout on the server: each queue with its delay and dead-letter queues.
    vhost = rabbitmq_url.rsplit("/", 1)[1]
    with rabbitmq_api(rabbitmq_server_url, rabbitmq_http_url) as api:
        names = {q["name"] for q in api.get(f"/queues/{vhost}").json()}
    assert {"default", "default.DQ", "default.XQ", "backup", "backup.DQ", "backup.XQ"} <= names
