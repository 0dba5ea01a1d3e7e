"""What a portal's poll of ``GET /v1/jobs`` costs an MSP as the deployment grows around it
(PostgreSQL).

One MSP of ``--tenants`` tenants, each with ``--history`` finished jobs and one job running
in all; ``--msps`` other MSPs with as many finished jobs per tenant and ``--running`` jobs
running between them. The poll is timed in process (an ASGI client over the app, the MSP's
key) ``--polls`` times after a warm-up, first with no other MSP's job running, then with
theirs: the prepared statement's plan (PostgreSQL's generic plan after five runs) is the one
being timed. Prints both medians beside the target (the busy deployment's poll within 1.5
times the quiet one's: an MSP pays for its own work in progress, not for others'). Run by hand
after ``eval "$(scripts/services env)"``:

    .venv/bin/python -m bench.msp_jobs [--check]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.common import Table

TARGET_RATIO = 1.5


async def _poll_ms(client: httpx.AsyncClient, headers: dict[str, str], polls: int) -> float:
    for _ in range(20):  # past the five runs after which the statement is prepared
        answer = await client.get("/v1/jobs", headers=headers)
        if answer.status_code != 200 or len(answer.json()["items"]) != 1:
            raise SystemExit(f"the MSP's one running job was not listed: {answer.text}")
    times = []
    for _ in range(polls):
        start = time.perf_counter()
        await client.get("/v1/jobs", headers=headers)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def measure(args: argparse.Namespace) -> tuple[float, float]:
    """The quiet and the busy median (ms), on the database of ``SAFEKEEP_DATABASE_URL``."""
    from safekeep.api.app import create_app
    from safekeep.runtime import Runtime
    from safekeep.settings import Settings
    from safekeep.tenants.models import JobKind, JobStatus, Tenant
    from tests.factories import add_job, create_msp, create_tenant

    runtime = Runtime.build(Settings(), send=lambda _messages: None)
    try:
        msp = await create_msp(runtime, "Polling MSP")
        template = await create_tenant(runtime, msp)
        others = [await create_msp(runtime, f"MSP {n}") for n in range(args.msps)]
        async with runtime.db.session() as session:
            await add_job(session, template.id, status=JobStatus.running, kind=JobKind.backup)
            # Tenants as copies of the first (new ids and directories), the MSP's and the others'.
            kept = ", ".join(
                c.name
                for c in Tenant.__table__.columns
                if c.name not in ("id", "entra_tenant_id", "msp_id")
            )
            owners = [str(msp.id)] * (args.tenants - 1) + [
                str(o.id) for o in others for _ in range(args.tenants_per_msp)
            ]
            await session.execute(
                text(
                    # The names are the model's columns, not input.
                    f"INSERT INTO tenant (id, entra_tenant_id, msp_id, {kept}) "  # noqa: S608
                    f"SELECT gen_random_uuid(), gen_random_uuid()::text, owner::uuid, {kept} "
                    "FROM tenant, unnest(CAST(:owners AS text[])) AS owner WHERE id = :template"
                ),
                {"owners": owners, "template": template.id},
            )
            await session.execute(
                text(
                    "INSERT INTO job (id, tenant_id, msp_id, kind, trigger, status, params, "
                    "result, created_at, updated_at) "
                    "SELECT gen_random_uuid(), tenant.id, tenant.msp_id, 'backup', 'scheduled', "
                    "'succeeded', '{}', '{}', now() - g * interval '1 hour', now() "
                    "FROM tenant, generate_series(1, :history) AS g"
                ),
                {"history": args.history},
            )
            await session.execute(text("ANALYZE"))
        app = create_app(runtime=runtime)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            quiet = await _poll_ms(client, msp.headers, args.polls)
            async with runtime.db.session() as session:
                await session.execute(
                    text(
                        "INSERT INTO job (id, tenant_id, msp_id, kind, trigger, status, params, "
                        "result, created_at, updated_at) "
                        "SELECT gen_random_uuid(), tenant.id, tenant.msp_id, 'backup', "
                        "'scheduled', 'running', '{}', '{}', now(), now() "
                        "FROM tenant, generate_series(1, :each) WHERE tenant.msp_id <> :msp"
                    ),
                    {
                        "each": max(1, args.running // max(1, len(owners) - args.tenants + 1)),
                        "msp": msp.id,
                    },
                )
                await session.execute(text("ANALYZE"))
        # A new app and engine: the statement is prepared again, on the busy deployment.
        await runtime.close()
        runtime = Runtime.build(Settings(), send=lambda _messages: None)
        app = create_app(runtime=runtime)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            busy = await _poll_ms(client, msp.headers, args.polls)
        return quiet, busy
    finally:
        await runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--history", type=int, default=200)
    parser.add_argument("--msps", type=int, default=200)
    parser.add_argument("--tenants-per-msp", type=int, default=25)
    parser.add_argument("--running", type=int, default=20000)
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args()
    admin = os.environ.get("SAFEKEEP_TEST_POSTGRES_URL")
    if not admin:
        raise SystemExit('run eval "$(scripts/services env)" first')
    from safekeep.migrate import upgrade
    from tests.fixtures.services import create_database, drop_database

    name = f"bench_msp_jobs_{uuid.uuid4().hex[:8]}"
    url = create_database(admin, name)
    try:
        upgrade(url)
        with TemporaryDirectory() as data:
            os.environ["SAFEKEEP_DATA_DIR"] = str(Path(data))
            database = make_url(url).set(drivername="postgresql+psycopg")
            os.environ["SAFEKEEP_DATABASE_URL"] = database.render_as_string(False)
            quiet, busy = asyncio.run(measure(args))
    finally:
        drop_database(admin, name)
    others = f"{args.running:,} jobs of {args.msps} other MSPs running"
    table = Table(["figure", "measured", "target", ""])
    table.add(
        f"GET /v1/jobs of an MSP of {args.tenants:,} tenants ({args.history} jobs each, 1 "
        "running), median, no other MSP's job running",
        f"{quiet:.2f} ms",
        "",
        "",
    )
    met = busy <= quiet * TARGET_RATIO
    table.add(
        f"the same with {others}",
        f"{busy:.2f} ms ({busy / quiet:.2f}x)",
        f"<= {TARGET_RATIO}x",
        "met" if met else "MISSED",
    )
    print(table.render())
    if args.check and not met:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
