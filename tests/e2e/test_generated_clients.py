"""Typed clients generated from the committed OpenAPI document, each driven through a partner's
whole journey against a live server: the API as its own uvicorn process (the chart's command),
Dramatiq workers as processes, graphsim as Microsoft 365.

Create a tenant, connect it (admin consent, done as the client's admin's browser would), set its
policy, start a backup, poll the job, browse, download an item's content and an export's ZIP.

- Python: openapi-python-client (pinned; run with `uv tool run`, since its own dependencies pin
  an older typer than Safekeep's), configured by clients/python/openapi-python-client.yaml.
- TypeScript: openapi-typescript + openapi-fetch, pinned by clients/typescript/package-lock.json,
  type-checked with tsc, run with Node.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from graphsim import Simulator
from tests.e2e.conftest import Deployment
from tests.fixtures.live import free_port, serve_api

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "openapi" / "openapi.json"
UV = ROOT / ".tools" / "bin" / "uv"
OPENAPI_PYTHON_CLIENT = "openapi-python-client==0.29.1"
TYPESCRIPT = ROOT / "clients" / "typescript"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def live_api(deployment: Deployment) -> Iterator[str]:
    """The API as a deployment runs it, on a loopback port; two workers beside it."""
    for _ in range(2):
        deployment.start_worker(threads=4)
    with serve_api(deployment.settings, free_port(), deployment.log_dir / "api.log") as base:
        yield base


def grant_consent(sim: Simulator, consent_url: str, api: str) -> None:
    """The client's admin: open the consent URL, accept, and land back on Safekeep's callback.

    Not part of either generated client (a browser does it). After the OIDC authorization-code
    flow replaces admin consent, this is the one step to adapt.
    """
    with httpx.Client(verify=sim.ssl_context()) as browser:
        answer = browser.get(consent_url, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["location"])
    assert back.path == "/v1/consent/callback"
    done = httpx.get(f"{api}{back.path}?{back.query}", timeout=30)
    assert done.status_code == 200 and done.json()["consent_state"] == "granted", done.text


def wait_until(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"timed out: {value}"
        time.sleep(0.5)


@pytest.fixture
def python_client(tmp_path: Path) -> Iterator[Any]:
    """The Python client generated now, from the committed document, into a temp folder."""
    target = tmp_path / "generated"
    target.mkdir()
    package = target / f"safekeep_client_{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [
            str(UV),
            "tool",
            "run",
            "--from",
            OPENAPI_PYTHON_CLIENT,
            "openapi-python-client",
            "generate",
            "--path",
            str(DOCUMENT),
            "--output-path",
            str(package),
            "--meta",
            "none",
            "--config",
            str(ROOT / "clients" / "python" / "openapi-python-client.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Nothing the document describes was dropped (it warns per operation it cannot render).
    assert "will be omitted" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(target))
    try:
        yield importlib.import_module(package.name)
    finally:
        sys.path.remove(str(target))


def test_python_client_end_to_end(deployment: Deployment, live_api: str, python_client: Any):
    sk = python_client

    def api(module: str) -> Any:
        return importlib.import_module(f"{sk.__name__}.api.{module}")

    def model(name: str) -> Any:
        return getattr(importlib.import_module(f"{sk.__name__}.models"), name)

    client = sk.AuthenticatedClient(base_url=live_api, token=deployment.msp.key, timeout=60)
    simulated = deployment.sim.tenant()
    create = api("tenants.create_tenant").sync(
        client=client,
        body=model("TenantCreate").from_dict({"name": simulated.name, "domain": simulated.domain}),
    )
    assert isinstance(create, model("TenantCreated")), create
    tenant_id = create.id
    grant_consent(deployment.sim, create.consent_url, live_api)
    list_jobs = api("jobs.list_jobs")
    discovery = wait_until(
        lambda: list_jobs.sync(tenant_id, client=client),
        lambda page: bool(page.items) and str(page.items[0].status) in ("succeeded", "failed"),
    )
    assert str(discovery.items[0].status) == "succeeded"
    policy = api("policy.put_policy").sync(
        tenant_id, client=client, body=model("PolicyIn").from_dict({"services": ["onedrive"]})
    )
    assert isinstance(policy, model("PolicyOut")), policy

    # The body is optional, but openapi-python-client 0.29.1 would send its UNSET marker as JSON
    # when left out: an empty request (every default) is what omitting it means.
    job = api("jobs.start_backup").sync(
        tenant_id, client=client, body=model("BackupRequest").from_dict({})
    )
    assert isinstance(job, model("JobOut")), job
    get_job = api("jobs.get_job")
    finished = wait_until(
        lambda: get_job.sync(job.id, client=client),
        lambda j: str(j.status) in ("succeeded", "partial", "failed", "cancelled"),
    )
    assert str(finished.status) == "succeeded", finished

    accounts = api("accounts.list_accounts").sync(tenant_id, client=client)
    # every seat the backup reached is backed up since it started: none is listed as stopped
    assert finished.started_at is not None
    stopped = api("accounts.list_accounts").sync(
        tenant_id, client=client, protected=True, not_backed_up_since=finished.started_at
    )
    backed_up = {a.id for a in accounts.items if a.last_backup_at is not None}
    assert backed_up and not backed_up & {a.id for a in stopped.items}
    # ...and across every client tenant, in one request: the same seats of this tenant
    everywhere = api("accounts.list_msp_accounts").sync(
        client=client, protected=True, not_backed_up_since=finished.started_at
    )
    assert {a.id for a in everywhere.items if a.tenant_id == tenant_id} == {
        a.id for a in stopped.items
    }

    # A webhook changed and its secret rotated the way the client's models send them: what
    # is left out of an update is not sent (not as null), and the rotated secret is new.
    webhook = api("webhooks.create_webhook").sync(
        client=client,
        body=model("WebhookCreate").from_dict(
            {"url": "https://hooks.example.com/safekeep", "events": ["export.ready"]}
        ),
    )
    assert isinstance(webhook, model("WebhookCreated")), webhook
    changed = api("webhooks.update_webhook").sync(
        webhook.id, client=client, body=model("WebhookUpdate")(description="Partner portal")
    )
    assert isinstance(changed, model("WebhookOut")), changed
    assert (changed.url, changed.description) == (webhook.url, "Partner portal")
    rotated = api("webhooks.rotate_secret").sync(
        webhook.id, client=client, body=model("SecretRotation").from_dict({})
    )
    assert isinstance(rotated, model("WebhookCreated")), rotated
    assert rotated.secret not in (None, webhook.secret) and rotated.previous_secret_expires_at
    listed = None
    account = None
    for account in accounts.items:
        listed = api("browse.list_items").sync(
            tenant_id, account.id, client=client, service=model("ListItemsService")("onedrive")
        )
        if isinstance(listed, model("ItemListing")) and any(not i.is_folder for i in listed.items):
            break
    assert listed is not None and account is not None
    item = next(i for i in listed.items if not i.is_folder)
    content = api("browse.get_content").sync_detailed(tenant_id, account.id, item.id, client=client)
    assert content.status_code == 200
    assert isinstance(content.parsed, sk.types.File), content.parsed
    data = content.parsed.payload.read()
    assert len(data) == item.size > 0

    export = api("export.create_export").sync(
        tenant_id,
        client=client,
        body=model("ExportRequest").from_dict(
            {"scope": {"type": "service", "account_id": str(account.id), "service": "onedrive"}}
        ),
    )
    assert isinstance(export, model("ExportOut")), export
    get_export = api("export.get_export")
    ready = wait_until(
        lambda: get_export.sync(export.id, client=client),
        lambda e: str(e.status) in ("ready", "failed", "expired"),
    )
    assert str(ready.status) == "ready", ready
    download = api("export.download_export").sync_detailed(export.id, client=client)
    assert download.status_code == 200 and isinstance(download.parsed, sk.types.File)
    archive = zipfile.ZipFile(io.BytesIO(download.parsed.payload.read()))
    manifest = json.loads(archive.read("manifest.json"))
    assert any(f["path"].endswith(item.name) for f in manifest["files"]), manifest


@pytest.fixture
def typescript_client(tmp_path: Path) -> Path:
    """The TypeScript client's types generated now from the committed document, and the smoke
    script compiled against them with tsc (a type error fails here)."""
    npm = shutil.which("npm")
    assert npm, "Node.js and npm are needed for the TypeScript client"
    work = tmp_path / "ts"
    shutil.copytree(TYPESCRIPT, work, ignore=shutil.ignore_patterns("node_modules", "dist"))
    env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false"}

    def run(*argv: str) -> None:
        result = subprocess.run(
            argv, cwd=work, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    run(npm, "ci", "--no-audit")
    run(npm, "run", "--silent", "generate", "--", str(DOCUMENT))
    run(npm, "run", "--silent", "build")
    return work


def test_typescript_client_end_to_end(
    deployment: Deployment, live_api: str, typescript_client: Path
):
    env = {
        **os.environ,
        "SAFEKEEP_API_URL": live_api,
        "SAFEKEEP_API_KEY": deployment.msp.key,
        "SIM_TENANT_NAME": deployment.sim.tenant().name,
        "SIM_TENANT_DOMAIN": deployment.sim.tenant().domain,
        # graphsim's TLS, for the consent step the script does as the admin's browser
        "NODE_EXTRA_CA_CERTS": str(deployment.sim.ca_path),
    }
    result = subprocess.run(
        ["node", "dist/smoke.js"],
        cwd=typescript_client,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["backup"] == "succeeded"
    assert summary["content_bytes"] == summary["item_size"] > 0
    assert summary["export_zip_magic"] == "PK"
    assert summary["manifest_has_item"] is True
    assert summary["backed_up_seats"] > 0 and summary["stopped_among_backed_up"] == 0
    assert summary["stopped_everywhere_among_backed_up"] == 0
    assert summary["stopped_everywhere_of_the_tenant"] is True
    assert summary["webhook_kept_url"] is True and summary["secret_rotated"] is True
    assert summary["previous_secret_expires_at"]
