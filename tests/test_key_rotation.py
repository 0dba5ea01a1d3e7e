"""Master-key rotation end to end: backed-up data, custom app secrets and webhook secrets stay
readable under the new key alone, the old key opens nothing afterwards, and no data blob is
rewritten. `safekeep keys rotate` runs as the operator runs it, as its own process."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import select

from safekeep.backup import browse
from safekeep.backup.context import open_repository
from safekeep.runtime import Runtime
from safekeep.settings import Settings
from safekeep.storage.errors import KeyUnwrapError
from safekeep.storage.keys import unwrap_data_key
from safekeep.tenants.keyrotation import ACTION
from safekeep.tenants.models import (
    Account,
    AccountKind,
    AuditEvent,
    ItemVersion,
    Tenant,
    WebhookEndpoint,
    utcnow,
)
from safekeep.tenants.scope import system_principal
from safekeep.tenants.secrets import SecretUnsealError, unseal
from safekeep.tenants.tenant import service as tenant_service
from safekeep.tenants.webhook import service as webhooks
from tests.backup.harness import EngineHarness
from tests.factories import create_msp, create_tenant, create_webhook, emit_event
from tests.fixtures.app import SentMessages, run_cli

NEW_KEY = base64.urlsafe_b64encode(b"N" * 32).decode()
ANOTHER_KEY = base64.urlsafe_b64encode(b"Z" * 32).decode()


def with_keys(settings: Settings, master: str, previous: str = "") -> Settings:
    return settings.model_copy(
        update={"master_key": SecretStr(master), "previous_master_keys": SecretStr(previous)}
    )


def rotate_cli(settings: Settings, master: str, previous: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SAFEKEEP_DATA_DIR": str(settings.data_dir),
        "SAFEKEEP_DATABASE_URL": settings.resolved_database_url,
        "SAFEKEEP_MASTER_KEY": master,
        "SAFEKEEP_PREVIOUS_MASTER_KEYS": previous,
        "SAFEKEEP_LOG_JSON": "false",
    }
    return run_cli("keys", "rotate", env=env)


async def read_versions(runtime: Runtime, tenant: Tenant) -> dict[str, bytes]:
    """Every backed-up version's original bytes, as a client downloading it gets them."""
    out: dict[str, bytes] = {}
    async with runtime.db.session() as session:
        versions = (
            await session.scalars(
                select(ItemVersion).where(
                    ItemVersion.tenant_id == tenant.id, ItemVersion.kind == "message"
                )
            )
        ).all()
        for version in versions:
            account = await session.get(Account, version.account_id)
            assert account is not None
            content = await browse.content(runtime, session, account, version)
            out[str(version.id)] = b"".join([piece async for piece in content.open(0, None)])
    return out


@pytest.fixture
async def fresh_runtime() -> AsyncIterator[list[Runtime]]:
    """Runtimes a test builds with other keys, closed at its end."""
    built: list[Runtime] = []
    yield built
    for runtime in built:
        await runtime.close()


async def test_rotation_rewraps_everything_and_retires_the_old_key(
    engine: EngineHarness, fresh_runtime: list[Runtime]
) -> None:
    old_settings = engine.runtime.settings
    old_key = old_settings.master_key.get_secret_value()
    # A backed-up tenant (graphsim's), a second MSP's tenant with its own Entra app and a blob
    # of its own, and a webhook endpoint.
    account = next(a for a in await engine.accounts() if a.kind == AccountKind.user)
    await engine.backup(account, "mail")
    before = await read_versions(engine.runtime, engine.tenant)
    assert before and all(before.values())

    other = await create_msp(engine.runtime, "Second MSP")
    custom = await create_tenant(
        engine.runtime,
        other,
        name="Fabrikam",
        consented=False,
        app_client_id="11111111-2222-4333-8444-555555555555",
        app_client_secret="fabrikam-app-secret",
    )
    endpoint, previous_secret = await create_webhook(
        engine.runtime, engine.msp.id, "https://partner.example.com/hooks", ["backup.completed"]
    )
    # Its secret rotated a moment ago: the replaced one still signs, sealed like the current.
    async with engine.runtime.db.session() as session:
        _, signing_secret = await webhooks.rotate_secret(
            session,
            system_principal(engine.msp.id),
            old_settings,
            endpoint.id,
            overlap=timedelta(hours=1),
        )
    # And an endpoint whose rotation's overlap is over: its old secret is dropped, not resealed.
    ended, _ = await create_webhook(
        engine.runtime, engine.msp.id, "https://partner.example.com/other", ["backup.failed"]
    )
    async with engine.runtime.db.session() as session:
        await webhooks.rotate_secret(
            session, system_principal(engine.msp.id), old_settings, ended.id, overlap=timedelta(1)
        )
        row = await session.get(WebhookEndpoint, ended.id)
        assert row is not None
        row.previous_secret_expires_at = utcnow() - timedelta(seconds=1)
    repo = await open_repository(engine.runtime, custom)
    ref = await repo.put_bytes(b"fabrikam's backed-up bytes")
    blobs_before = sorted(
        str(p.relative_to(old_settings.data_dir)) for p in old_settings.data_dir.rglob("*")
    )

    result = await asyncio.to_thread(rotate_cli, old_settings, NEW_KEY, old_key)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rewrapped_data_keys"] == 2  # both tenants
    # the custom app secret, the webhook's current and previous secrets, the other's current
    assert report["resealed_secrets"] == 4
    assert report["unreadable"] == []

    # Under the new key alone, everything reads back as before.
    new_settings = with_keys(old_settings, NEW_KEY)
    runtime = Runtime.build(new_settings, send=SentMessages())
    fresh_runtime.append(runtime)
    assert await read_versions(runtime, engine.tenant) == before
    async with runtime.db.session() as session:
        tenants = {t.id: t for t in (await session.scalars(select(Tenant))).all()}
        row = await session.get(WebhookEndpoint, endpoint.id)
        events = (
            await session.scalars(select(AuditEvent).where(AuditEvent.action == ACTION))
        ).all()
    assert set(tenants) == {engine.tenant.id, custom.id}
    repo = await open_repository(runtime, tenants[custom.id])
    assert await repo.read_bytes(ref) == b"fabrikam's backed-up bytes"
    credentials = tenant_service.app_credentials(new_settings, tenants[custom.id])
    assert credentials.client_secret == "fabrikam-app-secret"
    assert row is not None
    (delivery,), _messages = await emit_event(runtime, engine.msp.id, "backup.completed")
    body, headers = webhooks.render(new_settings, row, delivery)
    assert headers["Safekeep-Signature"] == webhooks.sign(
        [signing_secret, previous_secret], int(headers["webhook-timestamp"]), body
    )
    async with runtime.db.session() as session:
        ended_row = await session.get(WebhookEndpoint, ended.id)
    assert ended_row is not None
    assert (ended_row.previous_secret_sealed, ended_row.previous_secret_expires_at) == (None, None)
    # Each MSP's audit log records the rotation of what protects its tenants.
    assert {(e.msp_id, e.details["rewrapped"]) for e in events} == {
        (engine.msp.id, 4),  # graphsim tenant's data key, the webhook secrets
        (other.id, 2),  # Fabrikam's data key and app secret
    }
    # The data itself was not re-encrypted: no blob was written or rewritten.
    blobs_after = sorted(
        str(p.relative_to(old_settings.data_dir)) for p in old_settings.data_dir.rglob("*")
    )
    stored = [b for b in blobs_before if b.startswith("blobs/")]
    assert len(stored) > 10
    assert [b for b in blobs_after if b.startswith("blobs/")] == stored

    # The old key is gone: nothing opens with it any more.
    old_bytes = base64.urlsafe_b64decode(old_key)
    for tenant in tenants.values():
        with pytest.raises(KeyUnwrapError):
            unwrap_data_key(old_bytes, tenant.wrapped_data_key, tenant_id=str(tenant.id))
    with pytest.raises(SecretUnsealError):
        unseal(old_bytes, row.secret_sealed, context=f"webhook:{row.id}:secret")
    old_only = Runtime.build(old_settings, send=SentMessages())
    fresh_runtime.append(old_only)
    with pytest.raises(KeyUnwrapError):
        await read_versions(old_only, engine.tenant)

    # Running it again finds everything current and changes nothing.
    again = await asyncio.to_thread(rotate_cli, old_settings, NEW_KEY, old_key)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {
        "rewrapped_data_keys": 0,
        "resealed_secrets": 0,
        "already_current": 6,
        "unreadable": [],
    }


async def test_rotation_without_the_old_key_fails_and_changes_nothing(
    engine: EngineHarness,
) -> None:
    settings = engine.runtime.settings
    wrapped_before = engine.tenant.wrapped_data_key
    result = await asyncio.to_thread(rotate_cli, settings, ANOTHER_KEY, "")
    assert result.returncode == 1
    assert json.loads(result.stdout)["unreadable"] == [f"tenant {engine.tenant.id}: data key"]
    assert "keep the old keys" in result.stderr
    async with engine.runtime.db.session() as session:
        row = await session.get(Tenant, engine.tenant.id)
        assert row is not None and row.wrapped_data_key == wrapped_before
        assert not (
            await session.scalars(select(AuditEvent).where(AuditEvent.action == ACTION))
        ).all()


def test_previous_master_keys_must_be_keys(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="PREVIOUS_MASTER_KEYS"):
        Settings(data_dir=tmp_path, previous_master_keys=SecretStr("not-a-key"))
    settings = Settings(
        data_dir=tmp_path,
        master_key=SecretStr(NEW_KEY),
        previous_master_keys=SecretStr(f" {ANOTHER_KEY} ,"),
    )
    assert settings.master_keys == (b"N" * 32, b"Z" * 32)
