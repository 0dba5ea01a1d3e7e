"""`safekeep export download`: the whole ZIP, then a resumed one (Range), both verified."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import httpx

from safekeep.api.app import create_app
from safekeep.backup.jobs.export import run_export_job
from tests.backup.harness import EngineHarness
from tests.fixtures.app import run_cli
from tests.fixtures.live import serve_app


async def test_download_whole_then_resumed(engine: EngineHarness, tmp_path: Path) -> None:
    h = engine
    account = next(
        a for a in await h.accounts() if a.kind == "user" and a.services_found.get("onedrive")
    )
    await h.backup(account, "onedrive")
    transport = httpx.ASGITransport(app=create_app(runtime=h.runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:
        r = await api.post(
            f"/v1/tenants/{h.tenant.id}/exports",
            json={"scope": {"type": "account", "account_id": str(account.id)}},
            headers=h.msp.headers,
        )
        export = r.json()
        await run_export_job(h.runtime, export["job_id"])
        export = (await api.get(f"/v1/exports/{export['id']}", headers=h.msp.headers)).json()

    ranges: list[str | None] = []
    inner = create_app(h.runtime.settings)

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/download"):
            ranges.append(dict(scope["headers"]).get(b"range", b"").decode() or None)
        await inner(scope, receive, send)

    with serve_app(recording) as base:
        target = tmp_path / "export.zip"
        env = {**os.environ, "SAFEKEEP_API_URL": base, "SAFEKEEP_API_KEY": h.msp.key}
        download = ("export", "download", export["id"], "-o", str(target))
        done = await asyncio.to_thread(run_cli, *download, env=env)
        assert done.returncode == 0, done.stderr
        data = target.read_bytes()
        assert hashlib.sha256(data).hexdigest() == export["sha256"]
        assert "SHA-256 verified" in done.stderr
        # an interrupted download: half of it is already on disk
        target.unlink()
        target.with_name("export.zip.part").write_bytes(data[: len(data) // 2])
        done = await asyncio.to_thread(run_cli, *download, env=env)
        assert done.returncode == 0, done.stderr
        assert target.read_bytes() == data
        assert ranges == [None, f"bytes={len(data) // 2}-"]
        # a wrong key: a clear refusal, no file
        env["SAFEKEEP_API_KEY"] = "sk_wrong"
        target.unlink()
        done = await asyncio.to_thread(run_cli, *download, env=env)
        assert done.returncode == 1
        assert "401" in done.stderr
        assert not target.exists()
