"""End to end: the API in this process, Dramatiq workers as real processes on Redis, and
graphsim as Microsoft 365. What a deployment does, on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from graphsim import Simulator
from graphsim.entra import admin_upn
from safekeep.api.app import create_app
from safekeep.runtime import Runtime
from safekeep.settings import Settings
from safekeep.workers import broker, context
from tests.backup.harness import EngineHarness, sim_settings
from tests.factories import MspHandle, create_msp
from tests.fixtures.live import settings_env
from tests.fixtures.sim import running_sim

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Deployment:
    settings: Settings
    runtime: Runtime
    client: httpx.AsyncClient
    sim: Simulator
    msp: MspHandle
    log_dir: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Overrides for worker processes only (the fault suite points them at a faulty S3 proxy).
    worker_env: dict[str, str] = field(default_factory=dict)

    def start_worker(self, threads: int = 4) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"worker-{len(self.workers)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "safekeep.cli", "worker", "--threads", str(threads)],
            env={**settings_env(self.settings), **self.worker_env},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """A machine lost: SIGKILL, no chance to clean up."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    async def get(self, path: str, **params: Any) -> Any:
        r = await self.client.get(path, params=params, headers=self.msp.headers)
        assert r.status_code == 200, r.text
        return r.json()

    async def wait_for(self, path: str, done: Any, *, timeout: float = 120.0, **params: Any) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            body = await self.get(path, **params)
            if done(body):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting on {path}: {body}")
            import asyncio

            await asyncio.sleep(0.5)

    async def onboard(self, *, services: list[str]) -> dict[str, Any]:
        """Create the tenant, sign the client's admin in at its consent URL (graphsim's
        authorize endpoint, admin consent in the same trip), hand Microsoft's answer to the
        callback (which redeems the code and binds the ID token's directory), wait for the
        discovery job it starts, and set the policy."""
        simulated = self.sim.tenant()
        r = await self.client.post(
            "/v1/tenants",
            json={"name": simulated.name, "domain": simulated.domain},
            headers=self.msp.headers,
        )
        assert r.status_code == 201, r.text
        tenant = r.json()
        async with httpx.AsyncClient(verify=self.sim.ssl_context()) as browser:
            answer = await browser.get(
                f"{tenant['consent_url']}&{urlencode({'login_hint': admin_upn(simulated)})}",
                follow_redirects=False,
            )
        assert answer.status_code == 302, answer.text
        back = urlsplit(answer.headers["location"])
        assert back.path == "/v1/consent/callback" and "code" in parse_qs(back.query)
        r = await self.client.get(f"{back.path}?{back.query}")
        assert r.status_code == 200 and r.json()["consent_state"] == "granted", r.text
        assert r.json()["entra_tenant_id"] == simulated.id
        await self.wait_for(
            f"/v1/tenants/{tenant['id']}/jobs",
            lambda page: page["items"] and page["items"][0]["status"] in ("succeeded", "failed"),
        )
        jobs = await self.get(f"/v1/tenants/{tenant['id']}/jobs")
        assert jobs["items"][0]["status"] == "succeeded", jobs
        r = await self.client.put(
            f"/v1/tenants/{tenant['id']}/policy",
            json={"services": services},
            headers=self.msp.headers,
        )
        assert r.status_code == 200
        return tenant

    async def backup(self, tenant_id: str, *, timeout: float = 180.0) -> dict[str, Any]:
        r = await self.client.post(f"/v1/tenants/{tenant_id}/backups", headers=self.msp.headers)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        return await self.wait_for(
            f"/v1/jobs/{job_id}",
            lambda j: j["status"] in ("succeeded", "partial", "failed", "cancelled"),
            timeout=timeout,
        )


@pytest.fixture
def e2e_sim(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Simulator]:
    """A small tenant; ``@pytest.mark.parametrize("e2e_sim", [{"files": N}], indirect=True)``
    changes its size."""
    sizes = {"files": 40, **getattr(request, "param", {})}
    yield from running_sim(
        tmp_path, seed=11, users=2, messages=20, files=sizes["files"], sites=1, list_items=4
    )


@asynccontextmanager
async def open_deployment(
    tmp_path: Path, settings: Settings, sim: Simulator, name: str
) -> AsyncIterator[Deployment]:
    """The API in this process on ``settings``' queue (its sends go there, as in a deployment),
    one MSP, and a folder for the worker logs; workers start on demand. Whatever the test
    started is stopped on the way out, and the queue goes back to the default."""
    broker.configure(settings)
    runtime = Runtime.build(settings, send=broker.send_messages)
    context.configure(settings, factory=lambda _s: runtime)
    context.forget_runtimes()
    app = create_app(runtime=runtime)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://safekeep.test")
    msp = await create_msp(runtime, f"{name} {uuid.uuid4().hex[:6]}")
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    deployment = Deployment(settings, runtime, client, sim, msp, logs)
    try:
        yield deployment
    finally:
        deployment.stop_all()
        await client.aclose()
        context.forget_runtimes()
        await runtime.close()
        broker.configure(Settings(_env_file=None))


@pytest.fixture
async def deployment(
    tmp_path: Path, scaleout_settings: Settings, redis_url: str, e2e_sim: Simulator
) -> AsyncIterator[Deployment]:
    settings = sim_settings(scaleout_settings, e2e_sim).model_copy(
        update={"broker_url": redis_url, "task_lease_seconds": 4.0}
    )
    async with open_deployment(tmp_path, settings, e2e_sim, "E2E") as deployment:
        yield deployment


@pytest.fixture
async def api(engine: EngineHarness) -> AsyncIterator[httpx.AsyncClient]:
    """The public API in this process, over the engine harness's runtime: for tests that
    back a tenant up through the engine and read it back as a client would."""
    transport = httpx.ASGITransport(
        app=create_app(runtime=engine.runtime), raise_app_exceptions=False
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://safekeep.test") as client:
        yield client
