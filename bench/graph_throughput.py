"""Graph client benchmark: requests/s through ``GraphClient`` against graphsim.

graphsim runs in its own process (``python -m graphsim``), so that the client's figures are
not those of two event loops fighting over one GIL. The same load (GETs of each mailbox's
inbox, spread over several mailboxes, from many concurrent tasks) runs in four settings and
prints requests/s, the client's CPU time per request (the steadier figure on a shared
machine), 429/503s received and graphsim's Retry-After violations:

* throttling off: the client's own cost (TLS, JSON, limiter) on loopback;
* Microsoft's model (4 concurrent per mailbox, 10,000 requests / 10 min) with 5 ms of
  simulated service time, where the 4 slots per mailbox bound throughput;
* a tight budget (10 requests/s per mailbox), so that most time goes to Retry-After;
* the same two with the Redis limiter, if ``SAFEKEEP_TEST_REDIS_URL`` is set.

It also times ``$batch`` (20 GETs per call) and a 100 MiB download. Run by hand:

    .venv/bin/python -m bench.graph_throughput [--requests 2000] [--mailboxes 5] [--tasks 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from safekeep.graph import (
    AppCredentials,
    BatchRequest,
    GraphClient,
    InProcessLimiter,
    RedisLimiter,
    TokenProvider,
)
from safekeep.graph.client import ssl_context
from safekeep.graph.throttle import Limiter

MiB = 1024 * 1024
DEFAULTS = {
    "mailbox_requests": 10_000,
    "mailbox_window_s": 600.0,
    "latency_ms": 0.0,
    "fractional_retry_after": False,
}
SETTINGS: dict[str, dict[str, Any]] = {
    "off": {**DEFAULTS, "mode": "off"},
    "microsoft": {**DEFAULTS, "mode": "microsoft", "latency_ms": 5.0},
    "tight": {
        **DEFAULTS,
        "mode": "custom",
        "mailbox_requests": 10,
        "mailbox_window_s": 1.0,
        "fractional_retry_after": True,
    },
}


@contextmanager
def graphsim(mailboxes: int) -> Iterator[dict[str, Any]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "graphsim",
            "--port",
            "0",
            "--consented",
            "--users",
            str(mailboxes),
            "--messages",
            "5",
            "--files",
            "0",
            "--sites",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield json.loads(process.stdout.readline())
    finally:
        process.terminate()
        process.wait(30)


class Run:
    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.tenant = info["tenants"][0]["id"]
        self.control = httpx.AsyncClient(
            base_url=f"{info['base_url']}/_sim", verify=ssl_context(info["ca"])
        )

    def client(self, limiter: Limiter) -> GraphClient:
        tokens = TokenProvider(
            login_url=self.info["base_url"],
            tenant=self.tenant,
            credentials=AppCredentials(self.info["app_id"], "safekeep-dev-app-secret"),
            ca_bundle=self.info["ca"],
        )
        return GraphClient(
            graph_url=self.info["graph_url"],
            tokens=tokens,
            limiter=limiter,
            tenant_key=self.tenant,
            ca_bundle=self.info["ca"],
        )

    async def setting(self, name: str) -> None:
        (await self.control.put("/throttling", json=SETTINGS[name])).raise_for_status()
        (await self.control.post("/counters/reset")).raise_for_status()

    async def counters(self) -> dict[str, Any]:
        answer = await self.control.get("/counters")
        answer.raise_for_status()
        return dict(answer.json())


async def close(client: GraphClient) -> None:
    await client.aclose()
    await client.tokens.aclose()


async def load(
    run: Run, label: str, setting: str, limiter: Limiter, args: argparse.Namespace
) -> None:
    await run.setting(setting)
    client = run.client(limiter)
    try:
        users = [u["id"] async for page in client.paginate("/users") for u in page]
        queue = iter(range(args.requests))

        async def worker() -> None:
            for i in queue:
                user = users[i % len(users)]
                await client.get_json(f"/users/{user}/mailFolders/inbox", mailbox=user)

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(args.tasks)))
        took = time.perf_counter() - started
        cpu_ms = (time.process_time() - cpu) * 1000 / args.requests
        counters = await run.counters()
        peak = max(counters["max_concurrency"].values(), default=0)
        print(
            f"{label:<44} {args.requests / took:6.0f} req/s  {took:6.2f} s  "
            f"client CPU {cpu_ms:.2f} ms/req  429/503 {client.stats.throttled:4d}  "
            f"violations {counters['retry_after_violations']}  peak/mailbox {peak}"
        )
    finally:
        await close(client)


async def batch_load(run: Run, args: argparse.Namespace) -> None:
    await run.setting("off")
    client = run.client(InProcessLimiter())
    try:
        users = [u["id"] async for page in client.paginate("/users") for u in page]
        calls = [
            [
                BatchRequest(
                    str(j), "GET", f"/users/{users[(i + j) % len(users)]}/mailFolders/inbox"
                )
                for j in range(20)
            ]
            for i in range(0, args.requests, 20)
        ]
        before = client.stats.requests

        async def worker(share: list[list[BatchRequest]]) -> None:
            for call in share:
                await client.batch(call)

        started = time.perf_counter()
        await asyncio.gather(*(worker(calls[k::8]) for k in range(8)))
        took = time.perf_counter() - started
        done = sum(len(c) for c in calls)
        print(
            f"{'$batch, 20 per call, 8 callers':<46} {done / took:7.0f} req/s  {done} in "
            f"{took:6.2f} s  HTTP calls {client.stats.requests - before}"
        )
    finally:
        await close(client)


async def download(run: Run, size: int) -> None:
    await run.setting("off")
    client = run.client(InProcessLimiter())
    try:
        user = (await client.get_json("/users", params={"$top": 1}))["value"][0]["id"]
        added = await run.control.post(
            f"/tenants/{run.tenant}/users/{user}/files", json={"path": "/bench.bin", "size": size}
        )
        added.raise_for_status()
        drive = (await client.get_json(f"/users/{user}/drive"))["id"]
        started = time.perf_counter()
        received = 0
        async for chunk in client.stream(f"/drives/{drive}/items/{added.json()['id']}/content"):
            received += len(chunk)
        took = time.perf_counter() - started
        print(
            f"{'download, 302 to the pre-authenticated URL':<46} "
            f"{received / MiB / took:7.1f} MiB/s  {received // MiB} MiB in {took:6.2f} s"
        )
    finally:
        await close(client)


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--mailboxes", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=32)
    args = parser.parse_args()
    redis_url = os.environ.get("SAFEKEEP_TEST_REDIS_URL")
    with graphsim(args.mailboxes) as info:
        run = Run(info)
        try:
            await load(run, "throttling off", "off", InProcessLimiter(), args)
            await load(
                run, "Microsoft model, 5 ms service time", "microsoft", InProcessLimiter(), args
            )
            await load(run, "budget 10 req/s per mailbox", "tight", InProcessLimiter(), args)
            if redis_url:
                limiter = RedisLimiter.from_url(redis_url, prefix=f"bench-graph-{os.getpid()}")
                try:
                    await load(run, "throttling off, Redis limiter", "off", limiter, args)
                    await load(
                        run, "budget 10 req/s per mailbox, Redis limiter", "tight", limiter, args
                    )
                finally:
                    await limiter.aclose()
            else:
                print("(set SAFEKEEP_TEST_REDIS_URL to include the Redis limiter)")
            await batch_load(run, args)
            await download(run, 100 * MiB)
        finally:
            await run.control.aclose()


if __name__ == "__main__":
    asyncio.run(main())
