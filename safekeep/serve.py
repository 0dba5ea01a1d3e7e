"""`safekeep serve`: the whole product in one command (API, worker, scheduler), and with
``--demo`` a simulated Microsoft 365 tenant already connected.

The API runs in this process; the worker and the scheduler run in a child process of their
own, so that a backup's CPU work (parsing, compression, encryption, indexing) never holds the
API's interpreter lock: a portal polling during a backup gets the same answers in the same
milliseconds. With the embedded queue (no ``SAFEKEEP_BROKER_URL``) the API hands the messages
its requests commit to the child through a pipe, and the child puts them on its in-process
queue; with a broker the API sends to the broker as usual.

The demo connects through the real onboarding path: the tenant's consent URL (Entra's
authorize endpoint) is visited with the simulated directory's administrator as the sign-in
(graphsim signs them in and records admin consent), its redirect is handed to the same
consent service the callback uses, which redeems the code, verifies the ID token, binds the
directory and starts discovery.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue as stdlib_queue
import signal
import ssl
import threading
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import structlog
import uvicorn
from rich.console import Console
from rich.panel import Panel

from safekeep import logging as safekeep_logging
from safekeep.api.app import create_app
from safekeep.api.serving import uvicorn_options
from safekeep.db import Database
from safekeep.migrate import upgrade
from safekeep.settings import Settings, get_settings
from safekeep.tenants import outbox
from safekeep.tenants.api_key import service as api_key_service
from safekeep.tenants.models import Msp, Tenant
from safekeep.tenants.msp import repository as msp_repository
from safekeep.tenants.scope import Scope, scope_for_msp, system_principal
from safekeep.tenants.tenant import repository as tenant_repository
from safekeep.tenants.tenant import service as tenant_service
from safekeep.workers import broker as queue
from safekeep.workers import context as worker_context
from safekeep.workers.process import start_worker
from safekeep.workers.scheduler import recover_lost_jobs, run_forever

log = structlog.get_logger(__name__)
console = Console(stderr=True)

DEMO_MSP = "Demo MSP"


def _start_simulator(settings: Settings) -> Any:
    from graphsim import Simulator

    sim = Simulator(
        seed=42,
        users=10,
        messages=300,
        files=80,
        sites=2,
        state_dir=settings.data_dir / "graphsim",
        app_id=settings.app_client_id,
        app_secret=settings.app_client_secret.get_secret_value(),
        throttling="microsoft",
    )
    sim.start()
    sim.save()
    return sim


def _demo_settings(settings: Settings, sim: Any) -> Settings:
    return settings.model_copy(
        update={
            "login_url": sim.base_url,
            "graph_url": sim.base_url,
            "ca_bundle": Path(sim.ca_path),
        }
    )


async def _bootstrap_demo(
    settings: Settings, sim: Any, send: Any = queue.send_messages
) -> tuple[str, str]:
    """Ensure the demo MSP and its connected tenant exist; issue a fresh admin key."""
    db = Database(settings.resolved_database_url, max_connections=4)
    messages: list[outbox.Message] = []
    try:
        with outbox.collect() as box:
            async with db.session() as session:
                msp = await msp_repository.get_by_name(session, DEMO_MSP)
                if msp is None:
                    msp = Msp(name=DEMO_MSP)
                    session.add(msp)
                    await session.flush()
                _key, secret = await api_key_service.issue(
                    session, msp_id=msp.id, name="make run", scopes=[Scope.admin], tenant_ids=None
                )
                simulated = sim.tenant()
                tenants = await tenant_repository.list_all(session, _scope(msp))
                tenant: Tenant | None = next(
                    (t for t in tenants if t.requested_domain == simulated.domain), None
                )
                if tenant is None:
                    tenant = await tenant_service.create(
                        session,
                        system_principal(msp.id),
                        settings,
                        name=simulated.name,
                        domain=simulated.domain,
                        app_client_id=None,
                        app_client_secret=None,
                        policy=None,
                    )
                needs_consent = tenant.consent_state != "granted"
            messages.extend(box.messages)
        if needs_consent:
            from graphsim.entra import admin_upn

            with outbox.collect() as box:
                await connect_simulated(db, settings, tenant.id, admin_upn(simulated))
            messages.extend(box.messages)
        send(messages)
        return str(msp.id), secret
    finally:
        await db.dispose()


def _scope(msp: Msp) -> Any:
    return scope_for_msp(msp.id)


async def connect_simulated(
    db: Database, settings: Settings, tenant_id: uuid.UUID, login_hint: str
) -> tenant_service.ConsentOutcome:
    """Onboard a tenant against graphsim as a client's admin would: a fresh consent URL,
    graphsim's authorize endpoint signing ``login_hint`` in, and Entra's answer handed to the
    consent callback's own service function (which redeems and verifies). The demo, the test
    helpers and the benchmarks connect tenants this way."""
    async with db.session() as session:
        tenant = await tenant_repository.get_system(session, tenant_id)
        if tenant is None:
            raise LookupError(f"no tenant {tenant_id}")
        consent_url = await tenant_service.start_consent(session, settings, tenant)
    context = ssl.create_default_context(cafile=str(settings.ca_bundle))
    async with httpx.AsyncClient(verify=context) as http:
        answer = await http.get(
            f"{consent_url}&{urlencode({'login_hint': login_hint})}", follow_redirects=False
        )
    location = answer.headers.get("location", "")
    if answer.status_code != 302 or not location:
        raise RuntimeError(f"the sign-in did not redirect back: {answer.status_code} {answer.text}")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    return await tenant_service.complete_consent(
        db,
        settings,
        state=query.get("state", ""),
        code=query.get("code"),
        error=query.get("error"),
        error_description=query.get("error_description"),
    )


def run(*, host: str, port: int, demo: bool) -> None:
    settings = get_settings()
    safekeep_logging.configure(settings.log_level, json=settings.log_json)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.public_url == "http://127.0.0.1:8000" and port != 8000:
        settings = settings.model_copy(update={"public_url": f"http://{host}:{port}"})
    sim = None
    if demo:
        sim = _start_simulator(settings)
        settings = _demo_settings(settings, sim)
    upgrade(settings.resolved_database_url)
    background = Background(settings)
    background.start()
    if settings.embedded_queue:
        send = background.send
    else:
        queue.configure(settings)  # the demo's bootstrap sends to the broker from here
        send = queue.send_messages
    key_info = None
    if sim is not None:
        key_info = asyncio.run(_bootstrap_demo(settings, sim, send))
    if key_info is not None:
        msp_id, secret = key_info
        console.print(
            Panel.fit(
                f"Safekeep is starting at [bold]http://{host}:{port}[/bold] (docs: /docs)\n"
                f"Demo MSP: {msp_id}\n"
                f"Admin API key: [bold]{secret}[/bold]\n"
                f"Simulated Microsoft 365: {sim.base_url if sim else ''}\n\n"
                f"Try:  curl -H 'Authorization: Bearer {secret}' http://{host}:{port}/v1/tenants",
                title="Safekeep demo",
            )
        )
        print(f"SAFEKEEP_API_KEY={secret}", flush=True)
    try:
        uvicorn.run(
            create_app(settings, send=send),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            **uvicorn_options(),
        )
    finally:
        background.stop()
        if sim is not None:
            sim.save()
            sim.stop()


class Background:
    """The worker and the scheduler in a child process, restarted if it dies; the API
    process forwards queue messages to it (embedded queue)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._inbox: Any = self._context.Queue()
        self._process: Any = None
        self._stopping = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="background-watch", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._watchdog.start()

    def _spawn(self) -> None:
        self._process = self._context.Process(
            target=_background_main,
            args=(self.settings, self._inbox, os.getpid()),
            name="safekeep-worker",
            daemon=False,
        )
        self._process.start()

    def _watch(self) -> None:
        while not self._stopping.wait(2.0):
            if self._process is not None and not self._process.is_alive():
                log.error("worker_process_exited", exitcode=self._process.exitcode)
                self._spawn()

    def send(self, messages: Sequence[outbox.Message]) -> None:
        if messages:
            self._inbox.put(list(messages))

    def stop(self, timeout: float = 20.0) -> None:
        self._stopping.set()
        if self._process is None:
            return
        self._inbox.put(None)
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)


def _background_main(settings: Settings, inbox: Any, parent_pid: int) -> None:
    """The child: worker (embedded queue) and scheduler; messages from the API are sent to the
    in-process queue. It ends when the API sends None, or when the API process is gone."""
    # The API process stops it in order (after the HTTP server has drained); a Ctrl-C or a
    # SIGTERM sent to the whole process group must not kill it first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if settings.serve_worker_niceness:
        os.nice(settings.serve_worker_niceness)
    safekeep_logging.configure(settings.log_level, json=settings.log_json)
    worker_context.configure(settings, send=queue.send_messages)
    queue.configure(settings)
    worker = start_worker(settings, threads=8) if settings.embedded_queue else None
    stop = threading.Event()
    scheduler = threading.Thread(target=_scheduler, args=(settings, stop), daemon=True)
    scheduler.start()
    try:
        while True:
            try:
                batch = inbox.get(timeout=1.0)
            except stdlib_queue.Empty:
                if os.getppid() != parent_pid:
                    break
                continue
            if batch is None:
                break
            queue.send_messages(batch)
    finally:
        stop.set()
        if worker is not None:
            worker.stop(timeout=10_000)


def _scheduler(settings: Settings, stop: threading.Event) -> None:
    async def main() -> None:
        local_stop = asyncio.Event()

        async def watch() -> None:
            await asyncio.to_thread(stop.wait)
            local_stop.set()

        watcher = asyncio.create_task(watch())
        if settings.embedded_queue:
            # The in-process queue does not survive a restart: send unfinished jobs again.
            worker_context.configure(settings, send=queue.send_messages)
            queue.configure(settings)
            await recover_lost_jobs(older_than=timedelta(0))
        await run_forever(settings, stop=local_stop)
        watcher.cancel()

    asyncio.run(main())
