"""The CLI serves HTTPS with its own CA and keeps the world in ``--state`` across restarts."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from graphsim import Simulator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_cli(state: Path, port: int) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "graphsim",
            "--port",
            str(port),
            "--seed",
            "5",
            "--tenants",
            "2",
            "--users",
            "2",
            "--messages",
            "10",
            "--files",
            "5",
            "--state",
            str(state),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else ""
    return proc, json.loads(line)


def stop_cli(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_cli_serves_and_persists(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    proc, info = start_cli(state, port)
    try:
        assert info["base_url"] == f"https://127.0.0.1:{port}"
        assert Path(info["ca"]).exists()
        with httpx.Client(
            base_url=info["base_url"], verify=ssl.create_default_context(cafile=info["ca"])
        ) as plain:
            tenants = plain.get("/_sim/tenants").json()
            assert len(tenants) == 2
            tenant = tenants[0]
            upn = tenant["users"][0]["userPrincipalName"]
            added = plain.post(
                f"/_sim/tenants/{tenant['id']}/users/{upn}/messages",
                content=b"From: a@b.example\r\nSubject: keep me\r\n\r\nbody\r\n",
            )
            assert added.status_code == 201
            ca_before = Path(info["ca"]).read_bytes()
    finally:
        stop_cli(proc)
    proc, info = start_cli(state, port)
    try:
        assert Path(info["ca"]).read_bytes() == ca_before
        sim_state = state / "world.pickle"
        assert sim_state.exists()
        with httpx.Client(
            base_url=info["base_url"], verify=ssl.create_default_context(cafile=info["ca"])
        ) as plain:
            assert [t["id"] for t in plain.get("/_sim/tenants").json()] == [
                t["id"] for t in tenants
            ]
        restored = Simulator(state_dir=state)
        assert any(
            item.spec is not None and item.spec.subject == "keep me"
            for item in restored.tenant(tenant["id"]).items.values()
            if item.kind == "message"
        )
    finally:
        stop_cli(proc)


def test_same_seed_same_world() -> None:
    a = Simulator(seed=9, users=2, messages=12, files=6)
    b = Simulator(seed=9, users=2, messages=12, files=6)
    ta, tb = a.tenant(), b.tenant()
    assert ta.id == tb.id
    assert sorted(ta.items) == sorted(tb.items)
    first = next(i for i in ta.items.values() if i.kind == "message")
    from graphsim.routes_mail import message_mime

    assert message_mime(first) == message_mime(tb.items[first.id])
    c = Simulator(seed=10, users=2, messages=12, files=6)
    assert c.tenant().id != ta.id
    for sim in (a, b, c):
        sim.stop()
