"""Backup benchmark (issue 5): a full backup of a simulated tenant, then 1% of items edited
and an incremental, through the real job path (an in-process Dramatiq worker), against
graphsim in its own process with Microsoft's throttling model and a fixed latency.

    eval "$(scripts/services env)"      # for the seaweedfs column
    .venv/bin/python -m bench.backup --column embedded --column seaweedfs

Prints, per column and run: items/s, MB/s, Graph requests per item, 429s received,
Retry-After violations, peak RSS, CPU seconds, and stored bytes against source bytes
(everything Graph served: MIME, files, item JSON) and against unique source bytes (after
content deduplication, before compression). For the incremental it also prints the Graph
requests beyond delta rounds per changed item (issue 17, target <= 1.5), with the requests
that make it up by endpoint (those inside ``$batch`` count one each; envelopes do not). For
both runs it prints the Outlook requests in flight per mailbox while it had work
(time-weighted mean, from graphsim's ``/_sim/counters``; issue 17, target >= 3.6).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from bench.common import (
    Graphsim,
    Table,
    add_tenant_arguments,
    column_settings,
    describe,
    in_flight_line,
    measure,
    start_tenant_graphsim,
)
from safekeep import logging as safekeep_logging
from safekeep.api.app import create_app
from safekeep.migrate import upgrade
from safekeep.runtime import Runtime
from safekeep.settings import Settings
from safekeep.storage.repository import ContentRef
from safekeep.tenants import outbox
from safekeep.tenants.models import (
    Item,
    ItemVersion,
    Job,
    JobKind,
    JobStatus,
    JobTask,
    Tenant,
)
from safekeep.tenants.msp import service as msp_service
from safekeep.tenants.scope import system_principal
from safekeep.tenants.tenant import service as tenant_service
from safekeep.workers import broker
from safekeep.workers.process import start_worker

EDITABLE = {"message", "file", "event", "contact"}
BEYOND_DELTA_TARGET = 1.5  # issue 17: Graph requests beyond delta rounds per changed item


def graph_requests(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Graph requests sent between two counter snapshots, by endpoint: wire requests (Graph
    calls and downloads) plus the ones carried inside ``$batch`` (each counts, as Graph's
    limits count it); the envelopes themselves and token requests are transport, not work."""
    out: dict[str, int] = {}
    for key in ("by_endpoint", "batch_by_endpoint"):
        for endpoint, n in after[key].items():
            if endpoint.endswith("/$batch") or "token" in endpoint.split(" ")[-1].lower():
                continue
            delta = n - before[key].get(endpoint, 0)
            if delta:
                out[endpoint] = out.get(endpoint, 0) + delta
    return out


def beyond_delta(requests: dict[str, int]) -> dict[str, int]:
    """The requests that are not delta rounds (``.../delta`` endpoints)."""
    return {e: n for e, n in requests.items() if not e.rstrip("/").endswith("delta")}


@dataclass(frozen=True)
class Connected:
    tenant_id: uuid.UUID
    api_key: str


async def connect(settings: Settings, sim: Graphsim, services: list[str]) -> Connected:
    """An MSP and a tenant connected to the simulated one through the consent flow (the
    simulated admin signs in at graphsim's authorize endpoint), with discovery done."""
    from safekeep.serve import connect_simulated

    runtime = Runtime.build(settings, send=broker.send_messages)
    try:
        async with runtime.db.session() as session:
            msp, key = await msp_service.create_with_admin_key(session, name="Bench MSP")
        with outbox.collect():
            async with runtime.db.session() as session:
                tenant = await tenant_service.create(
                    session,
                    system_principal(msp.id),
                    settings,
                    name="Bench",
                    domain=None,
                    app_client_id=None,
                    app_client_secret=None,
                    policy={"services": services},
                )
        with outbox.collect() as box:
            outcome = await connect_simulated(
                runtime.db, settings, tenant.id, f"admin@{sim.tenants[0]['domain']}"
            )
        assert outcome.granted, outcome.error
        broker.send_messages(box.messages)
        async with runtime.db.session() as session:
            job_id = (
                await session.execute(
                    select(Job.id).where(Job.tenant_id == tenant.id, Job.kind == JobKind.discover)
                )
            ).scalar_one()
        await wait(runtime, job_id)
        return Connected(tenant.id, key)
    finally:
        await runtime.close()


async def wait(runtime: Runtime, job_id: uuid.UUID) -> Job:
    while True:
        async with runtime.db.session() as session:
            job = await session.get(Job, job_id)
        assert job is not None
        if job.status.finished:
            if job.status not in (JobStatus.succeeded, JobStatus.partial):
                raise RuntimeError(
                    f"job {job.kind} {job.status}: {job.error_code} {job.error_detail}"
                )
            return job
        await asyncio.sleep(0.25)


async def backup(settings: Settings, tenant: Connected) -> dict[str, Any]:
    """A manual backup asked for as a partner would: POST /v1/tenants/{id}/backups."""
    runtime = Runtime.build(settings, send=broker.send_messages)
    try:
        transport = httpx.ASGITransport(app=create_app(runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            r = await client.post(
                f"/v1/tenants/{tenant.tenant_id}/backups",
                headers={"Authorization": f"Bearer {tenant.api_key}"},
            )
            r.raise_for_status()
        job = await wait(runtime, uuid.UUID(r.json()["id"]))
        async with runtime.db.session() as session:
            items, nbytes, skipped = (
                await session.execute(
                    select(
                        func.sum(JobTask.items), func.sum(JobTask.bytes), func.sum(JobTask.skipped)
                    ).where(JobTask.job_id == job.id)
                )
            ).one()
        return {
            "items": int(items or 0),
            "bytes": int(nbytes or 0),
            "skipped": int(skipped or 0),
            "status": job.status,
        }
    finally:
        await runtime.close()


async def storage_figures(settings: Settings, tenant: Connected) -> dict[str, int]:
    runtime = Runtime.build(settings, send=broker.send_messages)
    try:
        async with runtime.db.session() as session:
            rows = (await session.execute(select(ItemVersion.content, ItemVersion.document))).all()
            row = await session.get(Tenant, tenant.tenant_id)
        assert row is not None
        source = 0
        unique: dict[str, int] = {}
        for content, document in rows:
            for ref in (content, document):
                if ref:
                    parsed = ContentRef.from_json(ref)
                    source += parsed.size
                    for chunk in parsed.chunks:
                        unique[chunk.name] = chunk.size
        store = await runtime.blobs()
        stored = 0
        async for key in store.list(f"{row.storage_prefix}chunks/"):
            stored += await store.size(key)
        return {"source": source, "unique": sum(unique.values()), "stored": stored}
    finally:
        await runtime.close()


async def edit_one_percent(settings: Settings, sim: Graphsim, seed: int) -> int:
    runtime = Runtime.build(settings, send=broker.send_messages)
    try:
        async with runtime.db.session() as session:
            rows = (
                await session.execute(
                    select(Item.external_id, ItemVersion.kind)
                    .join(ItemVersion, ItemVersion.item_id == Item.id)
                    .where(ItemVersion.last_seq.is_(None), ItemVersion.kind.in_(EDITABLE))
                )
            ).all()
    finally:
        await runtime.close()
    chosen = random.Random(seed).sample(sorted(rows), max(1, len(rows) // 100))
    tenant = sim.tenants[0]["id"]
    with sim.http() as client:
        for external_id, _kind in chosen:
            r = client.post(f"/_sim/tenants/{tenant}/items/{external_id}/edit", json={})
            r.raise_for_status()
    return len(chosen)


def run_column(column: str, args: argparse.Namespace, table: Table) -> None:
    with tempfile.TemporaryDirectory(prefix=f"bench-backup-{column}-") as tmp:
        root = Path(tmp)
        sim = start_tenant_graphsim(root, args)
        try:
            settings = column_settings(column, root / "data", sim)
            upgrade(settings.resolved_database_url)
            worker = start_worker(settings, threads=args.workers)
            try:
                tenant = asyncio.run(connect(settings, sim, args.services))
                edited = 0
                for label in ("full", "incremental"):
                    if label == "incremental":
                        edited = asyncio.run(edit_one_percent(settings, sim, args.seed))
                        print(f"[{column}] edited {edited} items (1%)", flush=True)
                    sim.reset_counters()  # the in-flight figures' window is this run
                    before = sim.counters()
                    with measure() as usage:
                        result = asyncio.run(backup(settings, tenant))
                    after = sim.counters()
                    print(in_flight_line(column, label, after), flush=True)
                    requests = after["total"] - before["total"]
                    throttled = after["throttled"] - before["throttled"]
                    violations = after["retry_after_violations"] - before["retry_after_violations"]
                    figures = asyncio.run(storage_figures(settings, tenant))
                    if label == "incremental":
                        report_beyond_delta(column, graph_requests(before, after), edited)
                    items = max(1, result["items"])
                    table.add(
                        column,
                        label,
                        result["items"],
                        f"{result['items'] / usage.wall:.1f}",
                        f"{result['bytes'] / 1e6 / usage.wall:.2f}",
                        f"{requests / items:.2f}",
                        throttled,
                        violations,
                        f"{usage.peak_rss_mb:.0f}",
                        f"{usage.cpu:.1f}",
                        f"{usage.wall:.1f}",
                        f"{figures['stored'] / 1e6:.1f} / {figures['source'] / 1e6:.1f}"
                        f" = {figures['stored'] / max(1, figures['source']):.3f}",
                        f"{figures['stored'] / max(1, figures['unique']):.3f}",
                        result["skipped"],
                    )
                    print(table.rows[-1], flush=True)
            finally:
                worker.stop(timeout=30_000)
        finally:
            sim.stop()


def report_beyond_delta(column: str, requests: dict[str, int], changed: int) -> None:
    beyond = beyond_delta(requests)
    rounds = sum(requests.values()) - sum(beyond.values())
    per_item = sum(beyond.values()) / max(1, changed)
    print(
        f"[{column}] incremental: {rounds} delta rounds, {sum(beyond.values())} other Graph"
        f" requests for {changed} changed items: Graph requests beyond delta rounds per"
        f" changed item {per_item:.2f} (target <= {BEYOND_DELTA_TARGET})",
        flush=True,
    )
    for endpoint, n in sorted(beyond.items(), key=lambda kv: -kv[1]):
        print(f"    {n:5d}  {endpoint}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_tenant_arguments(parser)
    args = parser.parse_args()
    args.services = args.services.split(",")
    safekeep_logging.configure("WARNING")
    table = Table(
        [
            "column",
            "run",
            "items",
            "items/s",
            "MB/s",
            "req/item",
            "429s",
            "RA violations",
            "peak RSS MB",
            "CPU s",
            "wall s",
            "stored / source MB",
            "stored / unique",
            "skipped",
        ]
    )
    started = time.perf_counter()
    for column in args.column or ["embedded"]:
        run_column(column, args, table)
    print()
    print(describe(args, started))
    print(table.render())


if __name__ == "__main__":
    main()
