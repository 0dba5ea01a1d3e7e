"""Throttling benchmark (issue 17: adaptive limits and Retry-After).

A tenant whose real limits are far below Microsoft's documented ones: graphsim allows 1
concurrent request per mailbox (Microsoft documents 4), 120 SharePoint/OneDrive resource
units a minute, answers 10% of requests 503 with a Retry-After, and takes 150 +- 75 ms per
request. Two worker processes (Dramatiq on Redis, the Graph limiter shared through the same
Redis, PostgreSQL, SeaweedFS S3, OpenSearch) run a full backup and, after 1% of the items
are edited, an incremental, through the real job path. Prints, beside their targets:

* share of Graph requests answered 429 (requests inside ``$batch`` count one each, the
  envelopes none; downloads and tokens are not Graph requests): target <= 10%;
* Retry-After violations: requests that reached graphsim for a mailbox (or the tenant's
  SharePoint) while a Retry-After it had sent was still running, as graphsim counts them
  (it forgives those arriving within its grace period after the 429, which were in
  flight before the client could know): target 0.

``--check`` exits non-zero when a target is missed. Needs the shared services:

    eval "$(scripts/services env)"
    .venv/bin/python -m bench.throttling [--check] [--workers 2] [--threads 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

from bench.backup import Connected, backup, connect, edit_one_percent
from bench.common import (
    Graphsim,
    Table,
    column_settings,
    start_tenant_graphsim,
)
from bench.scratch import scratch_directory
from safekeep import logging as safekeep_logging
from safekeep.migrate import upgrade
from safekeep.settings import Settings
from safekeep.workers import broker
from tests.fixtures.live import settings_env
from tests.fixtures.services import redis_test_database

ROOT = Path(__file__).resolve().parents[1]
SHARE_429_TARGET = 0.10
VIOLATIONS_TARGET = 0
# The tenant's real limits in this scenario (issue 17's "heavy throttling").
SCENARIO: dict[str, Any] = {
    "mode": "custom",
    "mailbox_concurrency": 1,
    "sharepoint_units_per_minute": 120,
    "error_rate": 0.10,
    "latency_ms": 75.0,
    "latency_jitter_ms": 150.0,  # uniform 75..225 ms: 150 +- 75
}


def graph_figures(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Graph operations and their 429s between two graphsim counter snapshots."""

    def grew(key: str, sub: str | None = None) -> int:
        if sub is None:
            return int(after[key]) - int(before[key])
        return int(after[key].get(sub, 0)) - int(before[key].get(sub, 0))

    return {
        "requests": grew("by_kind", "graph") + grew("batch_requests"),
        "throttled": grew("by_status", "429") + grew("batch_by_status", "429"),
        "injected_5xx": grew("injected_errors"),
        "violations": grew("retry_after_violations"),
    }


def start_workers(settings: Settings, count: int, threads: int, logs: Path) -> list[Any]:
    workers = []
    for n in range(count):
        log = (logs / f"worker-{n}.log").open("wb")
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "safekeep.cli", "worker", "--threads", str(threads)],
                env=settings_env(settings),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return workers


def stop_workers(workers: list[Any]) -> None:
    for proc in workers:
        if proc.poll() is None:
            proc.terminate()
    for proc in workers:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run(args: argparse.Namespace, redis_url: str, table: Table) -> list[dict[str, int]]:
    with scratch_directory("bench-throttling-") as root, ExitStack() as made:
        sim: Graphsim = start_tenant_graphsim(root, args)
        workers: list[Any] = []
        try:
            settings = made.enter_context(
                column_settings("seaweedfs", root / "data", sim)
            ).model_copy(update={"broker_url": redis_url})
            upgrade(settings.resolved_database_url)
            broker.configure(settings)
            workers = start_workers(settings, args.workers, args.threads, root)
            tenant: Connected = asyncio.run(
                connect(settings, sim, args.services.split(","), broker.send_messages)
            )
            with sim.http() as client:
                client.put("/_sim/throttling", json=SCENARIO).raise_for_status()
            runs = []
            for label in ("full", "incremental"):
                if label == "incremental":
                    edited = asyncio.run(edit_one_percent(settings, sim, args.seed))
                    print(f"edited {edited} items (1%)", flush=True)
                before = sim.counters()
                started = time.perf_counter()
                result = asyncio.run(backup(settings, tenant, None, broker.send_messages))
                wall = time.perf_counter() - started
                figures = graph_figures(before, sim.counters())
                runs.append(figures)
                share = figures["throttled"] / max(1, figures["requests"])
                table.report(
                    label,
                    result["items"],
                    str(result["status"]).rsplit(".", 1)[-1],
                    figures["requests"],
                    figures["throttled"],
                    f"{share:.1%}",
                    figures["injected_5xx"],
                    figures["violations"],
                    f"{wall:.0f}",
                )
            return runs
        finally:
            stop_workers(workers)
            sim.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--messages", type=int, default=600, help="per tenant")
    parser.add_argument("--files", type=int, default=80, help="per tenant")
    parser.add_argument("--events", type=int, default=160, help="per tenant")
    parser.add_argument("--contacts", type=int, default=160, help="per tenant")
    parser.add_argument("--services", default="mail,calendar,contacts,onedrive")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    safekeep_logging.configure("WARNING")
    server = os.environ["SAFEKEEP_TEST_REDIS_URL"].rstrip("/")
    with redis.Redis.from_url(server) as admin:
        databases = int(admin.config_get("databases")["databases"])
    columns = ["run", "items", "status", "Graph requests", "429s", "429 share", "5xx"]
    table = Table([*columns, "RA violations", "wall s"])
    started = time.perf_counter()
    with redis_test_database(server, databases) as redis_url:
        runs = run(args, redis_url, table)
    requests = sum(r["requests"] for r in runs)
    throttled = sum(r["throttled"] for r in runs)
    violations = sum(r["violations"] for r in runs)
    share = throttled / max(1, requests)
    print()
    print(
        f"{args.users} users, {args.messages} messages, {args.files} files, {args.events} events,"
        f" {args.contacts} contacts; graphsim: {SCENARIO}; {args.workers} worker processes x"
        f" {args.threads} threads; {time.strftime('%Y-%m-%d')};"
        f" total {time.perf_counter() - started:.0f} s"
    )
    print(table.render())
    print()
    share_ok = share <= SHARE_429_TARGET
    violations_ok = violations <= VIOLATIONS_TARGET
    print(
        f"share of requests answered 429: {share:.1%} ({throttled} of {requests})"
        f"  target <= {SHARE_429_TARGET:.0%}  {'ok' if share_ok else 'MISSED'}"
    )
    print(
        f"Retry-After violations: {violations}  target {VIOLATIONS_TARGET}"
        f"  {'ok' if violations_ok else 'MISSED'}"
    )
    if args.check and not (share_ok and violations_ok):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
