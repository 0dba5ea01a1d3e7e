"""/healthz, /readyz naming what is down, /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from safekeep.api.app import create_app
from safekeep.runtime import Runtime
from safekeep.settings import Settings
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


async def test_readyz_names_what_is_down(tmp_path: Path, sqlite_url: str) -> None:
    settings = build_settings(
        tmp_path,
        database_url=sqlite_url,
        search_url="http://127.0.0.1:9",  # nothing listens on the discard port
        broker_url="redis://127.0.0.1:9/0",
    )
    async for client in _client(settings):
        r = await client.get("/readyz")
        assert r.status_code == 503
        checks = r.json()["checks"]
        assert checks["database"]["ok"] and checks["blobstore"]["ok"]
        assert not checks["search"]["ok"] and checks["search"]["error"]
        assert not checks["queue"]["ok"] and checks["queue"]["error"]
        assert (await client.get("/healthz")).status_code == 200


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/v1/tenants/00000000-0000-0000-0000-000000000000")
    text = (await client.get("/metrics")).text
    assert 'route="/v1/tenants/{tenant_id}"' in text
    assert "00000000-0000-0000-0000-000000000000" not in text
