"""Restore and export benchmark (issue 6): back up a simulated tenant, then restore it whole
(every account and service, into new "Restored <date>" folders so originals stay) and export
it whole, through the real job path. Prints items/s, MB/s, peak RSS and CPU seconds.

    eval "$(scripts/services env)"      # for the seaweedfs column
    .venv/bin/python -m bench.restore_export --column embedded --column seaweedfs
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.backup import Connected, backup, connect, wait
from bench.common import (
    Graphsim,
    Table,
    add_tenant_arguments,
    column_settings,
    describe,
    measure,
    start_tenant_graphsim,
)
from bench.scratch import scratch_directory
from safekeep import logging as safekeep_logging
from safekeep.migrate import upgrade
from safekeep.runtime import Runtime
from safekeep.settings import Settings
from safekeep.tenants import outbox
from safekeep.tenants.job import service as job_service
from safekeep.tenants.models import Export, JobKind, JobTrigger
from safekeep.tenants.tenant import repository as tenant_repository
from safekeep.workers import broker
from safekeep.workers.process import start_worker


async def whole_tenant(settings: Settings, tenant_id: uuid.UUID, kind: JobKind) -> dict[str, Any]:
    runtime = Runtime.build(settings, send=broker.send_messages)
    try:
        params: dict[str, Any] = {"scope": {"type": "tenant", "item_ids": []}, "at": None}
        if kind == JobKind.restore:
            params |= {"target": {"account_id": None, "folder": "new"}, "conflict": "keep_both"}
        else:
            params |= {"options": {"mbox": False}, "export_id": str(uuid.uuid4())}
        with outbox.collect() as box:
            async with runtime.db.session() as session:
                tenant = await tenant_repository.get_system(session, tenant_id)
                assert tenant is not None
                job = await job_service.start_job(
                    session,
                    tenant,
                    kind=kind,
                    trigger=JobTrigger.manual,
                    requested_by="bench",
                    params=params,
                )
                if kind == JobKind.export:
                    session.add(
                        Export(
                            id=uuid.UUID(params["export_id"]), tenant_id=tenant.id, job_id=job.id
                        )
                    )
        broker.send_messages(box.messages)
        done = await wait(runtime, job.id)
        return done.result
    finally:
        await runtime.close()


@contextmanager
def backed_up(
    column: str, root: Path, sim: Graphsim, services: list[str], threads: int
) -> Iterator[tuple[Settings, Connected]]:
    """A tenant connected and backed up once, a worker running for the jobs to come: where
    the restore and export benches start from."""
    with column_settings(column, root / "data", sim) as settings:
        upgrade(settings.resolved_database_url)
        worker = start_worker(settings, threads=threads)
        try:
            tenant = asyncio.run(connect(settings, sim, services, broker.send_messages))
            asyncio.run(backup(settings, tenant, None, broker.send_messages))
            yield settings, tenant
        finally:
            worker.stop(timeout=30_000)


def run_column(column: str, args: argparse.Namespace, table: Table) -> None:
    with scratch_directory(f"bench-restore-{column}-") as root:
        sim = start_tenant_graphsim(root, args)
        try:
            with backed_up(column, root, sim, args.services, args.workers) as (settings, tenant):
                tenant_id = tenant.tenant_id
                before = sim.counters()
                sim_cpu = sim.cpu_seconds()
                with measure() as usage:
                    result = asyncio.run(whole_tenant(settings, tenant_id, JobKind.restore))
                after = sim.counters()
                sim_cpu = sim.cpu_seconds() - sim_cpu
                requests = after["total"] - before["total"]
                throttled = after["throttled"] - before["throttled"]
                totals = result["totals"]
                table.report(
                    column,
                    "restore",
                    totals["restored"],
                    f"{totals['restored'] / usage.wall:.1f}",
                    f"{totals['bytes'] / 1e6 / usage.wall:.2f}",
                    f"{usage.peak_rss_mb:.0f}",
                    f"{usage.cpu:.1f}",
                    f"{usage.wall:.1f}",
                    f"skipped {totals['skipped']}, failed {totals['failed']}; "
                    f"{requests} Graph requests, {throttled} 429s, graphsim CPU {sim_cpu:.0f} s",
                )
                with measure() as usage:
                    result = asyncio.run(whole_tenant(settings, tenant_id, JobKind.export))
                table.report(
                    column,
                    "export",
                    result["files"],
                    f"{result['files'] / usage.wall:.1f}",
                    f"{result['size'] / 1e6 / usage.wall:.2f}",
                    f"{usage.peak_rss_mb:.0f}",
                    f"{usage.cpu:.1f}",
                    f"{usage.wall:.1f}",
                    f"zip {result['size'] / 1e6:.1f} MB",
                )
        finally:
            sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_tenant_arguments(parser)
    args = parser.parse_args()
    args.services = args.services.split(",")
    safekeep_logging.configure("WARNING")
    table = Table(
        ["column", "job", "items", "items/s", "MB/s", "peak RSS MB", "CPU s", "wall s", "notes"]
    )
    started = time.perf_counter()
    for column in args.column or ["embedded"]:
        run_column(column, args, table)
    print()
    print(describe(args, started))
    print(table.render())


if __name__ == "__main__":
    main()
