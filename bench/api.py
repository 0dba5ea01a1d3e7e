"""The API at partner-portal scale: CPU and SQL statements per request, and latency under an
open-loop load of the read mix, on the embedded column and on PostgreSQL + Redis.

    python -m bench.api                      # both columns (PostgreSQL needs scripts/services env)
    python -m bench.api --column embedded --check
    python -m bench.api --profile /tmp/prof  # also py-spy the server under the load

Each column starts its own server process (``safekeep serve`` for embedded, with its worker
and scheduler in a child process; on PostgreSQL, a Redis queue and OpenSearch, the API alone
as the Helm chart's api pods run it, ``safekeep.api.serving.api_command``), seeds one MSP with
tenants, accounts, jobs, snapshots and indexed content (on PostgreSQL it then sends the mix's
searches until OpenSearch, a JVM that may have just started, is warm: ``warm_search``), then
measures:

* SQL statements per request per route, counted by a SQLAlchemy cursor event on an in-process
  copy of the app over the same database (the figure does not depend on machine load);
* server CPU per request: the server process's CPU time (all its threads) over N sequential
  requests of a route, divided by N (also for the snapshots page of a client with a long
  history, ``--history`` snapshots: a page must not cost more as the history grows);
* the read mix at a fixed arrival rate (open loop: each request is sent at its scheduled time
  whatever the others are doing, and its latency is counted from that scheduled time, so a
  server that falls behind shows its queueing instead of hiding it as a closed loop would);
* the highest rate whose p99 stays within 100 ms, stepping the offered rate up;
* where the cores went meanwhile (the API process, the embedded worker, OpenSearch,
  PostgreSQL, the load generator, the machine's total): whether the API's own loop or the
  machine ran out;
* how often the server's database pool ran dry meanwhile (``safekeep_db_pool_full_total`` on
  its /metrics): when it did, requests queued for a connection.

Targets come from issue 18; ``--check`` exits 1 when a figure misses its target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench import loadgen
from bench.common import MachineCPU, Table, delete_search_prefix, process_stat

CPU_TARGET_MS = 2.0
P99_TARGET_MS = 50.0
KNEE_P99_MS = 100.0
KNEE_TARGET_RPS = 400.0
MIX_RATE = 200.0
# The share of requests the generator may send more than 10 ms late before a run's latencies
# are taken for its own rather than the server's.
LATE_SHARE = 0.01
# OpenSearch's warm-up before the postgres column's measurements (``warm_search``).
WARM_ROUND = 300
WARM_ROUNDS = 25

WORDS = [
    "invoice",
    "quarterly",
    "budget",
    "review",
    "contract",
    "renewal",
    "meeting",
    "agenda",
    "travel",
    "expense",
    "report",
    "project",
    "roadmap",
    "onboarding",
    "payroll",
    "audit",
    "proposal",
    "forecast",
    "summary",
    "minutes",
    "draft",
]


@dataclass
class Seeded:
    key: str
    tenant_id: str
    tenant_ids: list[str]
    job_ids: list[str]  # running jobs a portal polls
    account_id: str
    history_tenant_id: str  # a client of long standing: ``history`` snapshots


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    env: dict[str, str]
    log: Path

    def cpu_seconds(self) -> float:
        """CPU time of the API process alone (the worker process of ``safekeep serve`` is a
        child with its own figure)."""
        return process_stat(self.process.pid)[2]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- columns -----------------------------------------------------------------------------------


@contextmanager
def column_env(column: str, data_dir: Path) -> Iterator[dict[str, str]]:
    """SAFEKEEP_* variables for a column; PostgreSQL's database, Redis's db and OpenSearch's
    index prefix are made here and removed on the way out."""
    env = {
        "SAFEKEEP_DATA_DIR": str(data_dir),
        "SAFEKEEP_LOG_LEVEL": "WARNING",
        "SAFEKEEP_SCHEDULER_INTERVAL_SECONDS": "60",
        # One key of one MSP sends the whole load here (a portal's traffic is many MSPs' keys'):
        # their buckets are made larger than any rate measured, so the checks still run but
        # never refuse.
        "SAFEKEEP_API_KEY_RATE_PER_SECOND": "1000000",
        "SAFEKEEP_API_KEY_BURST": "1000000",
        "SAFEKEEP_API_MSP_RATE_PER_SECOND": "1000000",
        "SAFEKEEP_API_MSP_BURST": "1000000",
    }
    if column == "embedded":
        yield env
        return
    from sqlalchemy.engine import make_url

    from tests.fixtures.services import create_database, drop_database, redis_test_database

    admin = os.environ.get("SAFEKEEP_TEST_POSTGRES_URL")
    redis_server = os.environ.get("SAFEKEEP_TEST_REDIS_URL")
    if not admin or not redis_server:
        raise SystemExit('the postgres column needs eval "$(scripts/services env)" first')
    name = f"bench_api_{uuid.uuid4().hex[:8]}"
    url = create_database(admin, name)
    try:
        with redis_test_database(redis_server.rstrip("/"), 16) as redis_url:
            env["SAFEKEEP_DATABASE_URL"] = (
                make_url(url).set(drivername="postgresql+psycopg").render_as_string(False)
            )
            env["SAFEKEEP_BROKER_URL"] = redis_url
            env["SAFEKEEP_REDIS_URL"] = redis_url
            if os.environ.get("SAFEKEEP_TEST_OPENSEARCH_URL"):
                env["SAFEKEEP_SEARCH_URL"] = os.environ["SAFEKEEP_TEST_OPENSEARCH_URL"]
                env["SAFEKEEP_SEARCH_INDEX_PREFIX"] = f"bench-api-{uuid.uuid4().hex[:6]}"
            yield env
    finally:
        drop_database(admin, name)
        if "SAFEKEEP_SEARCH_INDEX_PREFIX" in env:
            delete_search_prefix(env["SAFEKEEP_SEARCH_URL"], env["SAFEKEEP_SEARCH_INDEX_PREFIX"])


def _settings(env: dict[str, str]) -> Any:
    from safekeep.settings import Settings

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return Settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_server(column: str, env: dict[str, str], log_dir: Path) -> Server:
    port = _free_port()
    if column == "embedded":
        args = [
            sys.executable,
            "-c",
            "from safekeep.cli import app; app()",
            "serve",
            "--port",
            str(port),
        ]
    else:
        from safekeep.api.serving import api_command

        args = [*api_command(port), "--no-access-log", "--log-level", "warning"]
    full_env = {**os.environ, **env}
    log = log_dir / f"server-{column}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: see {log}\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return Server(proc, base, env, log)
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"server did not start: see {log}")


# --- seeding -----------------------------------------------------------------------------------


async def seed(
    env: dict[str, str],
    *,
    tenants: int,
    accounts: int,
    jobs: int,
    docs: int,
    history: int = 0,
    graph_tenant_id: str | None = None,
) -> Seeded:
    """One MSP as a portal sees it after a few days of backups: tenants, one busy tenant with
    accounts, finished and running jobs (with their tasks), snapshots and indexed content; and
    a client of long standing (the third tenant) with ``history`` snapshots, as a year of
    backups of 100 accounts leaves."""
    from safekeep.runtime import Runtime
    from safekeep.search.documents import SearchDocument
    from safekeep.tenants.job import repository as job_repository
    from safekeep.tenants.models import (
        Account,
        AccountKind,
        AccountState,
        ConsentState,
        Job,
        JobKind,
        JobStatus,
        JobTask,
        Snapshot,
        SnapshotStatus,
        TaskStatus,
        utcnow,
    )
    from safekeep.tenants.msp import service as msp_service
    from safekeep.tenants.scope import system_principal
    from safekeep.tenants.tenant import service as tenant_service

    settings = _settings(env)
    runtime = Runtime.build(settings, send=lambda _messages: None)
    rng = random.Random(18)
    now = utcnow()
    try:
        async with runtime.db.session() as session:
            msp, key = await msp_service.create_with_admin_key(session, name="Bench MSP")
            tenant_rows = []
            for n in range(tenants):
                tenant = await tenant_service.create(
                    session,
                    system_principal(msp.id),
                    settings,
                    name=f"Client {n:03d}",
                    domain=None,
                    app_client_id=None,
                    app_client_secret=None,
                    policy=None,
                )
                tenant.consent_state = ConsentState.granted
                # The second tenant is graphsim's, for the backup run during the load.
                linked = n == 1 and graph_tenant_id is not None
                tenant.entra_tenant_id = graph_tenant_id if linked else str(uuid.uuid4())
                tenant.consent_changed_at = now
                # Nothing due: the bench measures the API, not scheduled backups failing to
                # reach Microsoft from a machine without network.
                tenant.next_backup_at = now + timedelta(days=30)
                tenant_rows.append(tenant)
            await session.flush()
            busy = tenant_rows[0]
            account_rows = [
                Account(
                    tenant_id=busy.id,
                    msp_id=busy.msp_id,
                    kind=AccountKind.user,
                    graph_id=str(uuid.uuid4()),
                    display_name=f"User {n:03d}",
                    principal_name=f"user{n:03d}@client.example",
                    mail=f"user{n:03d}@client.example",
                    protected=n % 5 != 0,
                    state=AccountState.active if n % 7 else AccountState.cancelled,
                    licensed=True,
                )
                for n in range(accounts)
            ]
            session.add_all(account_rows)
            await session.flush()
            running: list[str] = []
            seq: Counter[tuple[uuid.UUID, str]] = Counter()
            # Each job names the accounts and services it has tasks for, as a manual backup of
            # some accounts does. `safekeep serve`'s worker sends unfinished jobs again when it
            # starts (possibly after this seed); a job asking for every protected account would
            # then get tasks that try to reach Microsoft from here and fail, using CPU and
            # writing rows in the middle of the measurements. These find nothing to do.
            job_accounts = account_rows[:10]
            params = {
                "account_ids": sorted(str(a.id) for a in job_accounts),
                "services": ["mail", "onedrive"],
            }
            for n in range(jobs):
                is_running = n >= jobs - 5
                job = Job(
                    tenant_id=busy.id,
                    msp_id=busy.msp_id,
                    kind=JobKind.backup,
                    status=JobStatus.running if is_running else JobStatus.succeeded,
                    params=params,
                    started_at=now,
                    finished_at=None if is_running else now,
                    created_at=now - timedelta(hours=jobs - n),
                )
                session.add(job)
                await session.flush()
                if is_running:
                    running.append(str(job.id))
                for a, account in enumerate(job_accounts):
                    for service in params["services"]:
                        done = not is_running or a < 5
                        session.add(
                            JobTask(
                                job_id=job.id,
                                tenant_id=busy.id,
                                account_id=account.id,
                                service=service,
                                status=TaskStatus.succeeded if done else TaskStatus.running,
                                items=rng.randint(0, 500),
                                bytes=rng.randint(0, 10**8),
                                requests=rng.randint(1, 50),
                                heartbeat_at=now,
                            )
                        )
                        if done and a < 3:
                            seq[(account.id, service)] += 1
                            session.add(
                                Snapshot(
                                    tenant_id=busy.id,
                                    account_id=account.id,
                                    service=service,
                                    seq=seq[(account.id, service)],
                                    job_id=job.id,
                                    status=SnapshotStatus.complete,
                                    started_at=now - timedelta(hours=jobs - n),
                                    completed_at=now - timedelta(hours=jobs - n),
                                    items_total=rng.randint(0, 5000),
                                )
                            )
                if not is_running:
                    # As the engine settles a backup when its last task ends.
                    await session.flush()
                    tally = await job_repository.tally(session, job.id)
                    job.result = {
                        "progress": tally.progress,
                        "tasks": {"ok": tally.succeeded, "failed": 0, "cancelled": 0},
                    }
            await session.flush()
            await _add_history(session, tenant_rows[2], history, now)
        search = await runtime.search_backend()
        batch = []
        for n in range(docs):
            account = account_rows[n % len(account_rows)]
            words = rng.sample(WORDS, 6)
            batch.append(
                SearchDocument(
                    version_id=str(uuid.uuid4()),
                    msp_id=str(msp.id),
                    tenant_id=str(busy.id),
                    account_id=str(account.id),
                    service="mail",
                    item_id=str(uuid.uuid4()),
                    folder_path="/Inbox",
                    kind="message",
                    title=" ".join(words[:3]).capitalize(),
                    valid_from=now - timedelta(days=n % 30),
                    date=now - timedelta(days=n % 30),
                    size=rng.randint(1_000, 100_000),
                    sender=f"sender{n % 17}@partner.example",
                    recipients=[account.mail or ""],
                    body=" ".join(rng.choices(WORDS, k=60)),
                )
            )
            if len(batch) == 200:
                await search.index(batch)
                batch = []
        if batch:
            await search.index(batch)
        return Seeded(
            key=key,
            tenant_id=str(busy.id),
            tenant_ids=[str(t.id) for t in tenant_rows],
            job_ids=running,
            account_id=str(account_rows[0].id),
            history_tenant_id=str(tenant_rows[2].id),
        )
    finally:
        await runtime.close()


async def _add_history(session: Any, tenant: Any, snapshots: int, now: datetime) -> None:
    """``snapshots`` complete snapshots of 100 accounts' four services, one every 5 minutes
    across the tenant going back from ``now`` (100,000: 347 days, each account and service
    every 33 hours), inserted in bulk; the statistics refreshed on PostgreSQL, as its
    autovacuum would after such growth."""
    from sqlalchemy import insert, text

    from safekeep.tenants.models import Account, AccountKind, Snapshot, SnapshotStatus

    if snapshots <= 0:
        return
    accounts = [
        {
            "id": uuid.uuid4(),
            "tenant_id": tenant.id,
            "msp_id": tenant.msp_id,
            "kind": AccountKind.user,
            "graph_id": str(uuid.uuid4()),
            "display_name": f"Staff {n:03d}",
            "created_at": now - timedelta(days=365),
        }
        for n in range(100)
    ]
    await session.execute(insert(Account), accounts)
    services = ("mail", "onedrive", "calendar", "contacts")
    rows = []
    for n in range(snapshots):
        account, service = accounts[n % 100], services[(n // 100) % 4]
        when = now - timedelta(minutes=5 * (snapshots - n))
        rows.append(
            {
                "id": uuid.uuid4(),
                "tenant_id": tenant.id,
                "account_id": account["id"],
                "service": service,
                "seq": n // 400 + 1,
                "status": SnapshotStatus.complete,
                "started_at": when,
                "completed_at": when,
                "items_total": n % 5000,
            }
        )
        if len(rows) == 5000:
            await session.execute(insert(Snapshot), rows)
            rows = []
    if rows:
        await session.execute(insert(Snapshot), rows)
    if (await session.connection()).dialect.name == "postgresql":
        await session.execute(text("ANALYZE snapshot"))


def migrate(env: dict[str, str]) -> None:
    from safekeep.migrate import upgrade

    upgrade(_settings(env).resolved_database_url)


# --- the routes --------------------------------------------------------------------------------


def read_routes(s: Seeded) -> dict[str, str]:
    t = s.tenant_id
    return {
        "GET /v1/tenants": "/v1/tenants",
        "GET /v1/tenants/{id}": f"/v1/tenants/{t}",
        "GET accounts page": f"/v1/tenants/{t}/accounts?limit=50",
        "GET jobs": f"/v1/tenants/{t}/jobs",
        "GET snapshots": f"/v1/tenants/{t}/snapshots",
        "GET /v1/usage": "/v1/usage",
        "GET /v1/search?q=invoice": "/v1/search?q=invoice",
        "GET /v1/jobs/{id}": f"/v1/jobs/{s.job_ids[0]}",
    }


def cpu_routes(s: Seeded) -> dict[str, str]:
    """The mix's routes, and a snapshots page of the client with a long history (measured
    for its CPU and statements, not sent in the mix)."""
    return {
        **read_routes(s),
        "GET snapshots, long history": f"/v1/tenants/{s.history_tenant_id}/snapshots",
    }


# The routes the CPU target names ("tenant, accounts page, job").
CPU_TARGET_ROUTES = ("GET /v1/tenants/{id}", "GET accounts page", "GET /v1/jobs/{id}")


def mix(s: Seeded, rng: random.Random) -> Iterator[tuple[str, str]]:
    """(label, path) forever: the portal read mix, job polling (a third of the traffic, as
    portals poll every running backup) and searches as a user types."""
    routes = read_routes(s)
    reads = [k for k in routes if k != "GET /v1/jobs/{id}"]
    while True:
        r = rng.random()
        if r < 0.55:
            label = rng.choice(reads)
            yield label, routes[label]
        elif r < 0.85:
            yield "poll job", f"/v1/jobs/{rng.choice(s.job_ids)}"
        else:
            yield "search mix", _typed_search(s, rng.choice(TYPING), everywhere=rng.random() < 0.5)


TYPING = ["inv", "invo", "invoice", "invoice q", "invoice quarterly"]  # a user typing a search


def _typed_search(s: Seeded, typed: str, *, everywhere: bool) -> str:
    """What a portal asks as a user types ``typed``: the last word a prefix until it is one."""
    q = (typed if typed in WORDS else typed + "*").replace(" ", "+")
    return f"/v1/search?q={q}" if everywhere else f"/v1/tenants/{s.tenant_id}/search?q={q}"


async def warm_search(server: Server, s: Seeded) -> str:
    """Warm OpenSearch with the mix's searches before anything is measured; returns a note.

    A freshly started OpenSearch (a JVM) compiles its hot paths over its first few thousand
    queries: three runs of this benchmark back to back, each on a new index, measured the
    same mix at 1.03, 0.49 and 0.32 of OpenSearch's cores, and p99 at 196, 86 and 28 ms. A
    deployment's OpenSearch has long been warm, so the mix is measured after
    ``WARM_ROUNDS`` rounds of ``WARM_ROUND`` searches, four at a time. Measured from a fresh
    start, 300 at a time: 29.5 ms of OpenSearch's CPU a search in the first round, 16 in the
    third to fifth, 12-13 in the tenth to thirteenth, 5-7 from the twentieth on (a stopping
    rule on two rounds agreeing stopped after the third). The note gives the curve."""
    paths = [read_routes(s)["GET /v1/search?q=invoice"]] + [
        _typed_search(s, typed, everywhere=everywhere)
        for typed in TYPING
        for everywhere in (True, False)
    ]
    headers = {"Authorization": f"Bearer {s.key}"}
    costs: list[float] = []
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=60) as client:

        async def send(lane: int) -> None:
            for n in range(lane, WARM_ROUND, 4):
                (await client.get(paths[n % len(paths)])).raise_for_status()

        for _ in range(WARM_ROUNDS):
            with machine_cpu(server) as cpu:
                await asyncio.gather(*(send(lane) for lane in range(4)))
            costs.append(cpu.seconds["OpenSearch"] * 1000 / WARM_ROUND)
    shown = sorted({*range(0, WARM_ROUNDS, 6), WARM_ROUNDS - 1})
    rounds = ", ".join(str(n + 1) for n in shown)
    curve = " → ".join(f"{costs[n]:.1f}" for n in shown)
    return (
        f"{WARM_ROUNDS * WARM_ROUND} searches; OpenSearch CPU ms per search in rounds "
        f"{rounds} of {WARM_ROUND}: {curve}"
    )


# --- measurements ------------------------------------------------------------------------------


async def count_statements(env: dict[str, str], s: Seeded) -> dict[str, int]:
    """Statements each route sends to the database, on an in-process app over the same data
    (the second request of each, so that first-use work is not counted)."""
    from sqlalchemy import event

    from safekeep.api.app import create_app
    from safekeep.runtime import Runtime

    settings = _settings(env)
    runtime = Runtime.build(settings, send=lambda _messages: None)
    counts: Counter[str] = Counter()
    current = ["-"]

    def on_execute(*_args: Any) -> None:
        counts[current[0]] += 1

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", on_execute)
    app = create_app(runtime=runtime)
    headers = {"Authorization": f"Bearer {s.key}"}
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for label, path in cpu_routes(s).items():
                first = await client.get(path, headers=headers)
                assert first.status_code == 200, (label, first.status_code, first.text)
                current[0] = label
                await client.get(path, headers=headers)
                etag = first.headers.get("etag")
                if etag:
                    current[0] = label + " (If-None-Match)"
                    again = await client.get(path, headers={**headers, "If-None-Match": etag})
                    assert again.status_code == 304, (label, again.status_code)
                current[0] = "-"
    finally:
        await runtime.close()
    counts.pop("-", None)
    return dict(counts)


def cpu_per_request(server: Server, s: Seeded, n: int) -> dict[str, float]:
    """Milliseconds of server CPU per request, route by route, over ``n`` sequential requests
    on one kept-alive connection (warm-up excluded)."""
    headers = {"Authorization": f"Bearer {s.key}"}
    out: dict[str, float] = {}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
        for label, path in cpu_routes(s).items():
            for _ in range(10):
                client.get(path).raise_for_status()
            before = server.cpu_seconds()
            for _ in range(n):
                client.get(path).raise_for_status()
            out[label] = (server.cpu_seconds() - before) * 1000 / n
        before = server.cpu_seconds()
        for _ in range(n):
            client.get("/healthz").raise_for_status()
        out["GET /healthz"] = (server.cpu_seconds() - before) * 1000 / n
    return out


@dataclass
class LoadResult:
    rate: float
    duration: float
    sent: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    by_label: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    not_modified: int = 0
    idle_closed: int = 0  # kept-alive connections the server closed while idle
    server_cpu: float = 0.0
    late_sends: int = 0  # the generator itself fell behind its schedule by > 10 ms
    machine: MachineCPU | None = None  # where the cores went meanwhile
    pool_full: float = 0.0  # checkouts that left the server's database pool empty meanwhile

    def pct(self, q: float, values: list[float] | None = None) -> float:
        data = sorted(self.latencies if values is None else values)
        if not data:
            return float("nan")
        return data[min(len(data) - 1, int(q * len(data)))] * 1000

    @property
    def generator_kept_up(self) -> bool:
        """Whether the load generator itself sent on schedule: on a machine busy with other
        work it can be starved of CPU, and then what it measures is its own lateness."""
        return self.late_sends <= LATE_SHARE * max(1, self.sent)

    @property
    def served_per_s(self) -> float:
        return len(self.latencies) / self.duration


def drained(server: Server, timeout: float = 180.0) -> None:
    """Wait until the server answers /healthz promptly again: requests a previous phase gave
    up on may still be queued there, and would count against the next one."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.base_url, timeout=timeout) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            client.get("/healthz")
            if time.perf_counter() - started < 0.05:
                return
            time.sleep(1.0)


def pool_full_count(server: Server) -> float:
    """The server's count of database checkouts that took its pool's last free connection
    (``safekeep_db_pool_full_total`` on its /metrics): when it grows during a run, requests
    queued for a connection."""
    answer = httpx.get(f"{server.base_url}/metrics", timeout=30)
    answer.raise_for_status()
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if sample.name == "safekeep_db_pool_full_total":
                return float(sample.value)
    raise SystemExit("the server's /metrics has no safekeep_db_pool_full_total")


def machine_cpu(server: Server) -> MachineCPU:
    """The cores' use by the server, its worker (embedded: a child), OpenSearch, PostgreSQL
    and the load generator (a child of this process): the API's share of one core says
    whether its own loop is the limit, the machine's total whether the cores are."""
    api, bench = server.process.pid, os.getpid()
    return MachineCPU(
        {
            "API": lambda pid, _cmd, _parent: pid == api,
            "worker": lambda _pid, _cmd, parent: parent == api,
            "OpenSearch": lambda _pid, cmd, _parent: cmd == "java",
            "PostgreSQL": lambda _pid, cmd, _parent: cmd == "postgres",
            "load generator": lambda _pid, _cmd, parent: parent == bench,
        }
    )


async def open_loop(server: Server, s: Seeded, rate: float, duration: float) -> LoadResult:
    """Send the mix at ``rate`` requests/s for ``duration`` s on a schedule fixed in advance;
    latency runs from each request's scheduled time to the end of its response. Job polls
    send If-None-Match with the last ETag seen, as a portal would. The requests go out from a
    process of their own (``bench.loadgen``), a few tens of microseconds of CPU each."""
    await asyncio.to_thread(drained, server)
    result = LoadResult(rate, duration)
    rng = random.Random(42)
    routes = mix(s, rng)
    total = int(rate * duration)
    requests = []
    for _ in range(total):
        label, path = next(routes)
        requests.append((label, path, label == "poll job"))
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        # Start the worker (its imports) before the clock does.
        await loop.run_in_executor(pool, loadgen.run, server.base_url, s.key, [], rate)
        full_before = await asyncio.to_thread(pool_full_count, server)
        with machine_cpu(server) as machine:
            outcome = await loop.run_in_executor(
                pool, loadgen.run, server.base_url, s.key, requests, rate
            )
    result.pool_full = await asyncio.to_thread(pool_full_count, server) - full_before
    result.machine = machine
    result.server_cpu = machine.seconds["API"]
    result.sent = outcome.sent
    result.late_sends = outcome.late_sends
    result.not_modified = outcome.not_modified
    result.idle_closed = outcome.idle_closed
    result.errors = outcome.errors
    for label, values in outcome.by_label.items():
        result.by_label[label] = values
        result.latencies.extend(values)
    return result


def knee(server: Server, s: Seeded, rates: list[float], step_seconds: float) -> tuple[float, str]:
    """The highest offered rate whose p99 stays within 100 ms with no errors."""
    best = 0.0
    notes = []
    for rate in rates:
        r = asyncio.run(open_loop(server, s, rate, step_seconds))
        p99 = r.pct(0.99)
        ok = p99 <= KNEE_P99_MS and not r.errors and r.generator_kept_up
        late = "" if r.generator_kept_up else f", generator late on {r.late_sends}"
        cores = ""
        if r.machine is not None:
            api, busy = r.machine.cores("API"), r.machine.busy_cores
            cores = f" (API {api:.2f} core, machine {busy:.2f}, pool ran dry {r.pool_full:.0f}x)"
        notes.append(f"{rate:.0f}/s: p99 {p99:.0f} ms{cores}{late}{'' if ok else ' ✗'}")
        if not ok:
            break
        best = rate
    return best, "; ".join(notes)


def during_backup(server: Server, s: Seeded, args: argparse.Namespace) -> tuple[LoadResult, str]:
    """The read mix while the worker backs up graphsim's tenant (discovery first): the
    embedded worker must not starve the API."""
    headers = {"Authorization": f"Bearer {s.key}"}
    tenant = s.tenant_ids[1]
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=300) as client:

        def wait(job_id: str, until: float, *, started: bool = False) -> dict[str, Any]:
            """Until the job ends (or, with ``started``, has items), or ``until`` passes."""
            while True:
                job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] not in ("queued", "running") or time.monotonic() > until:
                    return job
                if started and job["progress"]["items"] > 0:
                    return job
                time.sleep(0.5)

        discovery = client.post(f"/v1/tenants/{tenant}/discover")
        discovery.raise_for_status()
        done = wait(discovery.json()["id"], time.monotonic() + 180)
        if done["status"] != "succeeded":
            raise SystemExit(f"discovery did not succeed: {done}")
        backup = client.post(f"/v1/tenants/{tenant}/backups", json={"services": ["mail"]})
        backup.raise_for_status()
        job_id = backup.json()["id"]
        wait(job_id, time.monotonic() + 60, started=True)
        load = asyncio.run(open_loop(server, s, args.rate, args.duration))
        drained(server)
        job = client.get(f"/v1/jobs/{job_id}").json()
    return load, f"backup {job['status']}, {job['progress']['items']} items at the end"


@contextmanager
def profiling(server: Server, out: Path | None) -> Iterator[None]:
    """py-spy on the server process while inside (``--profile``)."""
    if out is None:
        yield
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    args = [py_spy, "record", "--pid", str(server.process.pid), "--rate", "200", "--subprocesses"]
    raw = out.with_suffix(".raw.txt")
    proc = subprocess.Popen(
        [*args, "--format", "raw", "--output", str(raw), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        if raw.exists():
            summarize_profile(raw, out)


def summarize_profile(raw: Path, out: Path, top: int = 40) -> None:
    """py-spy's collapsed stacks, turned into self and inclusive shares per function of the
    samples taken while serving a request (idle threads and the event loop's wait excluded).

    A request's statements run inside SQLAlchemy's greenlets, which py-spy shows as stacks
    of their own, without the ASGI frames above them; in the API's process (the worker runs
    in a child) every SQLAlchemy stack is a request's, so those count as serving too."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = every = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        every += count
        frames = stack.split(";")
        if not any("run_asgi" in frame or "sqlalchemy/" in frame for frame in frames):
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    total = max(total, 1)
    lines = [f"{every} samples, {total} while serving a request", "", "self %  function"]
    lines += [f"{100 * c / total:5.1f}  {f}" for f, c in own.most_common(top)]
    lines += ["", "incl %  function"]
    lines += [f"{100 * c / total:5.1f}  {f}" for f, c in inclusive.most_common(top * 2)]
    out.write_text("\n".join(lines) + "\n")


# --- main --------------------------------------------------------------------------------------


def run_column(column: str, args: argparse.Namespace, root: Path) -> tuple[Table, bool]:
    data_dir = root / column
    data_dir.mkdir()
    table = Table(["figure", "measured", "target", ""])
    ok = True

    def row(name: str, value: str, target: str, passed: bool | None) -> None:
        nonlocal ok
        if passed is False:
            ok = False
        table.add(name, value, target, "" if passed is None else ("✓" if passed else "✗ MISS"))

    sim = None
    with column_env(column, data_dir) as env:
        if column == "embedded" and args.during_backup:
            from bench.common import start_graphsim

            sim = start_graphsim(
                root / "graphsim",
                users=10,
                messages=args.backup_messages,
                files=0,
                events=0,
                contacts=0,
                sites=0,
                latency_ms=20,
                throttling="off",
                seed=18,
            )
            env.update(
                SAFEKEEP_LOGIN_URL=sim.base_url,
                SAFEKEEP_GRAPH_URL=sim.base_url,
                SAFEKEEP_CA_BUNDLE=sim.ca_path,
            )
        migrate(env)
        server = start_server(column, env, root)
        try:
            seeded = asyncio.run(
                seed(
                    env,
                    tenants=args.tenants,
                    accounts=args.accounts,
                    jobs=30,
                    docs=args.docs,
                    history=args.history,
                    graph_tenant_id=sim.tenants[0]["id"] if sim else None,
                )
            )
            if column == "postgres":
                row("OpenSearch warmed first", asyncio.run(warm_search(server, seeded)), "", None)
            statements = asyncio.run(count_statements(env, seeded))
            cpu = cpu_per_request(server, seeded, args.cpu_requests)
            for label in cpu_routes(seeded):
                target = CPU_TARGET_MS if label in CPU_TARGET_ROUTES else None
                row(
                    f"server CPU ms/request {label}",
                    f"{cpu[label]:.2f}",
                    f"≤ {target:.0f}" if target else "",
                    cpu[label] <= target if target else None,
                )
            row("server CPU ms/request GET /healthz", f"{cpu['GET /healthz']:.2f}", "", None)
            for label, count in statements.items():
                row(f"SQL statements {label}", str(count), "", None)
            profile = args.profile / f"{column}.txt" if args.profile else None
            with profiling(server, profile):
                load = asyncio.run(open_loop(server, seeded, args.rate, args.duration))
            errors = sum(load.errors.values())
            row(
                f"read mix at {args.rate:.0f}/s for {args.duration:.0f} s: p50 / p99 ms",
                f"{load.pct(0.5):.1f} / {load.pct(0.99):.1f}",
                f"p99 ≤ {P99_TARGET_MS:.0f}",
                load.pct(0.99) <= P99_TARGET_MS,
            )
            row(
                "  served/s, errors",
                f"{load.served_per_s:.0f}/s, {errors} {dict(load.errors) or ''}",
                "0 errors",
                errors == 0,
            )
            row(
                "  idle connections the server closed",
                str(load.idle_closed),
                "",
                None,
            )
            row(
                "  server CPU ms/request (mix), 304s",
                f"{load.server_cpu * 1000 / max(1, load.sent):.2f}, {load.not_modified}",
                "",
                None,
            )
            if load.machine is not None:
                row("  cores used meanwhile", load.machine.line(), "", None)
            row(
                "  database checkouts that left the pool empty",
                f"{load.pool_full:.0f}",
                "",
                None,
            )
            row(
                "  load generator on schedule: sends > 10 ms late",
                f"{load.late_sends} of {load.sent}",
                f"≤ {LATE_SHARE:.0%}, or the latencies are the generator's",
                load.generator_kept_up,
            )
            for label, values in sorted(load.by_label.items()):
                row(f"  p99 {label}", f"{load.pct(0.99, values):.1f}", "", None)
            if args.knee:
                best, notes = knee(server, seeded, args.knee_rates, args.knee_seconds)
                row(
                    "requests/s before p99 passes 100 ms",
                    f"{best:.0f} ({notes})",
                    f"≥ {KNEE_TARGET_RPS:.0f}",
                    best >= KNEE_TARGET_RPS,
                )
            if sim is not None:
                try:
                    busy, note = during_backup(server, seeded, args)
                except (httpx.HTTPError, SystemExit) as exc:
                    row("read mix during a backup", f"not measured: {exc!r}", "", None)
                else:
                    row(
                        f"read mix at {args.rate:.0f}/s during a backup: p50 / p99 ms",
                        f"{busy.pct(0.5):.1f} / {busy.pct(0.99):.1f} ({note})",
                        "not starved",
                        None,
                    )
                    row(
                        "  served/s, errors (during the backup)",
                        f"{busy.served_per_s:.0f}/s, {sum(busy.errors.values())}"
                        + (f" {dict(busy.errors)}" if busy.errors else ""),
                        "",
                        None,
                    )
        finally:
            server.stop()
            if sim is not None:
                sim.stop()
    return table, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--column", action="append", choices=["embedded", "postgres"])
    parser.add_argument("--rate", type=float, default=MIX_RATE)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--cpu-requests", type=int, default=300)
    parser.add_argument("--tenants", type=int, default=25)
    parser.add_argument("--accounts", type=int, default=60)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument(
        "--history",
        type=int,
        default=100_000,
        help="snapshots of the long-standing client whose snapshots page is measured",
    )
    parser.add_argument("--no-knee", dest="knee", action="store_false")
    parser.add_argument(
        "--knee-rates", type=lambda v: [float(x) for x in v.split(",")], default=[300, 400, 500]
    )
    parser.add_argument("--knee-seconds", type=float, default=10.0)
    parser.add_argument(
        "--no-backup",
        dest="during_backup",
        action="store_false",
        help="skip the embedded run of the mix during a backup (graphsim)",
    )
    parser.add_argument("--backup-messages", type=int, default=3000)
    parser.add_argument("--profile", type=Path, help="folder for py-spy summaries")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    columns = args.column or ["embedded", "postgres"]
    all_ok = True
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        for column in columns:
            table, ok = run_column(column, args, Path(tmp))
            all_ok &= ok
            print(f"\n## {column}\n")
            print(table.render(), flush=True)
    print(
        f"\n{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end; "
        f"{time.strftime('%Y-%m-%d %H:%M')}; total {time.perf_counter() - started:.0f} s"
    )
    if args.profile:
        print(f"profiles: {', '.join(str(args.profile / f'{c}.txt') for c in columns)}")
    if args.check and not all_ok:
        sys.exit(1)
    print(json.dumps({"ok": all_ok}))


if __name__ == "__main__":
    main()
