"""Restore memory is bounded (issue 6): back up one mailbox's contacts (or any service), then
restore the whole tenant while tracing Python's allocations, for several sizes. The peak
should stay flat as the item count grows: items are streamed from the catalog in pages and
restored a few at a time.

    .venv/bin/python -m bench.restore_memory --sizes 1000 5000
"""

from __future__ import annotations

import argparse
import asyncio
import time
import tracemalloc

from bench.common import Table, measure, start_graphsim
from bench.restore_export import backed_up, whole_tenant
from bench.scratch import scratch_directory
from safekeep import logging as safekeep_logging
from safekeep.tenants.models import JobKind


def run_size(size: int, args: argparse.Namespace, table: Table) -> None:
    with scratch_directory("bench-restore-memory-") as root:
        counts = {"messages": 0, "files": 0, "events": 0, "contacts": 0}
        counts[
            {"contacts": "contacts", "mail": "messages", "onedrive": "files", "calendar": "events"}[
                args.service
            ]
        ] = size
        sim = start_graphsim(
            root / "graphsim", users=1, sites=0, latency_ms=0, throttling="off", seed=3, **counts
        )
        try:
            with backed_up("embedded", root, sim, [args.service], 4) as (settings, tenant):
                tracemalloc.start()
                with measure() as usage:
                    result = asyncio.run(whole_tenant(settings, tenant.tenant_id, JobKind.restore))
                _current, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                totals = result["totals"]
                table.report(
                    args.service,
                    size,
                    totals["restored"],
                    f"{peak / 2**20:.1f}",
                    f"{usage.peak_rss_mb:.0f}",
                    f"{usage.wall:.1f}",
                    totals["failed"],
                )
        finally:
            sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument(
        "--service", default="contacts", choices=["contacts", "mail", "onedrive", "calendar"]
    )
    args = parser.parse_args()
    safekeep_logging.configure("WARNING")
    table = Table(
        [
            "service",
            "items in tenant",
            "restored",
            "traced peak MiB",
            "peak RSS MB",
            "wall s",
            "failed",
        ]
    )
    started = time.perf_counter()
    for size in args.sizes:
        run_size(size, args, table)
    total = time.perf_counter() - started
    print(f"\none user, graphsim without throttling or latency; total {total:.0f} s")
    print(table.render())


if __name__ == "__main__":
    main()
