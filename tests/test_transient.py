"""One classification of infrastructure blips (safekeep/transient.py), and what it drives:
retries that wait out a restart, and the API's 503 with Retry-After instead of a 500."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dramatiq.errors
import httpx
import opensearchpy.exceptions
import psycopg
import psycopg.errors
import pytest
import redis
from sqlalchemy import exc as sa_exc

from safekeep.api.app import create_app
from safekeep.graph.errors import GraphError, TransientError
from safekeep.runtime import Runtime
from safekeep.storage.errors import BlobNotFound, BlobStoreUnavailable, IntegrityError
from safekeep.transient import is_retryable, is_transient, retry_transient
from tests.fixtures.app import SentMessages, build_settings


def _wrapped(cause: BaseException) -> RuntimeError:
    try:
        raise RuntimeError("while doing something") from cause
    except RuntimeError as exc:
        return exc


BLIPS = [
    sa_exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("connection refused")),
    sa_exc.DBAPIError("SELECT 1", {}, Exception("closed"), connection_invalidated=True),
    sa_exc.TimeoutError("QueuePool limit reached"),
    psycopg.OperationalError("server closed the connection unexpectedly"),
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg.errors.SerializationFailure("could not serialize access"),
    psycopg.errors.DeadlockDetected("deadlock detected"),
    sa_exc.OperationalError("UPDATE", {}, sqlite3.OperationalError("database is locked")),
    redis.ConnectionError("Connection closed by server."),
    redis.TimeoutError("Timeout reading from socket"),
    redis.BusyLoadingError("Redis is loading the dataset in memory"),
    dramatiq.errors.ConnectionClosed(Exception("gone")),
    BlobStoreUnavailable("S3 bucket unavailable: SlowDown"),
    opensearchpy.exceptions.ConnectionError("N/A", "refused", Exception("refused")),
    ConnectionRefusedError(111, "Connection refused"),
    _wrapped(redis.ConnectionError("Error 111 connecting")),
]

NOT_BLIPS = [
    ValueError("bad input"),
    sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key")),
    sa_exc.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: tenant")),
    redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    BlobNotFound("tenant/x"),
    IntegrityError("authentication tag mismatch"),
    GraphError(400, "invalidRequest", "bad"),
]


@pytest.mark.parametrize("error", BLIPS, ids=lambda e: type(e).__name__)
def test_infrastructure_blips_are_transient(error: BaseException) -> None:
    assert is_transient(error)
    assert is_retryable(error)


@pytest.mark.parametrize("error", NOT_BLIPS, ids=lambda e: type(e).__name__)
def test_other_failures_are_not_blips(error: BaseException) -> None:
    assert not is_transient(error)


def test_graph_and_storage_failures_are_retryable_but_not_blips() -> None:
    graph = TransientError(503, "serviceNotAvailable", "later")
    assert is_retryable(graph) and not is_transient(graph)
    assert is_retryable(IntegrityError("x")) and not is_transient(IntegrityError("x"))
    assert not is_retryable(ValueError("a bug"))


async def test_retry_transient_waits_out_a_blip_and_gives_up_on_anything_else() -> None:
    calls = {"n": 0}

    async def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise redis.ConnectionError("restarting")
        return "done"

    assert await retry_transient(flaky, within=5, what="test", first_delay=0.01) == "done"
    assert calls["n"] == 3

    async def broken() -> None:
        calls["n"] += 1
        raise ValueError("a bug is not retried")

    calls["n"] = 0
    with pytest.raises(ValueError, match="a bug"):
        await retry_transient(broken, within=5, what="test", first_delay=0.01)
    assert calls["n"] == 1

    async def down() -> None:
        raise redis.ConnectionError("still down")

    with pytest.raises(redis.ConnectionError):
        await retry_transient(down, within=0.2, what="test", first_delay=0.05)


async def test_api_answers_503_with_retry_after_while_the_database_is_down(
    tmp_path: Path,
) -> None:
    settings = build_settings(
        tmp_path,
        database_url="postgresql+psycopg://safekeep:safekeep@127.0.0.1:9/nothing_listens",
    )
    runtime = Runtime.build(settings, send=SentMessages())
    try:
        transport = httpx.ASGITransport(app=create_app(runtime=runtime), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/v1/tenants", headers={"Authorization": "Bearer sk_test_x"})
            ready = await client.get("/readyz")
    finally:
        await runtime.close()
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert int(r.headers["retry-after"]) > 0
    body = r.json()
    assert body["type"].endswith("/unavailable") and body["dependency"] == "database"
    assert "Traceback" not in r.text and "psycopg" not in body["detail"]
    assert ready.status_code == 503 and ready.headers["retry-after"]
    assert not ready.json()["checks"]["database"]["ok"]
