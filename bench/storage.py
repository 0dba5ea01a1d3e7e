"""Storage benchmark: write/read MB/s, peak RSS and stored vs logical bytes.

Workloads, each on the local store and on S3 (SeaweedFS, endpoint from
``SAFEKEEP_TEST_S3_ENDPOINT_URL``; skipped when unset):

* small: 5,000 mail-like items of 2-50 KB (text from a vocabulary, so they compress like
  mail), stored with ``put_bytes`` from 32 concurrent tasks;
* large: a 1 GiB file generated piece by piece (random bytes: neither compression nor dedup
  helps, the worst case), stored with ``put_stream`` and never held in memory.

Each is written twice, as two backups would: "unique" into an empty tenant, then "duplicate"
(the same content again from a fresh repository instance, so dedup goes through HEAD
requests, not the in-memory cache), then read back in full. Peak RSS is reset before each
step (``/proc/self/clear_refs``) and every store/workload pair runs in a process of its own,
so each figure is that step's own. The time to generate
the large stream is measured alone and printed, since it is part of the write figure.

Run by hand (takes a few minutes):

    eval "$(scripts/services env)"
    .venv/bin/python -m bench.storage [--small 5000] [--large-mib 1024] [--no-s3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bench.scratch import scratch_directory
from safekeep.storage import BlobStore, ContentRef, TenantRepository, open_blobstore
from safekeep.storage.repository import PutStats

MiB = 1024 * 1024
PIECE = MiB
WORDS = " ".join(
    [
        "the of and to in is you that it he was for on are as with his they at be this have",
        "from or one had by word but not what all were we when your can said there use an each",
        "which she do how their if will up other about out many then them these so some her",
        "would make like him into time has look two more write go see number no way could",
        "people my than first water been call who oil its now find long down day did get come",
        "made may part invoice quarterly meeting contract regards please attached budget review",
    ]
).split()


def reset_peak_rss() -> bool:
    """Linux lets a process reset its own high-water mark: ``5`` into clear_refs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mail_items(count: int, seed: int = 1) -> list[bytes]:
    rnd = random.Random(seed)
    items = []
    for i in range(count):
        size = rnd.randint(2_000, 50_000)
        header = f"Message-ID: <{i}.{seed}@bench>\r\nSubject: item {i}\r\n\r\n".encode()
        words: list[str] = []
        length = len(header)
        while length < size:
            w = rnd.choice(WORDS)
            words.append(w)
            length += len(w) + 1
        items.append((header + " ".join(words).encode())[:size])
    return items


async def generated(total: int, seed: int = 2) -> AsyncIterator[bytes]:
    """An AES-CTR keystream: incompressible, never repeating, and cheap to make."""
    key = seed.to_bytes(32, "big")
    encryptor = Cipher(algorithms.AES(key), modes.CTR(b"\x00" * 16)).encryptor()
    zeros = bytes(PIECE)
    for _ in range(total // PIECE):
        yield encryptor.update(zeros)


@dataclass
class Row:
    store: str
    workload: str
    step: str
    logical: int
    seconds: float
    peak_rss: float
    new_chunks: int = 0
    deduped: int = 0
    stored: int = 0

    @classmethod
    def written(
        cls,
        store: str,
        workload: str,
        step: str,
        logical: int,
        seconds: float,
        rss: float,
        stats: PutStats,
    ) -> Row:
        """A write step's row: what the repository's counters say it stored and deduplicated."""
        return cls(
            store,
            workload,
            step,
            logical,
            seconds,
            rss,
            stats.new_chunks,
            stats.deduped_chunks,
            stats.new_stored_bytes,
        )

    def print(self) -> None:
        mbps = self.logical / MiB / self.seconds if self.seconds else float("inf")
        ratio = (
            f"{self.stored / self.logical:6.3f}"
            if self.logical and self.step != "read"
            else "     -"
        )
        print(
            f"{self.store:6} {self.workload:6} {self.step:9} {self.logical / MiB:9.1f} "
            f"{self.seconds:8.2f} {mbps:9.1f} {self.peak_rss:9.1f} {self.new_chunks:8} "
            f"{self.deduped:8} {self.stored / MiB:10.1f} {ratio}",
            flush=True,
        )


async def timed(step: Callable[[], Awaitable[object]]) -> tuple[float, float, object]:
    reset_peak_rss()
    start = time.perf_counter()
    result = await step()
    return time.perf_counter() - start, peak_rss_mib(), result


async def bench_small(store: BlobStore, name: str, count: int) -> None:
    items = mail_items(count)
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    key = os.urandom(32)
    logical = sum(map(len, items))
    refs: list[ContentRef] = []

    async def write(repo: TenantRepository) -> None:
        sem = asyncio.Semaphore(32)

        async def one(data: bytes) -> ContentRef:
            async with sem:
                return await repo.put_bytes(data)

        refs[:] = await asyncio.gather(*(one(d) for d in items))

    for step in ("unique", "duplicate"):
        repo = TenantRepository(store, tenant_id=tenant, data_key=key)
        seconds, rss, _ = await timed(lambda repo=repo: write(repo))  # type: ignore[misc]
        Row.written(name, "small", step, logical, seconds, rss, repo.stats).print()

    reader = TenantRepository(store, tenant_id=tenant, data_key=key)

    async def read_all() -> None:
        sem = asyncio.Semaphore(32)

        async def one(ref: ContentRef) -> None:
            async with sem:
                await reader.read_bytes(ref)

        await asyncio.gather(*(one(r) for r in refs))

    seconds, rss, _ = await timed(read_all)
    Row(name, "small", "read", logical, seconds, rss).print()


async def bench_large(store: BlobStore, name: str, total: int) -> None:
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    key = os.urandom(32)
    ref: ContentRef | None = None
    for step in ("unique", "duplicate"):
        repo = TenantRepository(store, tenant_id=tenant, data_key=key)
        seconds, rss, result = await timed(lambda repo=repo: repo.put_stream(generated(total)))  # type: ignore[misc]
        assert isinstance(result, ContentRef)
        ref = result
        Row.written(name, "large", step, total, seconds, rss, repo.stats).print()
    assert ref is not None
    reader = TenantRepository(store, tenant_id=tenant, data_key=key)

    async def read_all() -> int:
        n = 0
        async for piece in reader.read(ref):
            n += len(piece)
        return n

    seconds, rss, n = await timed(read_all)
    assert n == total
    Row(name, "large", "read", total, seconds, rss).print()


async def run_child(url: str, workload: str, args: argparse.Namespace) -> None:
    """One store and one workload in a process of its own, so peak RSS is that workload's."""
    name = "local" if url.startswith("file:") else "s3"
    store = open_blobstore(url, s3_endpoint_url=os.environ.get("SAFEKEEP_TEST_S3_ENDPOINT_URL"))
    await store.open()
    try:
        if workload == "small":
            await bench_small(store, name, args.small)
        else:
            await bench_large(store, name, args.large_mib * MiB)
    finally:
        await store.close()


def spawn(url: str, args: argparse.Namespace) -> None:
    for workload in ("small", "large"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.storage",
                "--small",
                str(args.small),
                "--large-mib",
                str(args.large_mib),
                "--child",
                url,
                workload,
            ],
            check=True,
        )


def empty_and_delete(client: Any, bucket: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objs:
            client.delete_objects(Bucket=bucket, Delete={"Objects": objs})
    client.delete_bucket(Bucket=bucket)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--large-mib", type=int, default=1024)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("URL", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(run_child(args.child[0], args.child[1], args))
        return

    async def generate_only() -> float:
        start = time.perf_counter()
        async for _ in generated(args.large_mib * MiB):
            pass
        return time.perf_counter() - start

    gen_seconds = asyncio.run(generate_only())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(
        f"generating the {args.large_mib} MiB stream alone: {gen_seconds:.2f} s "
        f"({args.large_mib / gen_seconds:.0f} MB/s), included in its write figures"
    )
    print(
        f"{'store':6} {'load':6} {'step':9} {'MiB':>9} {'seconds':>8} {'MiB/s':>9} "
        f"{'peakRSS':>9} {'new':>8} {'dedup':>8} {'storedMiB':>10} {'stored/logical'}",
        flush=True,
    )
    with scratch_directory("sk-bench-") as tmp:
        spawn(tmp.as_uri(), args)

    endpoint = os.environ.get("SAFEKEEP_TEST_S3_ENDPOINT_URL")
    if args.no_s3 or not endpoint:
        print("S3: skipped (set SAFEKEEP_TEST_S3_ENDPOINT_URL)")
        return
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    bucket = f"sk-bench-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    try:
        spawn(f"s3://{bucket}/bench", args)
    finally:
        empty_and_delete(client, bucket)  # leave nothing behind on a shared server


if __name__ == "__main__":
    main()
