"""A request that committed is answered as done when the queue is down at that moment.

The API hands the queue what a request's unit of work collected after the commit. The broker's
Redis client is synchronous and retries a restarting server for seconds: called on the event
loop it held every other request of the process, and its error became a 503 for a job that was
saved, whose retry by the client made a second job. The send now runs off the loop, for a
bounded time, and a queue that is down is logged; the scheduler's recovery sends what was
committed and not sent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import httpx
import pytest
import redis
from sqlalchemy import select

from safekeep.runtime import Runtime
from safekeep.tenants.models import Job, JobKind, JobStatus
from safekeep.tenants.outbox import Message
from tests.factories import create_msp, create_tenant


async def test_a_queue_outage_neither_blocks_the_process_nor_fails_a_committed_request(
    runtime: Runtime, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp)
    entered, released = threading.Event(), threading.Event()
    order: list[str] = []

    def restarting_redis(messages: Sequence[Message]) -> None:
        # What the broker's client does while Redis restarts: retries, then gives up.
        entered.set()
        released.wait(10)
        order.append("send gave up")
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:56379. Connection refused.")

    monkeypatch.setattr(runtime, "send", restarting_redis)
    post = asyncio.create_task(client.post(f"/v1/tenants/{tenant.id}/backups", headers=msp.headers))
    assert await asyncio.to_thread(entered.wait, 10)
    health = await client.get("/healthz")  # another request while the send is stuck
    order.append("another request answered")
    released.set()
    r = await post

    assert health.status_code == 200
    assert order == ["another request answered", "send gave up"]
    assert r.status_code == 202, r.text
    async with runtime.db.session() as session:
        jobs = (
            await session.execute(
                select(Job.id, Job.status).where(
                    Job.tenant_id == tenant.id, Job.kind == JobKind.backup
                )
            )
        ).all()
    assert [(str(i), s) for i, s in jobs] == [(r.json()["id"], JobStatus.queued)]


async def test_a_bug_in_sending_is_not_swallowed(
    runtime: Runtime, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the queue being down is forgiven: an actor that does not exist is a bug."""
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp)

    def unknown_actor(messages: Sequence[Message]) -> None:
        raise LookupError("no actor named 'run_backup'")

    monkeypatch.setattr(runtime, "send", unknown_actor)
    r = await client.post(f"/v1/tenants/{tenant.id}/backups", headers=msp.headers)
    assert r.status_code == 500, r.text
