"""Consent hijack, attacked as an attacker would: two MSPs on one live deployment (uvicorn in
its own process, graphsim as Entra ID), MSP B trying every sequence to bind the Microsoft 365
directory of MSP A's client.

Directory ``alpha`` is A's client, connected by A through the real flow; ``beta`` is B's own
client. B may use its own tenants, its own consent links, answers it forges, answers it
replays, and A's client's admin following B's link.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import select, update

from graphsim import Simulator
from graphsim.entra import admin_upn
from safekeep.runtime import Runtime
from safekeep.settings import Settings
from safekeep.tenants.models import AuditEvent, ConsentRequest, Tenant, utcnow
from tests.backup.harness import sim_settings
from tests.factories import MspHandle, create_msp
from tests.fixtures.app import SentMessages
from tests.fixtures.live import free_port, serve_api
from tests.fixtures.sim import running_sim

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post':UserWarning")


@pytest.fixture
def two_directories(tmp_path: Path) -> Iterator[Simulator]:
    yield from running_sim(tmp_path, seed=21, tenants=2, users=1, messages=0, files=0, sites=0)


@dataclass
class Deployment:
    url: str
    log: Path
    runtime: Runtime  # the same database, for what only an operator can see
    sim: Simulator
    a: MspHandle
    b: MspHandle

    def client(self, msp: MspHandle | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=msp.headers if msp else {}, timeout=60)

    def _directory(self, index: int) -> str:
        return sorted(self.sim.state.tenants.values(), key=lambda t: t.index)[index].id

    @property
    def alpha(self) -> str:
        return self._directory(0)

    @property
    def beta(self) -> str:
        return self._directory(1)

    def admin(self, directory: str) -> str:
        return admin_upn(self.sim.tenant(directory))

    def sign_in(self, consent_url: str, login_hint: str, **extra: str) -> dict[str, str]:
        """The admin's browser at Entra: Entra's answer for the callback."""
        answer = httpx.get(
            f"{consent_url}&{urlencode({'login_hint': login_hint, **extra})}",
            verify=self.sim.ssl_context(),
            follow_redirects=False,
        )
        assert answer.status_code == 302, answer.text
        back = urlsplit(answer.headers["location"])
        assert f"{back.scheme}://{back.netloc}{back.path}" == f"{self.url}/v1/consent/callback"
        return {k: v[0] for k, v in parse_qs(back.query).items()}

    async def new_tenant(self, msp: MspHandle, name: str) -> dict[str, Any]:
        async with self.client(msp) as c:
            r = await c.post("/v1/tenants", json={"name": name})
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    async def link(self, msp: MspHandle, tenant_id: str) -> str:
        async with self.client(msp) as c:
            r = await c.post(f"/v1/tenants/{tenant_id}/consent")
        assert r.status_code == 200, r.text
        return str(r.json()["consent_url"])

    async def callback(self, params: dict[str, str]) -> httpx.Response:
        async with self.client() as c:
            return await c.get("/v1/consent/callback", params=params)

    async def tenant(self, msp: MspHandle, tenant_id: str) -> dict[str, Any]:
        async with self.client(msp) as c:
            r = await c.get(f"/v1/tenants/{tenant_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def audit(self, msp: MspHandle) -> list[dict[str, Any]]:
        async with self.client(msp) as c:
            r = await c.get("/v1/audit-events", params={"limit": 200})
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    async def fingerprint(self) -> list[tuple[str, str, str | None, str]]:
        async with self.runtime.db.session() as session:
            rows = (await session.execute(select(Tenant).order_by(Tenant.id))).scalars().all()
            return [
                (str(t.id), str(t.consent_state), t.entra_tenant_id, str(t.next_backup_at))
                for t in rows
            ]

    def log_events(self, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                found.append(record)
        return found


@pytest.fixture
async def deployment(
    tmp_path: Path, scaleout_settings: Settings, two_directories: Simulator
) -> AsyncIterator[Deployment]:
    port = free_port()
    settings = sim_settings(scaleout_settings, two_directories).model_copy(
        update={"public_url": f"http://127.0.0.1:{port}"}
    )
    runtime = Runtime.build(settings, send=SentMessages())
    log = tmp_path / "api.log"
    try:
        with serve_api(settings, port, log) as url:
            a = await create_msp(runtime, "MSP A")
            b = await create_msp(runtime, "MSP B")
            yield Deployment(url, log, runtime, two_directories, a, b)
    finally:
        await runtime.close()


async def _connect_a(d: Deployment) -> dict[str, Any]:
    """A connects its client through graphsim's authorize endpoint, end to end."""
    tenant = await d.new_tenant(d.a, "Alpha client")
    url = urlsplit(tenant["consent_url"])
    assert url.path == "/organizations/oauth2/v2.0/authorize"
    answer = d.sign_in(tenant["consent_url"], d.admin(d.alpha))
    assert set(answer) >= {"code", "state"} and "tenant" not in answer
    r = await d.callback(answer)
    assert r.status_code == 200, r.text
    assert r.json()["consent_state"] == "granted" and r.json()["entra_tenant_id"] == d.alpha
    async with d.client(d.a) as c:
        jobs = (await c.get(f"/v1/tenants/{tenant['id']}/jobs")).json()["items"]
    assert [j["kind"] for j in jobs] == ["discover"]
    return {**tenant, "answer": answer}


async def test_b_cannot_bind_a_clients_directory_by_any_sequence(deployment: Deployment) -> None:
    d = deployment
    ta = await _connect_a(d)
    tb = await d.new_tenant(d.b, "Beta's tenant")
    tb_state = parse_qs(urlsplit(tb["consent_url"]).query)["state"][0]
    before = await d.fingerprint()

    # 1. The old hijack: B's own state with tenant=<A's directory>, no code.
    r = await d.callback({"admin_consent": "True", "tenant": d.alpha, "state": tb_state})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    # ... or with a made-up code: Microsoft refuses it, nothing is bound.
    r = await d.callback({"code": "forged", "tenant": d.alpha, "state": tb_state})
    assert r.status_code == 400 and "AADSTS9002313" in r.json()["detail"]
    assert await d.fingerprint() == before

    # 2. A's answer (its code) delivered on B's state: PKCE and state bind it to A's sign-in.
    link = await d.link(d.b, tb["id"])
    b_state = parse_qs(urlsplit(link).query)["state"][0]
    a_link = await d.link(d.a, ta["id"])
    a_answer = d.sign_in(a_link, d.admin(d.alpha))
    r = await d.callback({"code": a_answer["code"], "state": b_state})
    assert r.status_code == 400, r.text
    assert await d.fingerprint() == before

    # 3. A's client's admin follows B's link: Microsoft vouches for alpha, which A holds.
    link = await d.link(d.b, tb["id"])
    r = await d.callback(d.sign_in(link, d.admin(d.alpha)))
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    body = r.text
    assert ta["id"] not in body and "MSP A" not in body and str(d.a.id) not in body
    assert d.alpha not in body
    assert await d.fingerprint() == before
    # audited on B's log (the attempting MSP), not on A's; and visible deployment-wide
    b_events = [e for e in await d.audit(d.b) if e["action"] == "tenant.consent_conflict"]
    assert len(b_events) == 1 and b_events[0]["details"]["entra_tenant_id"] == d.alpha
    assert b_events[0]["tenant_id"] == tb["id"]
    assert not [e for e in await d.audit(d.a) if e["action"] == "tenant.consent_conflict"]
    async with d.runtime.db.session() as session:
        rows = (
            (
                await session.execute(
                    select(AuditEvent).where(AuditEvent.action == "tenant.consent_conflict")
                )
            )
            .scalars()
            .all()
        )
    assert [(r.msp_id, r.details["entra_tenant_id"]) for r in rows] == [(d.b.id, d.alpha)]
    logged = d.log_events("consent.directory_conflict")
    assert [(e["entra_tenant_id"], e["tenant_id"]) for e in logged] == [(d.alpha, tb["id"])]

    # 4. B's link signed by B's client's admin binds beta, whatever tenant= says.
    link = await d.link(d.b, tb["id"])
    answer = d.sign_in(link, d.admin(d.beta))
    r = await d.callback({**answer, "tenant": d.alpha})
    assert r.status_code == 200 and r.json()["entra_tenant_id"] == d.beta
    bound = await d.fingerprint()

    # 5. Replays: the same grant, the same state with an error, A's old answer: all refused.
    for replay in (
        answer,
        {"state": answer["state"], "error": "access_denied", "error_description": "x"},
        ta["answer"],
        {"state": ta["answer"]["state"], "error": "access_denied"},
    ):
        r = await d.callback(replay)
        assert r.status_code == 400 and "already used" in r.json()["detail"], replay
    assert await d.fingerprint() == bound
    assert (await d.tenant(d.a, ta["id"]))["consent_state"] == "granted"
    async with d.client(d.b) as c:
        jobs = (await c.get(f"/v1/tenants/{tb['id']}/jobs")).json()["items"]
    assert [j["kind"] for j in jobs] == ["discover"]  # one discovery, not one per replay

    # 6. B's other tenant, A's admin again: still 409; B cannot see or release A's tenant.
    tb2 = await d.new_tenant(d.b, "Beta's second try")
    r = await d.callback(d.sign_in(tb2["consent_url"], d.admin(d.alpha)))
    assert r.status_code == 409
    async with d.client(d.b) as c:
        assert (await c.post(f"/v1/tenants/{ta['id']}/consent/release")).status_code == 404
        assert (await c.get(f"/v1/tenants/{ta['id']}")).status_code == 404
    assert (await d.tenant(d.a, ta["id"]))["entra_tenant_id"] == d.alpha


async def test_expired_state_wrong_nonce_and_error_after_grant(deployment: Deployment) -> None:
    d = deployment
    ta = await _connect_a(d)
    before = await d.fingerprint()

    # An expired state changes nothing (an hour is the limit).
    link = await d.link(d.a, ta["id"])
    state = parse_qs(urlsplit(link).query)["state"][0]
    answer = d.sign_in(link, d.admin(d.alpha))
    async with d.runtime.db.session() as session:
        await session.execute(
            update(ConsentRequest).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    r = await d.callback(answer)
    assert r.status_code == 400 and "expired" in r.json()["detail"]
    assert await d.fingerprint() == before
    assert state == answer["state"]

    # A code whose ID token carries another nonce (an answer made for another sign-in with
    # this link's PKCE challenge) is refused.
    tb = await d.new_tenant(d.b, "Beta")
    link = await d.link(d.b, tb["id"])
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    query["nonce"] = "0" * 64
    query["login_hint"] = d.admin(d.beta)
    async with httpx.AsyncClient(verify=d.sim.ssl_context()) as browser:
        forged = await browser.get(
            f"{urlsplit(link).scheme}://{urlsplit(link).netloc}{urlsplit(link).path}",
            params=query,
            follow_redirects=False,
        )
    back = {k: v[0] for k, v in parse_qs(urlsplit(forged.headers["location"]).query).items()}
    r = await d.callback(back)
    assert r.status_code == 400 and "nonce" in r.json()["detail"].lower()
    assert (await d.tenant(d.b, tb["id"]))["consent_state"] == "pending"

    # A refusal after a grant does not revoke; its text is stored bounded, as JSON data.
    link = await d.link(d.a, ta["id"])
    state = parse_qs(urlsplit(link).query)["state"][0]
    r = await d.callback(
        {
            "state": state,
            "error": "access_denied",
            "error_description": "<script>alert(1)</script>\r\n" + "x" * 3000,
        }
    )
    assert r.status_code == 422  # longer than Entra ever sends: refused before anything
    r = await d.callback(
        {"state": state, "error": "access_denied", "error_description": "<b>no</b>\r\nthanks"}
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json()["consent_state"] == "granted" and "\n" not in r.json()["error"]
    assert (await d.tenant(d.a, ta["id"]))["entra_tenant_id"] == d.alpha


async def test_release_moves_a_client_between_msps(deployment: Deployment) -> None:
    d = deployment
    ta = await _connect_a(d)
    async with d.client(d.a) as c:
        r = await c.post(f"/v1/tenants/{ta['id']}/consent/release")
        assert r.status_code == 200, r.text
        assert r.json()["entra_tenant_id"] is None and r.json()["consent_state"] == "pending"
        assert r.json()["next_backup_at"] is None
        again = await c.post(f"/v1/tenants/{ta['id']}/consent/release")
        assert again.status_code == 409
    released = [e for e in await d.audit(d.a) if e["action"] == "tenant.consent_released"]
    assert len(released) == 1 and released[0]["details"]["entra_tenant_id"] == d.alpha
    # the client's admin now connects the directory with its new MSP
    tb = await d.new_tenant(d.b, "Alpha, now with B")
    r = await d.callback(d.sign_in(tb["consent_url"], d.admin(d.alpha)))
    assert r.status_code == 200 and r.json()["entra_tenant_id"] == d.alpha
    # and A cannot take it back without B releasing it
    r = await d.callback(d.sign_in(await d.link(d.a, ta["id"]), d.admin(d.alpha)))
    assert r.status_code == 409
