"""/healthz, /readyz naming what is down (and to outsiders no more), /metrics for the operator."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import event

from safekeep.api.app import create_app
from safekeep.api.health import router as health_router
from safekeep.api.health.router import READINESS_MAX_AGE_SECONDS, RecentReadiness
from safekeep.runtime import Runtime
from safekeep.settings import Environment, Settings
from tests.factories import create_msp
from tests.fixtures.app import SentMessages, build_settings


async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime.build(settings, send=SentMessages())
    try:
        transport = httpx.ASGITransport(app=create_app(runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client
    finally:
        await runtime.close()


@pytest.mark.parametrize("column", ["scale-out", "embedded"])
async def test_readyz_green_on_both_columns(
    column: str, request: pytest.FixtureRequest, redis_server_url: str
) -> None:
    settings: Settings = request.getfixturevalue(
        "scaleout_settings" if column == "scale-out" else "embedded_settings"
    )
    if column == "scale-out":
        settings = settings.model_copy(update={"broker_url": redis_server_url})
    async for client in _client(settings):
        r = await client.get("/readyz")
        assert r.status_code == 200, r.text
        checks = r.json()["checks"]
        expected = {
            "scale-out": {
                "database": "postgresql",
                "queue": "redis",
                "blobstore": "s3",
                "search": "opensearch",
            },
            "embedded": {
                "database": "sqlite",
                "queue": "embedded",
                "blobstore": "file",
                "search": "sqlite-fts5",
            },
        }[column]
        assert {k: v["backend"] for k, v in checks.items()} == expected
        assert all(v["ok"] for v in checks.values())
        # An uptime monitor asking with HEAD gets the same status.
        assert (await client.head("/readyz")).status_code == 200
        assert (await client.head("/healthz")).status_code == 200


class LogRecorder(list[dict[str, Any]]):
    """The health router's log lines, recorded whatever structlog's configuration (a logger
    cached by an earlier test would not see ``capture_logs``)."""

    def warning(self, event: str, **fields: Any) -> None:
        self.append({"event": event, **fields})

    @classmethod
    def install(cls, monkeypatch: pytest.MonkeyPatch) -> LogRecorder:
        recorder = cls()
        monkeypatch.setattr(health_router, "log", recorder)
        return recorder


async def test_readyz_names_what_is_down(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = build_settings(
        tmp_path,
        database_url=sqlite_url,
        search_url="http://127.0.0.1:9",  # nothing listens on the discard port
        broker_url="redis://127.0.0.1:9/0",
    )
    logs = LogRecorder.install(monkeypatch)
    async for client in _client(settings):
        r = await client.get("/readyz")
        assert r.status_code == 503
        checks = r.json()["checks"]
        assert checks["database"]["ok"] and checks["blobstore"]["ok"]
        assert not checks["search"]["ok"] and not checks["queue"]["ok"]
        # Anyone reaching the API may ask: the answer names the kind of failure, never the
        # dependency's address; the log has the whole message.
        for name in ("search", "queue"):
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", checks[name]["error"]), checks[name]
        assert "127.0.0.1" not in r.text
        failed = {e["check"]: e for e in logs if e["event"] == "readiness_check_failed"}
        assert set(failed) == {"search", "queue"}
        assert all(e["exc_info"] and "127.0.0.1" in e["error"] for e in failed.values())
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.head("/readyz")).status_code == 503


async def test_readyz_callers_within_a_second_share_one_reading(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A flood of /readyz from outside costs the dependencies one reading a second, not one
    per request."""
    now = [1000.0]
    runtime = Runtime.build(build_settings(tmp_path, database_url=sqlite_url), send=SentMessages())
    app = create_app(runtime=runtime)
    app.state.readiness = RecentReadiness(clock=lambda: now[0])
    probes: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.strip() == "SELECT 1":
            probes.append(statement)

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", count)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answers = await asyncio.gather(*(client.get("/readyz") for _ in range(20)))
            assert [a.status_code for a in answers] == [200] * 20
            assert len(probes) == 1
            now[0] += READINESS_MAX_AGE_SECONDS - 0.01
            assert (await client.get("/readyz")).status_code == 200
            assert len(probes) == 1
            now[0] += 0.01
            assert (await client.get("/readyz")).status_code == 200
            assert len(probes) == 2
    finally:
        event.remove(runtime.db.engine.sync_engine, "before_cursor_execute", count)
        await runtime.close()


TOKEN = "m" * 40


async def test_metrics_need_the_operators_token_not_an_api_key(
    tmp_path: Path, sqlite_url: str
) -> None:
    """/metrics counts every MSP's jobs and tenants together: with a token configured, only a
    caller presenting it is answered; an MSP's admin key, a wrong token or none get 401."""
    settings = build_settings(tmp_path, database_url=sqlite_url, metrics_token=SecretStr(TOKEN))
    runtime = Runtime.build(settings, send=SentMessages())
    msp = await create_msp(runtime)
    try:
        transport = httpx.ASGITransport(app=create_app(runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/v1/tenants", headers=msp.headers)).status_code == 200
            for headers in (
                {},
                msp.headers,
                {"Authorization": f"Bearer {'n' * 40}"},
                {"Authorization": f"Bearer {TOKEN[:-1]}"},
                {"Authorization": f"Basic {TOKEN}"},
            ):
                r = await client.get("/metrics", headers=headers)
                assert r.status_code == 401, (headers, r.text)
                assert r.headers["content-type"] == "application/problem+json"
                assert r.headers["www-authenticate"] == 'Bearer realm="metrics"'
                assert r.json()["title"] == "Missing or invalid metrics token"
                assert "safekeep_" not in r.text
            r = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200
            assert 'route="/v1/tenants"' in r.text
    finally:
        await runtime.close()


async def test_metrics_are_off_in_production_without_a_token(
    tmp_path: Path, sqlite_url: str
) -> None:
    settings = build_settings(
        tmp_path,
        database_url=sqlite_url,
        env=Environment.production,
        master_key=SecretStr(base64.urlsafe_b64encode(b"p" * 32).decode()),
        app_client_secret=SecretStr("a-production-app-secret"),
    )
    async for client in _client(settings):
        r = await client.get("/metrics")
        assert r.status_code == 404
        assert "SAFEKEEP_METRICS_TOKEN" in r.json()["detail"]
        assert "safekeep_" not in r.text.replace("SAFEKEEP_METRICS_TOKEN", "")
    with_token = settings.model_copy(update={"metrics_token": SecretStr(TOKEN)})
    async for client in _client(with_token):
        r = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and "safekeep_http_requests_total" in r.text


def test_a_short_metrics_token_is_refused() -> None:
    with pytest.raises(ValidationError, match="SAFEKEEP_METRICS_TOKEN must be at least 32"):
        Settings(metrics_token=SecretStr("x" * 31))


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/v1/tenants/00000000-0000-0000-0000-000000000000")
    text = (await client.get("/metrics")).text
    assert 'route="/v1/tenants/{tenant_id}"' in text
    assert "00000000-0000-0000-0000-000000000000" not in text
