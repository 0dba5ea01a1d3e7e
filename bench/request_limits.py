"""Oversized anonymous requests against the API served as in production: how fast the 413
comes back and whether the server's memory grows.

Starts ``uvicorn --factory safekeep.api.app:create_app`` with the chart's options on the
embedded column (a temporary data folder), then sends, without an API key:

- requests declaring a 200 MB body and sending only its first 64 KiB (a raw socket);
- 20 MB bodies sent whole (httpx), and 20 MB bodies sent chunked;

and prints the latency of the 413 answers and the server's resident memory before and after,
beside the targets. Run by hand:

    .venv/bin/python -m bench.request_limits [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from bench.common import Table
from safekeep.api.serving import api_command

MiB = 1024 * 1024
TARGET_SECONDS = 0.5  # "well under a second", client sending time included
TARGET_RSS_GROWTH_MB = 25.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_api(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEKEEP_")}
    env.update(SAFEKEEP_DATA_DIR=str(data_dir), SAFEKEEP_LOG_JSON="true")
    subprocess.run([sys.executable, "-m", "safekeep.cli", "migrate"], env=env, check=True)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    process = subprocess.Popen(
        [*api_command(port), "--no-access-log"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the API did not start")


def declared_only(base: str) -> int:
    host, port = base.removeprefix("http://").split(":")
    head = (
        "POST /v1/tenants HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        f"Content-Length: {200 * MiB}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + b" " * 65536)
        return int(sock.recv(65536).split(b" ", 2)[1])


def whole(base: str) -> int:
    body = b"{" + b" " * (20 * MiB) + b"}"
    return httpx.post(f"{base}/v1/tenants", content=body, timeout=60).status_code


def chunked(base: str) -> int:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * MiB

    return httpx.post(f"{base}/v1/tenants", content=chunks(), timeout=60).status_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    table = Table(["request", "rounds", "413s", "p50 ms", "max ms", "target ms"])
    with tempfile.TemporaryDirectory() as tmp:
        process, base = start_api(Path(tmp))
        try:
            before = rss_mb(process.pid)
            peak = before
            cases: list[tuple[str, Callable[[str], int]]] = [
                ("declared 200 MB, 64 KiB sent", declared_only),
                ("20 MB sent whole", whole),
                ("20 MB sent chunked", chunked),
            ]
            for name, send in cases:
                times: list[float] = []
                refused = 0
                for _ in range(args.rounds):
                    started = time.perf_counter()
                    refused += send(base) == 413
                    times.append(time.perf_counter() - started)
                    peak = max(peak, rss_mb(process.pid))
                table.add(
                    name,
                    args.rounds,
                    refused,
                    f"{statistics.median(times) * 1000:.0f}",
                    f"{max(times) * 1000:.0f}",
                    f"< {TARGET_SECONDS * 1000:.0f}",
                )
            after = rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(20)
    print(table.render())
    print(
        f"\nAPI resident memory: {before:.0f} MB before, {peak:.0f} MB peak, {after:.0f} MB "
        f"after (growth {peak - before:.1f} MB; target < {TARGET_RSS_GROWTH_MB:.0f} MB)"
    )


if __name__ == "__main__":
    main()
