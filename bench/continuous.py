"""Continuous protection benchmark (issue 15): change-to-snapshot latency against the RPO,
Graph requests per change against a scheduled incremental's, and ransomware detection
against a week of ordinary edits.

    eval "$(scripts/services env)"      # the scale-out column (the default)
    .venv/bin/python -m bench.continuous [--changes 200] [--rpo-minutes 5]

Part 1. graphsim (in process) notifies Safekeep's real API (uvicorn on a loopback port) of
each change; a scheduler loop (every ``--tick`` s) turns accounts dirty for ``--debounce``
s into incrementals, run through the real job path (``start_backup_job`` then one
``run_backup_task`` per account and service, as the workers run them). ``--changes`` new
messages and files arrive across the tenant's users, one every ``--interval`` s; each
change's latency runs from its creation to the completion of the first snapshot holding
it. Then the same number of changes is made with notifications off and backed up by one
scheduled incremental of every protected account and service, for the requests-per-change
comparison (target: within 1.5x). Subscription creation is counted apart (once per
account and service every few days).

Part 2. A user's OneDrive gets a simulated week of ordinary edits (text edits, new files,
compressed uploads, renames keeping their extension, a few deletions), three incrementals a
day; then graphsim's ransomware control encrypts and renames files and one incremental
runs. Targets: no detection during the week, one detection after the attack's first
incremental, and the one-call restore bringing every clean file back byte for byte.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from bench.backup import graph_requests
from bench.common import Table, column_settings
from bench.scratch import scratch_directory
from graphsim import Simulator
from graphsim.state import Drive
from safekeep import logging as safekeep_logging
from safekeep.backup import recovery
from safekeep.backup.jobs import backup as jobs
from safekeep.backup.jobs.restore import run_restore_job
from safekeep.backup.subscriptions import sync_tenant
from safekeep.migrate import upgrade
from safekeep.runtime import Runtime
from safekeep.tenants import outbox
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.job import service as job_service
from safekeep.tenants.models import Detection, JobKind, JobTrigger
from safekeep.tenants.scope import system_principal
from safekeep.tenants.subscription import service as subscriptions
from safekeep.tenants.tenant import repository as tenant_repository
from tests.backup.harness import EngineHarness, connect
from tests.backup.test_continuous import live_api

LATENCY_SHARE_TARGET = 1.5  # requests per change, continuous vs scheduled incremental
MIME = (
    "From: Partner <p@example.com>\r\nTo: user@example.com\r\nSubject: change {n}\r\n"
    "Content-Type: text/plain\r\n\r\nchange number {n}\r\n"
)


@dataclass
class SimShim:
    base_url: str
    ca_path: str


class Worker:
    """The workers' job path, inline: messages the runtime sends are run in order."""

    def __init__(self) -> None:
        self.inbox: list[outbox.Message] = []
        self.done_units: list[tuple[uuid.UUID, str, float]] = []

    def send(self, messages: Sequence[outbox.Message]) -> None:
        self.inbox.extend(messages)

    async def drain(self, runtime: Runtime) -> None:
        from safekeep.tenants.models import JobTask

        while self.inbox:
            message = self.inbox.pop(0)
            if message.actor == "run_backup":
                with outbox.collect() as box:
                    await jobs.start_backup_job(runtime, message.args[0])
                self.inbox.extend(box.messages)
            elif message.actor == "run_backup_task":
                with outbox.collect() as box:
                    await jobs.run_backup_task(runtime, message.args[0])
                self.inbox.extend(box.messages)
                async with runtime.db.session() as session:
                    task = await session.get(JobTask, uuid.UUID(message.args[0]))
                if task is not None and task.account_id is not None:
                    self.done_units.append((task.account_id, task.service, time.monotonic()))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def part_one(
    h: EngineHarness, worker: Worker, args: argparse.Namespace, table: Table
) -> None:
    sim = h.sim
    await h.set_policy(rpo_minutes=args.rpo_minutes)
    synced = await sync_tenant(h.runtime, str(h.tenant.id))
    # The first incremental after subscribing (it covers the time before the subscription).
    with outbox.collect() as box:
        async with h.runtime.db.session() as session:
            await subscriptions.enqueue_changed(session, debounce=timedelta(0))
    worker.send(box.messages)
    await worker.drain(h.runtime)
    users = [u for u in sim.tenant().users.values() if u.mailbox_enabled and u.drive_id]
    accounts = {u.id: await h.account(u.id) for u in users}
    rng = random.Random(15)
    pending: dict[str, tuple[uuid.UUID, str, float]] = {}
    latencies: list[float] = []
    before = sim.counters()
    started = time.monotonic()

    async def make_changes() -> None:
        for n in range(args.changes):
            user = rng.choice(users)
            if n % 2 == 0:
                mid = sim.add_message(sim.tenant().id, user.id, MIME.format(n=n).encode())
                pending[mid] = (accounts[user.id].id, "mail", time.monotonic())
            else:
                data = f"note {n}\n".encode() * 20
                fid = sim.add_file(
                    sim.tenant().id, f"/Continuous/n{n}.txt", user=user.id, data=data
                )
                pending[fid] = (accounts[user.id].id, "onedrive", time.monotonic())
            await asyncio.sleep(args.interval)

    async def scheduler() -> None:
        deadline = time.monotonic() + args.changes * args.interval + 600
        while (pending or not producer.done()) and time.monotonic() < deadline:
            with outbox.collect() as box:
                async with h.runtime.db.session() as session:
                    await subscriptions.enqueue_changed(
                        session,
                        debounce=timedelta(seconds=args.debounce),
                        scheduler_interval=timedelta(seconds=args.tick),
                    )
            worker.send(box.messages)
            await worker.drain(h.runtime)
            for account_id, service, finished in worker.done_units:
                waiting = {k: v for k, v in pending.items() if v[:2] == (account_id, service)}
                if not waiting:
                    continue
                async with h.runtime.db.session() as session:
                    kinds = ["message"] if service == "mail" else ["file"]
                    have = await catalog.open_external_ids(session, account_id, service, kinds)
                for key, (_a, _s, t0) in waiting.items():
                    if key in have:
                        latencies.append(finished - t0)
                        del pending[key]
            worker.done_units.clear()
            await asyncio.sleep(args.tick)

    producer = asyncio.create_task(make_changes())
    await scheduler()
    await producer
    elapsed = time.monotonic() - started
    after = sim.counters()
    spent = graph_requests(before, after)
    continuous = sum(n for e, n in spent.items() if "/subscriptions" not in e)
    per_change = continuous / args.changes

    # The same changes with notifications off, backed up by one scheduled incremental.
    await h.set_policy(rpo_minutes=None)
    await sync_tenant(h.runtime, str(h.tenant.id))
    for n in range(args.changes):
        user = rng.choice(users)
        if n % 2 == 0:
            sim.add_message(sim.tenant().id, user.id, MIME.format(n=f"s{n}").encode())
        else:
            sim.add_file(sim.tenant().id, f"/Scheduled/n{n}.txt", user=user.id, data=b"x\n" * 20)
    before = sim.counters()
    with outbox.collect() as box:
        async with h.runtime.db.session() as session:
            tenant = await tenant_repository.get_system(session, h.tenant.id)
            assert tenant is not None
            await job_service.start_job(
                session,
                tenant,
                kind=JobKind.backup,
                trigger=JobTrigger.scheduled,
                requested_by="bench",
                params={"services": ["mail", "onedrive"]},
            )
    worker.send(box.messages)
    await worker.drain(h.runtime)
    worker.done_units.clear()
    scheduled = sum(graph_requests(before, sim.counters()).values()) / args.changes

    rpo = args.rpo_minutes * 60
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    table.add("subscriptions created", synced.created, "one per account and service", "")
    table.add("changes backed up", f"{len(latencies)}/{args.changes}", "all", _ok(not pending))
    table.add("latency p50 (s)", f"{p50:.1f}", "", "")
    table.add(
        "latency p95 (s)",
        f"{p95:.1f}",
        f"<= {rpo} (rpo_minutes={args.rpo_minutes})",
        _ok(p95 <= rpo),
    )
    table.add("latency max (s)", f"{max(latencies):.1f}", "", "")
    table.add("changes/s offered", f"{args.changes / elapsed:.2f}", "", "")
    table.add("Graph requests per change, continuous", f"{per_change:.2f}", "", "")
    table.add("Graph requests per change, scheduled incremental", f"{scheduled:.2f}", "", "")
    ratio = per_change / scheduled if scheduled else float("inf")
    table.add(
        "ratio continuous / incremental",
        f"{ratio:.2f}",
        f"<= {LATENCY_SHARE_TARGET}",
        _ok(ratio <= LATENCY_SHARE_TARGET),
    )


def sha(drive: Drive) -> dict[str, str]:
    out = {}
    for item in drive.items.values():
        if item.deleted or item.is_folder or item.parent_id is None or item.content is None:
            continue
        digest = hashlib.sha256()
        for block in item.content.iter_range(0, item.content.size):
            digest.update(block)
        out[drive.path_of(item)] = digest.hexdigest()
    return out


async def part_two(h: EngineHarness, args: argparse.Namespace, table: Table) -> None:
    sim = h.sim
    tid = sim.tenant().id
    user = sorted((u for u in sim.tenant().users.values() if u.drive_id), key=lambda u: u.upn)[-1]
    account = await h.account(user.id)
    rng = random.Random(7)
    for n in range(args.files):
        text = f"Document {n}: plans, minutes and figures for the team.\n" * rng.randint(20, 200)
        sim.add_file(tid, f"/Work/doc-{n}.txt", user=user.id, data=text.encode())
    await h.backup(account, "onedrive")
    drive = sim.tenant().drives[user.drive_id or ""]

    def live_files() -> list[str]:
        return sorted(
            i.id for i in drive.items.values() if not i.deleted and not i.is_folder and i.parent_id
        )

    runs = 0
    for day in range(7):
        for _ in range(3):  # three incrementals a day
            files = live_files()
            for item_id in rng.sample(files, min(len(files), rng.randint(3, 12))):
                sim.edit_item(tid, item_id)  # a line appended, as an editor saves
            for k in range(rng.randint(0, 3)):
                sim.add_file(
                    tid, f"/Work/new-{day}-{runs}-{k}.txt", user=user.id, data=b"draft\n" * 50
                )
            if rng.random() < 0.5:  # a compressed upload: high entropy is its normal
                sim.add_file(
                    tid, f"/Photos/p-{day}-{runs}.zip", user=user.id, data=os.urandom(20_000)
                )
            if rng.random() < 0.3:
                victim = rng.choice(live_files())
                sim.edit_item(tid, victim, {"name": f"renamed-{day}-{runs}.txt"})
            for item_id in rng.sample(live_files(), rng.randint(0, 2)):
                sim.delete_item(tid, item_id)
            await h.backup(account, "onedrive")
            runs += 1
    async with h.runtime.db.session() as session:
        quiet = list(
            (
                await session.execute(select(Detection).where(Detection.account_id == account.id))
            ).scalars()
        )
    clean = sha(drive)
    t0 = time.monotonic()
    hit = sim.ransomware(tid, user.id, args.encrypt)
    await h.backup(account, "onedrive")
    seconds = time.monotonic() - t0
    async with h.runtime.db.session() as session:
        raised = list(
            (
                await session.execute(select(Detection).where(Detection.account_id == account.id))
            ).scalars()
        )
    restored = False
    if raised:
        with outbox.collect():
            async with h.runtime.db.session() as session:
                job = await recovery.request_clean_restore(
                    session, system_principal(h.msp.id), h.tenant.id, raised[0].id
                )
        await run_restore_job(h.runtime, str(job.id))
        now = sha(drive)
        restored = all(now.get(path) == digest for path, digest in clean.items())
    table.add("ordinary incrementals (7 days x 3)", runs, "", "")
    table.add("false alarms over the week", len(quiet), "0", _ok(not quiet))
    table.add("files encrypted by the attack", len(hit), "", "")
    table.add("detections after one incremental", len(raised), "1", _ok(len(raised) == 1))
    table.add("attack to detection (s)", f"{seconds:.1f}", "one incremental", "")
    table.add(
        "one-call restore: clean files back", "yes" if restored else "no", "yes", _ok(restored)
    )


def _ok(good: bool) -> str:
    return "ok" if good else "MISSED"


async def main(args: argparse.Namespace) -> None:
    safekeep_logging.configure("WARNING", json=True)
    with (
        scratch_directory("bench-continuous-") as work,
        ExitStack() as made,
        Simulator(
            state_dir=work / "graphsim",
            seed=15,
            users=args.users,
            messages=10,
            files=8,
            sites=0,
            consented=True,
        ) as sim,
    ):
        shim = SimShim(sim.base_url, str(sim.ca_path))
        settings = made.enter_context(
            column_settings(args.column, work / "data", shim)  # type: ignore[arg-type]
        )
        settings = settings.model_copy(
            update={"detection_min_files": 5, "detection_min_deletions": 25}
        )
        await asyncio.to_thread(upgrade, settings.resolved_database_url)
        worker = Worker()
        runtime = Runtime.build(settings, send=worker.send)
        with live_api(settings) as api:
            runtime.settings = settings.model_copy(update={"notification_base_url": api})
            try:
                h = await connect(runtime, sim)
                one = Table(["continuous protection", "figure", "target", ""])
                await part_one(h, worker, args, one)
                print(one.render())
                two = Table(["ransomware detection", "figure", "target", ""])
                await part_two(h, args, two)
                print(two.render())
            finally:
                await runtime.close()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--column", choices=["seaweedfs", "embedded"], default="seaweedfs")
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between changes")
    parser.add_argument(
        "--debounce", type=float, default=30.0, help="seconds (the setting's default)"
    )
    parser.add_argument("--tick", type=float, default=5.0, help="scheduler interval, seconds")
    parser.add_argument("--rpo-minutes", type=int, default=5)
    parser.add_argument("--files", type=int, default=40, help="files in the attacked OneDrive")
    parser.add_argument("--encrypt", type=int, default=15, help="files the attack encrypts")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
