"""Shared pieces of the benchmarks: graphsim in its own process, a Safekeep stack on one of
the two columns, resource sampling and table printing."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import resource
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from safekeep.settings import Settings
from safekeep.tenants.outbox import Message


@dataclass
class Graphsim:
    process: subprocess.Popen[str]
    base_url: str
    ca_path: str
    tenants: list[dict[str, Any]]

    def http(self) -> httpx.Client:
        import ssl

        return httpx.Client(
            base_url=self.base_url,
            verify=ssl.create_default_context(cafile=self.ca_path),
            timeout=120,
        )

    def counters(self) -> dict[str, Any]:
        with self.http() as client:
            counters: dict[str, Any] = client.get("/_sim/counters").json()
            return counters

    def reset_counters(self) -> None:
        """Zero the counters: a new window for the per-mailbox in-flight figures too."""
        with self.http() as client:
            client.post("/_sim/counters/reset").raise_for_status()

    def cpu_seconds(self) -> float:
        """CPU time graphsim's process has used (to tell our cost from the simulator's)."""
        return process_stat(self.process.pid)[2]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


IN_FLIGHT_TARGET = 3.6  # issue 17: Microsoft allows 4 Outlook requests in flight per mailbox


def in_flight_line(column: str, label: str, counters: dict[str, Any]) -> str:
    """The time-weighted mean of Outlook requests in flight per mailbox while it had work
    (from its first request's start to its last one's end in the counters' window),
    weighted across mailboxes by that span, beside the target; also the lowest mailbox, the
    one with the most requests, and how the spans divide by the number in flight (time
    with nothing in flight is the worker not asking; time at 1-3, partly used slots)."""
    from graphsim.inflight import level_shares, time_weighted_mean

    per_mailbox: dict[str, Any] = counters.get("in_flight") or {}
    mean = time_weighted_mean(per_mailbox)
    if mean is None:
        return f"[{column}] {label}: no Outlook requests, no in-flight figure"
    means = [m["mean"] for m in per_mailbox.values() if m["mean"] is not None]
    busiest = max(per_mailbox.values(), key=lambda m: int(m["requests"]))
    levels = level_shares(per_mailbox)
    shares = " / ".join(f"{levels.get(n, 0.0):.0%}" for n in range(5))
    return (
        f"[{column}] {label}: in-flight requests per mailbox (time-weighted mean) {mean:.2f}"
        f" (target >= {IN_FLIGHT_TARGET}) over {len(per_mailbox)} mailboxes; lowest"
        f" {min(means):.2f}, busiest mailbox ({busiest['requests']} requests)"
        f" {busiest['mean'] or 0:.2f}, peak {max(int(m['peak']) for m in per_mailbox.values())};"
        f" share of the spans at 0, 1, 2, 3, 4 in flight: {shares}"
    )


def start_graphsim(state: Path, **options: Any) -> Graphsim:
    """graphsim in a process of its own, so that CPU and memory figures are Safekeep's."""
    args = [sys.executable, "-m", "graphsim", "--port", "0", "--state", str(state), "--consented"]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value not in (None, False):
            args += [flag, str(value)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    info = json.loads(line)
    return Graphsim(proc, info["base_url"], info["ca"], info["tenants"])


@contextmanager
def column_settings(column: str, data_dir: Path, sim: Graphsim) -> Iterator[Settings]:
    """``embedded``: SQLite + local folder + FTS5. ``seaweedfs``: PostgreSQL + SeaweedFS S3 +
    OpenSearch from ``scripts/services`` (run ``eval "$(scripts/services env)"`` first): a
    database, a bucket and an index prefix of the run's own, removed on the way out, so that
    runs against the same services do not pile up (the large tenant stores 2 GB)."""
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "login_url": sim.base_url,
        "graph_url": sim.base_url,
        "ca_bundle": Path(sim.ca_path),
        "log_level": "WARNING",
        "log_json": True,
    }
    if column == "embedded":
        yield Settings(**base)
        return
    import boto3
    from sqlalchemy.engine import make_url

    from tests.fixtures.services import create_database, delete_bucket, drop_database

    admin = os.environ["SAFEKEEP_TEST_POSTGRES_URL"]
    name = f"bench_{uuid.uuid4().hex[:8]}"
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    search_url = os.environ["SAFEKEEP_TEST_OPENSEARCH_URL"]
    s3 = boto3.client("s3", endpoint_url=os.environ["SAFEKEEP_TEST_S3_ENDPOINT_URL"])
    url = create_database(admin, name)
    try:
        s3.create_bucket(Bucket=bucket)
        try:
            yield Settings(
                **base,
                database_url=make_url(url)
                .set(drivername="postgresql+psycopg")
                .render_as_string(hide_password=False),
                blobstore_url=f"s3://{bucket}/safekeep",
                s3_endpoint_url=os.environ["SAFEKEEP_TEST_S3_ENDPOINT_URL"],
                search_url=search_url,
                search_index_prefix=prefix,
            )
        finally:
            delete_bucket(s3, bucket)
            delete_search_prefix(search_url, prefix)
    finally:
        drop_database(admin, name)


def delete_search_prefix(url: str, prefix: str) -> None:
    """Delete the indices, aliases and templates a run made in OpenSearch under ``prefix``."""
    from opensearchpy import OpenSearch

    from tests.fixtures.services import delete_prefixed

    search = OpenSearch(hosts=[url], timeout=60)
    try:
        delete_prefixed(search, prefix)
    finally:
        search.close()


@dataclass
class Usage:
    wall: float = 0.0
    cpu: float = 0.0
    peak_rss_mb: float = 0.0


def _rss_mb(field: str = "VmRSS", pid: int | None = None) -> float:
    with open(f"/proc/{pid or 'self'}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak_rss(pid: int | None = None) -> bool:
    """Start the kernel's high-water mark of resident memory (VmHWM) again from now (Linux
    4.0+: ``echo 5 > /proc/<pid>/clear_refs``, allowed for our own children), so that a run's
    peak includes spikes shorter than the sampling interval and excludes what came before."""
    try:
        with open(f"/proc/{pid or 'self'}/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _cpu_seconds(pid: int | None) -> float:
    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    return process_stat(pid)[2]


@contextmanager
def measure(pid: int | None = None) -> Iterator[Usage]:
    """Wall time, CPU seconds of a process (this one, or ``pid``: a worker of our own) and its
    peak resident memory while inside (the kernel's high-water mark, reset on entry; sampled
    every 50 ms where it cannot be reset)."""
    usage = Usage()
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            usage.peak_rss_mb = max(usage.peak_rss_mb, _rss_mb(pid=pid))

    exact = _reset_peak_rss(pid)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    cpu0 = _cpu_seconds(pid)
    t0 = time.perf_counter()
    try:
        yield usage
    finally:
        usage.wall = time.perf_counter() - t0
        usage.cpu = _cpu_seconds(pid) - cpu0
        stop.set()
        thread.join()
        usage.peak_rss_mb = max(
            usage.peak_rss_mb, _rss_mb(pid=pid), _rss_mb("VmHWM", pid) if exact else 0
        )


class WorkerProcess:
    """A worker in a process of its own (``bench.worker``: what ``safekeep worker`` runs),
    so that the CPU and memory measured are the worker's, not the benchmark's own (its API
    calls, polling, and modules a worker does not import). ``send`` forwards queue messages
    to it, as ``safekeep serve`` forwards them to its worker child: the embedded queue lives
    in the worker's process. Not serve's ``Background`` itself: its spawned child imports
    ``safekeep.serve`` (uvicorn, the API app) and the bench's main module, and runs the
    scheduler, all of which the figures would then count again."""

    def __init__(self, settings: Settings, *, threads: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", "--threads", str(threads)],
            stdin=subprocess.PIPE,
        )
        self._write(settings)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _write(self, value: Any) -> None:
        assert self.process.stdin is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"bench worker exited with {self.process.returncode}")
        pickle.dump(value, self.process.stdin)
        self.process.stdin.flush()

    def send(self, messages: Sequence[Message]) -> None:
        if messages:
            self._write(list(messages))

    def stop(self, timeout: float = 60.0) -> None:
        assert self.process.stdin is not None
        try:
            self._write(None)
            self.process.stdin.close()
        except (OSError, RuntimeError):
            pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def process_stat(pid: int) -> tuple[str, int, float]:
    """A process's command, parent pid and CPU seconds so far (user + system), from
    ``/proc/<pid>/stat``; OSError once it has ended."""
    head, _, rest = Path(f"/proc/{pid}/stat").read_text().rpartition(")")
    fields = rest.split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return head.partition("(")[2], int(fields[1]), cpu


def _process_cpu() -> dict[int, tuple[str, int, float]]:
    """``process_stat`` of every process now running, by pid."""
    out: dict[int, tuple[str, int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            out[int(entry.name)] = process_stat(int(entry.name))
        except OSError:
            continue  # ended meanwhile
    return out


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (every core, kernel work included)."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class MachineCPU:
    """Where a machine's cores went while inside: CPU seconds by process group, from
    ``/proc`` at both ends. ``groups`` maps a label to a test on (pid, command, parent pid);
    the first that matches takes the process, the rest is "other". A process that both began
    and ended inside is only in the machine's total (short-lived ones are rare here)."""

    def __init__(self, groups: dict[str, Callable[[int, str, int], bool]]) -> None:
        self.groups = groups
        self.seconds: dict[str, float] = {}
        self.machine = 0.0
        self.wall = 0.0

    def __enter__(self) -> MachineCPU:
        self._before = _process_cpu()
        self._busy = _machine_busy()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *_exc: object) -> None:
        after = _process_cpu()
        self.wall = time.perf_counter() - self._started
        self.machine = _machine_busy() - self._busy
        seconds = {label: 0.0 for label in self.groups}
        seconds["other"] = 0.0
        for pid, (command, parent, cpu) in after.items():
            used = cpu - self._before[pid][2] if pid in self._before else cpu
            label = next(
                (name for name, test in self.groups.items() if test(pid, command, parent)),
                "other",
            )
            seconds[label] += used
        self.seconds = seconds

    def cores(self, label: str) -> float:
        return self.seconds.get(label, 0.0) / max(self.wall, 1e-9)

    @property
    def busy_cores(self) -> float:
        return self.machine / max(self.wall, 1e-9)

    def line(self) -> str:
        """ "API 0.88, OpenSearch 0.45, ..., machine 1.71 of 2 cores"."""
        parts = [f"{label} {self.cores(label):.2f}" for label in self.seconds]
        return f"{', '.join(parts)}; machine {self.busy_cores:.2f} of {os.cpu_count()} cores"


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *values: Any) -> None:
        self.rows.append([str(v) for v in values])

    def report(self, *values: Any) -> None:
        """Add a row and print it at once: a long bench shows each figure as it is measured."""
        self.add(*values)
        print(self.rows[-1], flush=True)

    def render(self) -> str:
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.columns)]
        lines = [
            "| " + " | ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True)) + " |"
        ]
        lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for row in self.rows:
            lines.append(
                "| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |"
            )
        return "\n".join(lines)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


SERVICES = ["mail", "calendar", "contacts", "onedrive"]


def add_tenant_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulated tenant and the run's shape, shared by the backup and restore benches."""
    parser.add_argument("--column", action="append", choices=["embedded", "seaweedfs"])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--messages", type=int, default=2000, help="per tenant")
    parser.add_argument("--files", type=int, default=400, help="per tenant")
    parser.add_argument("--events", type=int, default=400, help="per tenant")
    parser.add_argument("--contacts", type=int, default=400, help="per tenant")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--services", default=",".join(SERVICES))


def start_tenant_graphsim(root: Path, args: argparse.Namespace) -> Graphsim:
    """graphsim seeded with the tenant arguments, throttling like Microsoft; a bench without
    ``--latency-ms`` (the throttling one sets it in its SCENARIO) starts it without any."""
    return start_graphsim(
        root / "graphsim",
        users=args.users,
        messages=args.messages,
        files=args.files,
        events=args.events,
        contacts=args.contacts,
        sites=0,
        latency_ms=getattr(args, "latency_ms", None),
        throttling="microsoft",
        seed=args.seed,
    )


def describe(args: argparse.Namespace, started: float) -> str:
    return (
        f"{args.users} users, {args.messages} messages, {args.files} files, {args.events} events, "
        f"{args.contacts} contacts; latency {args.latency_ms} ms; Microsoft throttling; "
        f"{args.workers} worker threads; {time.strftime('%Y-%m-%d')}; "
        f"total {time.perf_counter() - started:.0f} s"
    )
