"""Search benchmark: indexing throughput and query latency of both backends.

Indexes synthetic item documents (1,000,000 into OpenSearch and 200,000 into SQLite FTS5 by
default), then runs the same fixed mix of queries against each and prints indexing docs/s
and query p50/p95/p99. Run by hand, against a running OpenSearch:

    scripts/services start opensearch; eval "$(scripts/services env)"
    .venv/bin/python -m bench.search                       # full size
    .venv/bin/python -m bench.search --opensearch-docs 50000 --sqlite-docs 20000   # quick

The corpus is deterministic (seeded): 40 tenants of one MSP, 25 accounts each, mail mostly,
with bodies drawn from a Zipf-distributed vocabulary so that common words match many
documents and rare ones few, as in real mailboxes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from safekeep.search import SearchBackend, SearchDocument, SearchQuery, open_search_backend
from safekeep.search.opensearch import OpenSearchBackend

TENANTS = [f"tenant-{i:02d}" for i in range(40)]
ACCOUNTS_PER_TENANT = 25
COMPANIES = ["Contoso", "Fabrikam", "Northwind", "Tailspin", "Wingtip", "Litware", "Adatum"]
FIRST = ["Anna", "Bob", "Carol", "David", "Eva", "Farid", "Grace", "Hiro", "Ines", "Jonas"]
LAST = ["Lindqvist", "Okafor", "Müller", "Tanaka", "Dubois", "Novak", "García", "Smith"]
FOLDERS = ["/Inbox", "/Inbox/Projects", "/Inbox/Invoices", "/Sent Items", "/Archive/2025"]
SUBJECTS = ["Invoice", "Meeting notes", "Quarterly report", "Contract", "Re: budget", "Offer"]
START = datetime(2025, 1, 1, tzinfo=UTC)


def vocabulary(size: int, rng: random.Random) -> list[str]:
    words = {"invoice", "contract", "budget", "report", "meeting", "march", "delivery"}
    while len(words) < size:
        length = rng.randint(3, 10)
        words.add("".join(rng.choice(string.ascii_lowercase) for _ in range(length)))
    return sorted(words)


@dataclass
class Corpus:
    words: list[str]
    cum_weights: list[float]
    seed: int

    @classmethod
    def make(cls, seed: int = 7) -> Corpus:
        rng = random.Random(seed)
        words = vocabulary(20_000, rng)
        rng.shuffle(words)
        weights = [1.0 / (rank + 1) for rank in range(len(words))]
        return cls(words, list(itertools.accumulate(weights)), seed)

    def docs(self, count: int, *, offset: int = 0) -> Iterator[SearchDocument]:
        rng = random.Random(self.seed + offset)
        for n in range(offset, offset + count):
            tenant = TENANTS[n % len(TENANTS)]
            person = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            company = rng.choice(COMPANIES)
            address = f"{person.split()[0].lower()}@{company.lower()}.example"
            body_words = rng.choices(
                self.words, cum_weights=self.cum_weights, k=rng.randint(40, 250)
            )
            has_attachment = rng.random() < 0.25
            date = START + timedelta(minutes=n * 7 % (600 * 24 * 60))
            attachment = f"{rng.choice(SUBJECTS).lower().replace(' ', '-')}-{n}.pdf"
            attachment_words = rng.choices(self.words, cum_weights=self.cum_weights, k=120)
            yield SearchDocument(
                version_id=f"v{n:08d}",
                msp_id="msp-bench",
                tenant_id=tenant,
                account_id=f"{tenant}-acct-{n % ACCOUNTS_PER_TENANT:02d}",
                service="mail" if n % 5 else "onedrive",
                item_id=f"item-{n:08d}",
                folder_path=rng.choice(FOLDERS),
                kind="message" if n % 5 else "file",
                title=f"{rng.choice(SUBJECTS)} from {company} {' '.join(body_words[:3])}",
                valid_from=date,
                valid_to=None if n % 10 else date + timedelta(days=3),
                date=date,
                size=rng.randint(2_000, 8_000_000),
                sender=f"{person} <{address}>",
                recipients=[f"{rng.choice(FIRST)} <{rng.choice(FIRST).lower()}@msp.example>"],
                body=" ".join(body_words),
                attachment_names=[attachment] if has_attachment else [],
                attachment_text=" ".join(attachment_words) if has_attachment else "",
                has_attachments=has_attachment,
                file_type="pdf" if has_attachment else None,
            )


def query_mix(corpus: Corpus, seed: int = 11) -> list[tuple[str, SearchQuery]]:
    """A fixed list of (kind, query): technicians in one tenant, and admins across all."""
    rng = random.Random(seed)
    common = corpus.words[:50]
    middle = corpus.words[200:2_000]
    rare = corpus.words[5_000:15_000]
    one = frozenset({TENANTS[0]})
    every = frozenset(TENANTS)
    mix: list[tuple[str, SearchQuery]] = []
    for _ in range(20):
        t = frozenset({rng.choice(TENANTS)})
        mix += [
            ("word, 1 tenant", SearchQuery(tenant_ids=t, text=rng.choice(middle))),
            ("common word, 1 tenant", SearchQuery(tenant_ids=t, text=rng.choice(common))),
            (
                "2 words, 1 tenant",
                SearchQuery(tenant_ids=t, text=f"{rng.choice(middle)} {rng.choice(common)}"),
            ),
            (
                "phrase, 1 tenant",
                SearchQuery(tenant_ids=t, text=f'"{rng.choice(common)} {rng.choice(common)}"'),
            ),
            ("prefix, 1 tenant", SearchQuery(tenant_ids=t, text=rng.choice(middle)[:4] + "*")),
            (
                "invoice from contoso in march",
                SearchQuery(
                    tenant_ids=t,
                    text="invoice",
                    sender="contoso",
                    date_from=datetime(2025, 3, 1, tzinfo=UTC),
                    date_to=datetime(2025, 3, 31, 23, 59, tzinfo=UTC),
                ),
            ),
            (
                "filters only, by date",
                SearchQuery(tenant_ids=t, folder="/Inbox", has_attachments=True, sort="date_desc"),
            ),
            ("rare word, all tenants", SearchQuery(tenant_ids=every, text=rng.choice(rare))),
            ("word, all tenants", SearchQuery(tenant_ids=every, text=rng.choice(middle))),
            (
                "word at a point in time",
                SearchQuery(
                    tenant_ids=one,
                    text=rng.choice(middle),
                    at=START + timedelta(days=rng.randint(30, 300)),
                ),
            ),
        ]
    return mix


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Result:
    backend: str
    docs: int
    seconds: float
    latencies: dict[str, list[float]]

    @property
    def all_latencies(self) -> list[float]:
        return [v for values in self.latencies.values() for v in values]


async def load(
    backend: SearchBackend,
    corpus: Corpus,
    count: int,
    *,
    batch: int,
    concurrency: int,
    progress: Callable[[int], None],
) -> float:
    queue: asyncio.Queue[list[SearchDocument] | None] = asyncio.Queue(maxsize=concurrency * 2)
    done = 0

    async def producer() -> None:
        chunk: list[SearchDocument] = []
        for document in corpus.docs(count):
            chunk.append(document)
            if len(chunk) == batch:
                await queue.put(chunk)
                chunk = []
        if chunk:
            await queue.put(chunk)
        for _ in range(concurrency):
            await queue.put(None)

    async def consumer() -> None:
        nonlocal done
        while (chunk := await queue.get()) is not None:
            await backend.index(chunk)
            done += len(chunk)
            progress(done)

    started = time.perf_counter()
    await asyncio.gather(producer(), *(consumer() for _ in range(concurrency)))
    return time.perf_counter() - started


async def run_queries(
    backend: SearchBackend, mix: list[tuple[str, SearchQuery]], rounds: int
) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {}
    for _kind, query in mix[:10]:  # warm caches once
        await backend.search(query)
    for _ in range(rounds):
        for kind, query in mix:
            started = time.perf_counter()
            page = await backend.search(query)
            elapsed = time.perf_counter() - started
            latencies.setdefault(kind, []).append(elapsed * 1000)
            if page.next_cursor is not None and kind == "word, all tenants":
                started = time.perf_counter()
                await backend.search(query.model_copy(update={"cursor": page.next_cursor}))
                elapsed = time.perf_counter() - started
                latencies.setdefault("next page (cursor)", []).append(elapsed * 1000)
    return latencies


def progress_printer(total: int, label: str) -> Callable[[int], None]:
    state = {"last": 0.0, "start": time.perf_counter()}

    def report(done: int) -> None:
        now = time.perf_counter()
        if now - state["last"] >= 10 or done == total:
            state["last"] = now
            rate = done / max(now - state["start"], 1e-9)
            print(f"  {label}: {done:,}/{total:,} docs, {rate:,.0f} docs/s", file=sys.stderr)

    return report


async def bench_backend(
    name: str, backend: SearchBackend, corpus: Corpus, count: int, args: argparse.Namespace
) -> Result:
    await backend.open()
    try:
        print(f"indexing {count:,} documents into {name}", file=sys.stderr)
        seconds = await load(
            backend,
            corpus,
            count,
            batch=args.batch,
            concurrency=args.concurrency if name == "opensearch" else 1,
            progress=progress_printer(count, name),
        )
        if isinstance(backend, OpenSearchBackend):
            await backend.client.indices.refresh(index=backend.read_alias)
        print(f"querying {name}", file=sys.stderr)
        latencies = await run_queries(backend, query_mix(corpus), args.rounds)
        return Result(name, count, seconds, latencies)
    finally:
        if isinstance(backend, OpenSearchBackend) and not args.keep:
            await backend.client.indices.delete(index=f"{backend.prefix}-items-v*")
        await backend.close()


def table(results: list[Result]) -> str:
    lines = [
        "| backend | docs | index s | docs/s | query p50 ms | p95 ms | p99 ms | queries |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        all_ms = r.all_latencies
        lines.append(
            f"| {r.backend} | {r.docs:,} | {r.seconds:,.0f} | {r.docs / r.seconds:,.0f} | "
            f"{percentile(all_ms, 0.50):.1f} | {percentile(all_ms, 0.95):.1f} | "
            f"{percentile(all_ms, 0.99):.1f} | {len(all_ms)} |"
        )
    lines += [
        "",
        "| query kind | " + " | ".join(f"{r.backend} p50 / p95 ms" for r in results) + " |",
    ]
    lines.append("|---|" + "---:|" * len(results))
    kinds = list(dict.fromkeys(k for r in results for k in r.latencies))
    for kind in kinds:
        cells = []
        for r in results:
            values = r.latencies.get(kind, [])
            cells.append(
                f"{statistics.median(values):.1f} / {percentile(values, 0.95):.1f}"
                if values
                else "-"
            )
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    corpus = Corpus.make()
    results: list[Result] = []
    if args.sqlite_docs:
        with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
            backend = open_search_backend(f"sqlite://{Path(folder) / 'bench.db'}")
            results.append(
                await bench_backend("sqlite-fts5", backend, corpus, args.sqlite_docs, args)
            )
            size = sum(p.stat().st_size for p in Path(folder).iterdir())  # noqa: ASYNC240
            print(f"sqlite file size: {size / 1e9:.2f} GB", file=sys.stderr)
    if args.opensearch_docs:
        if not args.opensearch_url:
            raise SystemExit("set --opensearch-url or SAFEKEEP_TEST_OPENSEARCH_URL")
        backend = open_search_backend(
            args.opensearch_url,
            index_prefix=f"bench-{int(time.time())}",
            number_of_replicas=0,
            number_of_shards=args.shards,
        )
        results.append(
            await bench_backend("opensearch", backend, corpus, args.opensearch_docs, args)
        )
    print(table(results))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--opensearch-url", default=os.environ.get("SAFEKEEP_TEST_OPENSEARCH_URL"))
    parser.add_argument("--opensearch-docs", type=int, default=1_000_000)
    parser.add_argument("--sqlite-docs", type=int, default=200_000)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=2, help="parallel bulk requests")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the 200-query mix")
    parser.add_argument("--tmp", default=None, help="folder for the SQLite file")
    parser.add_argument("--keep", action="store_true", help="keep the OpenSearch index")
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> Any:
    return asyncio.run(main(parse_args(argv)))


if __name__ == "__main__":
    run()
