"""The `safekeep` command as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx

from safekeep.api.app import create_app
from safekeep.runtime import Runtime
from safekeep.settings import Settings
from tests.fixtures.app import SentMessages, run_cli


async def test_msp_create_prints_a_working_key(tmp_path: Path, postgres_url: str) -> None:
    env = {**os.environ, "SAFEKEEP_DATABASE_URL": postgres_url, "SAFEKEEP_DATA_DIR": str(tmp_path)}
    out = await asyncio.to_thread(
        run_cli, "msp", "create", "--name", "Northwind IT", "--json", env=env, check=True
    )
    printed = json.loads(out.stdout)  # --json prints that object alone
    assert set(printed) == {"msp_id", "api_key"}
    runtime = Runtime.build(
        Settings(database_url=postgres_url, data_dir=tmp_path), send=SentMessages()
    )
    try:
        transport = httpx.ASGITransport(app=create_app(runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            headers = {"Authorization": f"Bearer {printed['api_key']}"}
            assert (await client.get("/v1/tenants", headers=headers)).json() == {
                "items": [],
                "next_cursor": None,
            }
            keys = (await client.get("/v1/api-keys", headers=headers)).json()["items"]
            assert [k["scopes"] for k in keys] == [["admin"]]
    finally:
        await runtime.close()


def test_production_refuses_development_secrets(tmp_path: Path) -> None:
    env = {**os.environ, "SAFEKEEP_ENV": "production", "SAFEKEEP_DATA_DIR": str(tmp_path)}
    env.pop("SAFEKEEP_MASTER_KEY", None)
    result = run_cli("migrate", env=env)
    assert result.returncode != 0
    assert "SAFEKEEP_MASTER_KEY must be set in production" in result.stderr


def test_production_refuses_rabbitmq_without_shared_throttling(tmp_path: Path) -> None:
    import base64

    import pytest
    from pydantic import SecretStr, ValidationError

    from safekeep.settings import Environment, Settings

    key = SecretStr(base64.urlsafe_b64encode(b"k" * 32).decode())
    secret = SecretStr("real-secret")
    with pytest.raises(ValidationError, match="SAFEKEEP_REDIS_URL must be set"):
        Settings(
            env=Environment.production,
            master_key=key,
            app_client_secret=secret,
            broker_url="amqp://rabbit/",
            data_dir=tmp_path,
        )
    assert Settings(
        env=Environment.production,
        master_key=key,
        app_client_secret=secret,
        broker_url="amqp://rabbit/",
        redis_url="redis://r/0",
        data_dir=tmp_path,
    ).redis_url
