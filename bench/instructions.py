"""Instructions per request of the API's hot reads, counted by valgrind's callgrind: a figure
that does not move with the machine's load, for telling two versions apart where CPU time per
request varies by 10-20% from one minute to the next on a shared 2-core machine.

    python -m bench.instructions                 # tenant, accounts page, job, /healthz
    python -m bench.instructions -n 400 --route "GET accounts page"
    python -m bench.instructions --column postgres   # after eval "$(scripts/services env)"

The app runs in-process on the embedded column (SQLite) or on PostgreSQL + Redis (the
database server's own work is not counted: it is another process), seeded as ``bench.api``
seeds it, and is called over ASGI (no HTTP server, no client): for each route, after a
warm-up, callgrind's counters are zeroed, the route is called ``-n`` times, and the counters
dumped; the figure is the dump's total over ``n``. Needs valgrind (``apt-get install
valgrind``); under it Python runs some 50 times slower, so a run takes about three minutes.
Compare versions by running this in each (``git worktree``): what ``bench.api`` measures in
time, this measures in work.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import api

ROUTES = ("GET /v1/tenants/{id}", "GET accounts page", "GET /v1/jobs/{id}", "GET /healthz")
WARM_UP = 30


async def _call(app: Any, path: str, key: str) -> int:
    """One GET straight into the app's ASGI callable: no client library, whose own work
    (httpx's ``ASGITransport``, as ``bench.api.count_statements`` uses) would be counted."""
    route, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": route,
        "raw_path": route.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"authorization", f"Bearer {key}".encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


def _hand_over(mark: Path, state: str, label: str) -> None:
    """Tell the parent ``state`` ("ready" or "done") and wait for its go-ahead: blocking on
    purpose, nothing of the app runs while callgrind's counters are zeroed or dumped."""
    Path(f"{mark}.{state}").write_text(label)
    go = Path(f"{mark}.go")
    while not go.exists():
        time.sleep(0.01)
    go.unlink()


async def _child(column: str, routes: list[str], n: int, mark: Path) -> None:
    """Under valgrind: seed, then for each route warm up, signal, run ``n`` calls, signal."""
    from safekeep.api.app import create_app
    from safekeep.migrate import upgrade
    from safekeep.runtime import Runtime

    with tempfile.TemporaryDirectory() as tmp, api.column_env(column, Path(tmp)) as env:
        settings = api._settings(env)
        upgrade(settings.resolved_database_url)
        seeded = await api.seed(env, tenants=25, accounts=60, jobs=30, docs=0)
        runtime = Runtime.build(settings, send=lambda _messages: None)
        app = create_app(runtime=runtime)
        paths = {**api.read_routes(seeded), "GET /healthz": "/healthz"}
        gc.collect()
        gc.freeze()
        try:
            for label in routes:
                for _ in range(WARM_UP):
                    status = await _call(app, paths[label], seeded.key)
                    assert status == 200, (label, status)
                _hand_over(mark, "ready", label)
                for _ in range(n):
                    await _call(app, paths[label], seeded.key)
                _hand_over(mark, "done", label)
        finally:
            await runtime.close()


def _total(dump: Path) -> int:
    match = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"no total in {dump}")
    return int(match.group(1))


def measure(column: str, routes: list[str], n: int) -> dict[str, float]:
    """Millions of instructions per request for each route."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("bench.instructions needs valgrind: apt-get install valgrind")
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        mark = Path(tmp) / "mark"
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={tmp}/cg.%p",
            sys.executable,
            "-m",
            "bench.instructions",
            "--child",
            str(mark),
            "--column",
            column,
            "-n",
            str(n),
            *[arg for route in routes for arg in ("--route", route)],
        ]
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        pid = str(child.pid)

        def control(*args: str) -> None:
            subprocess.run(["callgrind_control", *args, pid], check=True, capture_output=True)

        while child.poll() is None:
            ready, done = Path(f"{mark}.ready"), Path(f"{mark}.done")
            if ready.exists():
                ready.unlink()
                control("-z")
                Path(f"{mark}.go").touch()
            elif done.exists():
                label = done.read_text()
                done.unlink()
                before = set(Path(tmp).glob(f"cg.{pid}.*"))
                control("-d", f"route {len(figures) + 1}")
                (dump,) = set(Path(tmp).glob(f"cg.{pid}.*")) - before
                figures[label] = _total(dump) / n / 1e6
                print(f"{label:28s} {figures[label]:.3f} M instructions/request", flush=True)
                Path(f"{mark}.go").touch()
            time.sleep(0.1)
        if child.returncode != 0 or len(figures) != len(routes):
            assert child.stderr is not None
            raise SystemExit(child.stderr.read().decode(errors="replace")[-3000:])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="calls per route counted")
    parser.add_argument("--route", action="append", choices=ROUTES, help="default: all four")
    parser.add_argument("--column", choices=("embedded", "postgres"), default="embedded")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    routes = args.route or list(ROUTES)
    if args.child is not None:
        asyncio.run(_child(args.column, routes, args.n, args.child))
        return
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(
        f"{args.n} calls a route, in-process under callgrind, {args.column} column; "
        f"commit {commit or '?'}"
    )
    measure(args.column, routes, args.n)


if __name__ == "__main__":
    main()
