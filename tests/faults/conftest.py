"""The fault suite: real worker processes on real services, with faults injected from outside.

Tests that restart PostgreSQL or Redis do it on private instances started by
``scripts/services`` in a folder and on ports of their own (the suite's shared services keep
serving everyone else's tests). Trials per test come from ``SAFEKEEP_FAULT_TRIALS`` (a few in
``make test``; ``python -m bench.faults --trials N`` runs more and collects the figures the
tests print as ``FAULT-FIGURE`` lines).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from graphsim import Simulator
from safekeep.migrate import upgrade
from safekeep.settings import Settings
from tests.backup.harness import sim_settings
from tests.e2e.conftest import ROOT, Deployment, open_deployment
from tests.fixtures.sim import running_sim

SERVICES = ROOT / "scripts" / "services"
# Ports for the private instances: outside the shared services' defaults, probed for a free one.
PRIVATE_PORTS = range(47100, 47400)
TERMINAL = ("succeeded", "partial", "failed", "cancelled")


def trials(default: int = 2) -> int:
    """Kill trials per run."""
    return max(1, int(os.environ.get("SAFEKEEP_FAULT_TRIALS", default)))


def restart_rounds(default: int = 1) -> int:
    """Rounds of the PostgreSQL and Redis restart trials per run."""
    return max(1, int(os.environ.get("SAFEKEEP_FAULT_RESTARTS", default)))


def figure(name: str, value: float, unit: str, **extra: Any) -> None:
    """Print one measured figure (pytest -s shows it; bench.faults collects it)."""
    details = " ".join(f"{k}={v}" for k, v in extra.items())
    print(f"\nFAULT-FIGURE {name}={value:.1f}{unit} {details}".rstrip(), flush=True)


def _free_port(taken: set[int]) -> int:
    for port in PRIVATE_PORTS:
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError("no free port for a private service")


@dataclass
class PrivateServices:
    """PostgreSQL and Redis of this suite's own, which its tests may stop and start."""

    folder: Path
    postgres_port: int
    redis_port: int

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SAFEKEEP_SERVICES_DIR": str(self.folder),
            "SAFEKEEP_SERVICES_POSTGRES_PORT": str(self.postgres_port),
            "SAFEKEEP_SERVICES_REDIS_PORT": str(self.redis_port),
        }

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [str(SERVICES), *args], env=self.env(), capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"scripts/services {' '.join(args)}: {done.stderr}"
        return done.stdout + done.stderr

    @property
    def postgres_admin_url(self) -> str:
        return f"postgresql+psycopg://safekeep:safekeep@127.0.0.1:{self.postgres_port}/postgres"

    def redis_url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/{db}"

    def outage(self, name: str, seconds: float) -> float:
        """Stop ``name`` keeping its data, stay down ``seconds``, start it again; returns
        ``time.monotonic()`` when it answers again."""
        self.run("stop", "--keep-data", name)
        time.sleep(seconds)
        self.run("start", name)
        return time.monotonic()


@contextmanager
def private_instances() -> Iterator[PrivateServices]:
    """PostgreSQL and Redis started by ``scripts/services`` in a folder and on ports of their
    own, stopped (data removed) on the way out."""
    taken: set[int] = set()
    # Not under pytest's tmp_path: as root, PostgreSQL runs as the postgres user, which must be
    # able to reach its data folder (pytest's folders are private to their owner).
    parent = Path(tempfile.mkdtemp(prefix="safekeep-faults-"))
    parent.chmod(0o755)
    services = PrivateServices(
        folder=parent / "services",
        postgres_port=_free_port(taken),
        redis_port=_free_port(taken),
    )
    try:
        services.run("start", "postgres", "redis")
        yield services
    finally:
        services.run("stop", "postgres", "redis")
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def private_services() -> Iterator[PrivateServices]:
    with private_instances() as services:
        yield services


@pytest.fixture(scope="module")
def private_template(private_services: PrivateServices) -> str:
    """The migrated schema, once per module; each test clones it (much faster than Alembic)."""
    from tests.fixtures.services import create_database

    name = f"faults_template_{uuid.uuid4().hex[:8]}"
    upgrade(create_database(private_services.postgres_admin_url, name))
    return name


@pytest.fixture
def private_database(private_services: PrivateServices, private_template: str) -> str:
    from tests.fixtures.services import create_database

    return create_database(
        private_services.postgres_admin_url,
        f"faults_{uuid.uuid4().hex[:12]}",
        template=private_template,
    )


@pytest.fixture
def fault_sim(tmp_path: Path) -> Iterator[Simulator]:
    yield from running_sim(tmp_path, seed=23, users=2, messages=10, files=40, sites=1, list_items=4)


@pytest.fixture
async def private_deployment(
    tmp_path: Path,
    scaleout_settings: Settings,
    private_services: PrivateServices,
    private_database: str,
    fault_sim: Simulator,
) -> AsyncIterator[Deployment]:
    """The scale-out column on the private PostgreSQL and Redis (queue and Graph limiter),
    with the DEFAULT lease and recovery timers: a blip must not need them."""
    defaults = Settings(_env_file=None)
    settings = sim_settings(scaleout_settings, fault_sim).model_copy(
        update={
            "database_url": private_database,
            "broker_url": private_services.redis_url(1),
            "task_lease_seconds": defaults.task_lease_seconds,
            "job_recovery_seconds": defaults.job_recovery_seconds,
        }
    )
    async with open_deployment(tmp_path, settings, fault_sim, "Faults") as deployment:
        yield deployment


@pytest.fixture
async def shared_deployment(
    tmp_path: Path, scaleout_settings: Settings, redis_url: str, fault_sim: Simulator
) -> AsyncIterator[Deployment]:
    """The scale-out column on the suite's shared services, with a short lease (trials that
    kill workers measure loss and duplication, not the lease's length)."""
    settings = sim_settings(scaleout_settings, fault_sim).model_copy(
        update={"broker_url": redis_url, "task_lease_seconds": 4.0}
    )
    async with open_deployment(tmp_path, settings, fault_sim, "Faults") as deployment:
        yield deployment


async def start_backup(deployment: Deployment, tenant_id: str) -> str:
    r = await deployment.client.post(
        f"/v1/tenants/{tenant_id}/backups", headers=deployment.msp.headers
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def job_progress(deployment: Deployment, job_id: str) -> int:
    """Items saved so far, read from the database (no API, so it works while polling)."""
    from sqlalchemy import func, select

    from safekeep.tenants.models import JobTask

    async with deployment.runtime.db.session() as session:
        stmt = select(func.coalesce(func.sum(JobTask.items), 0)).where(
            JobTask.job_id == uuid.UUID(job_id)
        )
        return int((await session.execute(stmt)).scalar_one())


async def wait_for_progress(deployment: Deployment, job_id: str, *, at_least: int = 1) -> None:
    for _ in range(1200):
        if await job_progress(deployment, job_id) >= at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} made no progress")


async def wait_for_status(deployment: Deployment, job_id: str, status: str) -> None:
    for _ in range(1200):
        if (await deployment.get(f"/v1/jobs/{job_id}"))["status"] == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never became {status}")


async def wait_until_finished(
    deployment: Deployment, job_id: str, *, timeout: float, unavailable: list[httpx.Response]
) -> dict[str, Any]:
    """Poll the job through the API until it ends. Answers other than 200 (while a dependency
    is down) are collected for the caller to check: they must be 503s, never 500s."""
    deadline = time.monotonic() + timeout
    while True:
        r = await deployment.client.get(f"/v1/jobs/{job_id}", headers=deployment.msp.headers)
        if r.status_code == 200:
            body: dict[str, Any] = r.json()
            if body["status"] in TERMINAL:
                return body
        else:
            unavailable.append(r)
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not finished after {timeout} s: {r.text}")
        await asyncio.sleep(0.25)
