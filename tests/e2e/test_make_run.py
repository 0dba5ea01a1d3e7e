"""`make run` is `safekeep serve --demo`: one process with the API, the in-process queue and
worker, the scheduler, and graphsim with a tenant connected through consent. Run it as an MSP
would and take a backup through the API."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures.live import free_port, stop_group

ROOT = Path(__file__).resolve().parents[2]


async def test_serve_demo_backs_up_through_its_own_worker(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEKEEP_")}
    env["SAFEKEEP_DATA_DIR"] = str(tmp_path / "data")
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "safekeep.cli", "serve", "--demo", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        key = None
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and key is None:
                await asyncio.sleep(0.5)
                log.seek(0)
                key = next(
                    (
                        line.split("=", 1)[1].strip()
                        for line in log
                        if line.startswith("SAFEKEEP_API_KEY=")
                    ),
                    None,
                )
            assert key, (tmp_path / "serve.log").read_text()[-3000:]
            headers = {"Authorization": f"Bearer {key}"}

            async def poll(path: str, done: Callable[[Any], bool], timeout: float = 120) -> Any:
                end = time.monotonic() + timeout
                while True:
                    try:
                        r = await client.get(path, headers=headers)
                        if r.status_code == 200 and done(r.json()):
                            return r.json()
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < end, f"timed out on {path}"
                    await asyncio.sleep(0.5)

            ready = await poll("/readyz", lambda b: b["status"] == "ok")
            assert {c["backend"] for c in ready["checks"].values()} >= {
                "sqlite",
                "embedded",
                "file",
            }
            # The backup's process yields the CPU to the API's (SAFEKEEP_SERVE_WORKER_NICENESS;
            # the child sets it once its imports are done, hence the wait).
            wanted = [min(19, os.getpriority(os.PRIO_PROCESS, proc.pid) + 10)]
            end = time.monotonic() + 60
            nice = _niceness(_spawned(proc.pid))
            while nice != wanted and time.monotonic() < end:
                await asyncio.sleep(0.2)
                nice = _niceness(_spawned(proc.pid))
            assert nice == wanted
            tenants = await poll("/v1/tenants", lambda b: bool(b["items"]))
            tenant = tenants["items"][0]
            assert tenant["consent_state"] == "granted"
            jobs = await poll(
                f"/v1/tenants/{tenant['id']}/jobs",
                lambda b: bool(b["items"]) and b["items"][-1]["status"] == "succeeded",
            )
            assert jobs["items"][-1]["kind"] == "discover"
            accounts = (
                await client.get(
                    f"/v1/tenants/{tenant['id']}/accounts", params={"kind": "user"}, headers=headers
                )
            ).json()
            user = next(a for a in accounts["items"] if a["services_found"].get("mail"))
            r = await client.post(
                f"/v1/tenants/{tenant['id']}/backups",
                json={"account_ids": [user["id"]], "services": ["contacts"]},
                headers=headers,
            )
            assert r.status_code == 202, r.text
            job = await poll(
                f"/v1/jobs/{r.json()['id']}",
                lambda j: j["status"] in ("succeeded", "partial", "failed"),
            )
            assert job["status"] == "succeeded", job
            assert job["progress"]["items"] > 0
    finally:
        stop_group(proc, grace=30)
        log.close()


def _niceness(pids: list[int]) -> list[int]:
    return [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids]


def _spawned(parent: int) -> list[int]:
    """Processes ``parent`` started through multiprocessing's spawn (not its resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found
