"""An idempotent replay is no way around a key's limits, and a settings error prints no
secret."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from tests.fixtures.app import run_cli
from tests.security.conftest import PROBLEM, Live


async def test_a_replay_is_refused_outside_the_calling_keys_tenants(live: Live) -> None:
    world = live.world
    a = world.a
    path = f"/v1/tenants/{a.tenant.id}/backups"
    replay_key = {"Idempotency-Key": "nightly-2026-12-03"}
    async with live.client() as api:
        first = await api.post(path, json={}, headers={**a.msp.headers, **replay_key})
        assert first.status_code == 202, first.text
        job_id = first.json()["id"]

        # a key of the same MSP limited to its other tenant: not found, nothing replayed
        limited = await world.key(["backup"], [a.other_tenant.id])
        r = await api.post(path, json={}, headers={**limited, **replay_key})
        assert r.status_code == 404, r.text
        assert r.headers["content-type"] == PROBLEM
        assert job_id not in r.text and "idempotent-replayed" not in r.headers

        # another MSP's admin: not found either
        r = await api.post(path, json={}, headers={**world.b.msp.headers, **replay_key})
        assert r.status_code == 404 and job_id not in r.text

        # a key without the scope: 403, before any replay
        reader = await world.key(["read"])
        r = await api.post(path, json={}, headers={**reader, **replay_key})
        assert r.status_code == 403 and job_id not in r.text

        # controls: the MSP's admin, and a key limited to that very tenant, get the replay
        for headers in (a.msp.headers, await world.key(["backup"], [a.tenant.id])):
            r = await api.post(path, json={}, headers={**headers, **replay_key})
            assert r.status_code == 202 and r.json()["id"] == job_id, r.text
            assert r.headers["idempotent-replayed"] == "true"


async def test_a_limited_key_cannot_replay_an_msp_wide_create(live: Live) -> None:
    """Creating a tenant needs a key that is not limited; replaying someone's creation must
    not hand a limited key the new tenant (and its consent URL)."""
    world = live.world
    replay_key = {"Idempotency-Key": "onboard-fabrikam"}
    body = {"name": "Fabrikam"}
    async with live.client() as api:
        first = await api.post(
            "/v1/tenants", json=body, headers={**world.a.msp.headers, **replay_key}
        )
        assert first.status_code == 201, first.text
        limited_admin = await world.key(["admin"], [world.a.tenant.id])
        r = await api.post("/v1/tenants", json=body, headers={**limited_admin, **replay_key})
        assert r.status_code == 403, r.text  # as every MSP-wide action
        assert first.json()["id"] not in r.text


def test_a_settings_error_never_prints_the_secret(tmp_path: Path) -> None:
    """A production start with a mistyped master key (and, separately, a development app
    secret beside a real master key) fails naming the variable, never its value."""
    mistyped = "c2VjcmV0LW1hc3Rlci1rZXktdGhhdC1pcy10b28tc2hvcnQ"  # 35 bytes, not 32
    real = base64.urlsafe_b64encode(b"r3al-master-key-for-this-deploy!").decode()
    database = "postgresql+psycopg://safekeep:Pa55w0rd-s3cret@db.internal/safekeep"
    cases = [
        ({"SAFEKEEP_MASTER_KEY": mistyped}, "SAFEKEEP_MASTER_KEY must be urlsafe base64"),
        ({"SAFEKEEP_MASTER_KEY": real}, "SAFEKEEP_APP_CLIENT_SECRET must be set in production"),
    ]
    for extra, expected in cases:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEKEEP_")}
        env.update(
            SAFEKEEP_ENV="production",
            SAFEKEEP_DATA_DIR=str(tmp_path),
            SAFEKEEP_DATABASE_URL=database,
            **extra,
        )
        done = run_cli("migrate", env=env)
        output = done.stdout + done.stderr
        assert done.returncode != 0
        assert expected in output, output[-2000:]
        for secret in (extra["SAFEKEEP_MASTER_KEY"], "Pa55w0rd-s3cret"):
            windows = {secret[i : i + 8] for i in range(len(secret) - 7)}
            leaked = sorted(w for w in windows if w in output)
            assert not leaked, f"the output shows parts of a secret: {leaked}"


async def test_the_audit_log_shows_a_read_key_no_more_of_a_webhook_url_than_its_origin(
    live: Live,
) -> None:
    """A webhook's URL is often its receiver's credential (a chat's incoming-webhook token in
    the path, a password, a signed query): only an admin key reads the webhook, so the audit
    log, which a read key reads and which keeps it for good, records its origin only."""
    admin = live.world.a.msp.headers
    created = "https://user:s3cr3t@hooks.chat.example/services/T000/B000/XXXXSECRETTOKEN"
    moved = "https://hooks.example.com:8443/rotated?token=NEWSECRET"
    read_only = await live.world.key(["read"])
    async with live.client() as api:
        r = await api.post(
            "/v1/webhooks", json={"url": created, "events": ["backup.completed"]}, headers=admin
        )
        assert r.status_code == 201, r.text
        webhook_id = r.json()["id"]
        webhook = f"/v1/webhooks/{webhook_id}"
        r = await api.patch(webhook, json={"url": moved}, headers=admin)
        assert r.status_code == 200, r.text
        assert (await api.get(webhook, headers=read_only)).status_code == 403
        assert (await api.get(webhook, headers=admin)).json()["url"] == moved  # the admin's view
        r = await api.get("/v1/audit-events", params={"limit": 200}, headers=read_only)
    assert r.status_code == 200, r.text
    shown = {
        e["action"]: e["details"]["url"]
        for e in r.json()["items"]
        if e["action"] in ("webhook.created", "webhook.updated") and e["target_id"] == webhook_id
    }
    assert shown == {
        "webhook.created": "https://hooks.chat.example",
        "webhook.updated": "https://hooks.example.com:8443",
    }
    assert "SECRET" not in r.text and "s3cr3t" not in r.text
