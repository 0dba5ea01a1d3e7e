"""Consent, discovery results as seats, policy, manual backups, jobs, usage."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from graphsim import Simulator
from graphsim.entra import admin_upn, sign_in_as
from safekeep import registry
from safekeep.api.app import create_app
from safekeep.runtime import Runtime
from safekeep.settings import Settings
from safekeep.tenants.account.service import FoundAccount, apply_discovery
from safekeep.tenants.models import AccountKind, Snapshot, SnapshotStatus, utcnow
from safekeep.tenants.scope import scope_for_tenant
from safekeep.tenants.tenant import repository as tenant_repository
from tests.backup.harness import sim_settings
from tests.factories import MspHandle, create_account, create_msp, create_tenant
from tests.fixtures.app import SentMessages, open_runtime


@pytest.fixture
async def sim_runtime(
    scaleout_settings: Settings, sim: Simulator, sent: SentMessages
) -> AsyncIterator[Runtime]:
    """The API's runtime pointed at graphsim's Entra ID (the consent flow redeems codes)."""
    async with open_runtime(sim_settings(scaleout_settings, sim), sent) as runtime:
        yield runtime


@pytest.fixture
async def sim_client(sim_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(runtime=sim_runtime), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://safekeep.test") as c:
        yield c


def sign_in(sim: Simulator, consent_url: str, login_hint: str) -> str:
    """The admin's browser at Entra: the callback path and query it is sent back with."""
    answer = httpx.get(
        f"{consent_url}&{urlencode({'login_hint': login_hint})}",
        verify=sim.ssl_context(),
        follow_redirects=False,
    )
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["location"])
    assert back.path == "/v1/consent/callback"
    return f"{back.path}?{back.query}"


async def msp_with_new_tenant(
    client: httpx.AsyncClient, runtime: Runtime
) -> tuple[MspHandle, dict[str, Any]]:
    """An MSP and the tenant it has just added over the API, whose consent is still to come."""
    msp = await create_msp(runtime)
    created = (
        await client.post("/v1/tenants", json={"name": "Contoso"}, headers=msp.headers)
    ).json()
    return msp, created


async def test_consent_binds_the_directory_of_the_verified_id_token(
    sim_client: httpx.AsyncClient, sim_runtime: Runtime, sim: Simulator, sent: SentMessages
) -> None:
    msp, created = await msp_with_new_tenant(sim_client, sim_runtime)
    url = urlsplit(created["consent_url"])
    query = parse_qs(url.query)
    assert url.path == "/organizations/oauth2/v2.0/authorize"
    assert query["prompt"] == ["consent"] and query["code_challenge_method"] == ["S256"]
    assert "https://graph.microsoft.com/.default" in query["scope"][0].split()
    simulated = sim.tenant()
    callback = sign_in(sim, created["consent_url"], admin_upn(simulated))
    # a forged tenant= beside Entra's answer is ignored: the ID token names the directory
    r = await sim_client.get(callback + f"&tenant={uuid.uuid4()}")
    assert r.status_code == 200, r.text
    assert r.json()["consent_state"] == "granted"
    assert r.json()["entra_tenant_id"] == simulated.id
    tenant = (await sim_client.get(f"/v1/tenants/{created['id']}", headers=msp.headers)).json()
    assert tenant["entra_tenant_id"] == simulated.id and tenant["next_backup_at"] is not None
    assert sent.actors() == ["run_discover"]
    jobs = (await sim_client.get(f"/v1/tenants/{created['id']}/jobs", headers=msp.headers)).json()
    assert [j["kind"] for j in jobs["items"]] == ["discover"]
    # the same answer again: refused, nothing changes, no second discovery
    replay = await sim_client.get(callback)
    assert replay.status_code == 400
    assert replay.headers["content-type"] == "application/problem+json"
    assert "already used" in replay.json()["detail"]
    assert sent.actors() == ["run_discover"]


async def test_refusal_tampering_and_a_denial_after_a_grant(
    sim_client: httpx.AsyncClient, sim_runtime: Runtime, sim: Simulator, sent: SentMessages
) -> None:
    msp, created = await msp_with_new_tenant(sim_client, sim_runtime)
    simulated = sim.tenant()
    sign_in_as(sim.engine, admin_upn(simulated), refuse=True)
    refused = sign_in(sim, created["consent_url"], admin_upn(simulated))
    sign_in_as(sim.engine, None)
    r = await sim_client.get(refused)
    assert r.status_code == 200 and r.json()["consent_state"] == "denied"
    assert r.json()["error"].startswith("access_denied: AADSTS65004")
    state = parse_qs(urlsplit(refused).query)["state"][0]
    for forged in (state[:-2] + ("AA" if not state.endswith("AA") else "BB"), "x"):
        r = await sim_client.get(
            "/v1/consent/callback", params={"code": "anything", "state": forged}
        )
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    # the old admin-consent answer (tenant= with no code) proves nothing
    link = await sim_client.post(f"/v1/tenants/{created['id']}/consent", headers=msp.headers)
    fresh_state = parse_qs(urlsplit(link.json()["consent_url"]).query)["state"][0]
    r = await sim_client.get(
        "/v1/consent/callback",
        params={"admin_consent": "True", "tenant": simulated.id, "state": fresh_state},
    )
    assert r.status_code == 400 and "neither a code" in r.json()["detail"]
    granted = await sim_client.get(sign_in(sim, link.json()["consent_url"], admin_upn(simulated)))
    assert granted.status_code == 200 and granted.json()["consent_state"] == "granted"
    # a later refusal (a fresh link the admin declines) does not revoke the grant
    link = await sim_client.post(f"/v1/tenants/{created['id']}/consent", headers=msp.headers)
    sign_in_as(sim.engine, admin_upn(simulated), refuse=True)
    declined = await sim_client.get(sign_in(sim, link.json()["consent_url"], admin_upn(simulated)))
    sign_in_as(sim.engine, None)
    assert declined.status_code == 200 and declined.json()["consent_state"] == "granted"
    assert (await sim_client.get("/v1/consent/callback")).status_code == 422
    assert sent.actors() == ["run_discover"]


async def test_seats_protect_release_and_licence_loss(
    client: httpx.AsyncClient, runtime: Runtime, sent: SentMessages
) -> None:
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp)
    found = [
        FoundAccount(
            AccountKind.user, "u1", "Adele", "adele@contoso.example", "adele@contoso.example", True
        ),
        FoundAccount(AccountKind.user, "u2", "Bob", "bob@contoso.example", None, True),
        FoundAccount(AccountKind.user, "u3", "Guest", "guest@x.example", None, False),
        FoundAccount(
            AccountKind.site, "s1", "Intranet", "https://contoso.sharepoint.com/sites/i", None, True
        ),
    ]
    scope = scope_for_tenant(msp.id, tenant.id)
    from safekeep.tenants import outbox

    with outbox.collect():
        async with runtime.db.session() as session:
            row = await tenant_repository.get_system(session, tenant.id)
            assert row is not None
            result = await apply_discovery(session, row, scope, found, auto_protect=True)
    assert result.added == 4
    accounts = (await client.get(f"/v1/tenants/{tenant.id}/accounts", headers=msp.headers)).json()[
        "items"
    ]
    by_graph = {a["graph_id"]: a for a in accounts}
    assert {g for g, a in by_graph.items() if a["protected"]} == {"u1", "u2", "s1"}
    protected = await client.get(
        f"/v1/tenants/{tenant.id}/accounts", params={"protected": "false"}, headers=msp.headers
    )
    assert [a["graph_id"] for a in protected.json()["items"]] == ["u3"]
    # Bob has backed-up data; releasing his seat keeps it as a retained seat
    bob = by_graph["u2"]
    async with runtime.db.session() as session:
        now = utcnow()
        session.add(
            Snapshot(
                tenant_id=tenant.id,
                account_id=uuid.UUID(bob["id"]),
                service="mail",
                seq=1,
                status=SnapshotStatus.complete,
                started_at=now,
                completed_at=now,
            )
        )
    r = await client.patch(
        f"/v1/tenants/{tenant.id}/accounts/{bob['id']}",
        json={"protected": False},
        headers=msp.headers,
    )
    assert (
        r.status_code == 200
        and r.json()["state"] == "cancelled"
        and r.json()["cancel_reason"] == "seat_released"
    )
    usage = (await client.get("/v1/usage", headers=msp.headers)).json()
    assert (usage["protected_seats"], usage["retained_seats"]) == (2, 1)
    # Adele loses her licence: cancelled by discovery, data kept
    found[0] = FoundAccount(AccountKind.user, "u1", "Adele", "adele@contoso.example", None, False)
    with outbox.collect() as box:
        async with runtime.db.session() as session:
            row = await tenant_repository.get_system(session, tenant.id)
            assert row is not None
            result = await apply_discovery(session, row, scope, found, auto_protect=True)
    assert result.cancelled == 1
    adele = (
        await client.get(
            f"/v1/tenants/{tenant.id}/accounts/{by_graph['u1']['id']}", headers=msp.headers
        )
    ).json()
    assert adele["state"] == "cancelled" and adele["cancel_reason"] == "licence_removed"
    # protecting a user without a licence is refused
    r = await client.patch(
        f"/v1/tenants/{tenant.id}/accounts/{adele['id']}",
        json={"protected": True},
        headers=msp.headers,
    )
    assert r.status_code == 409
    assert [m.actor for m in box.messages] == []  # no webhook endpoint subscribed: nothing sent


async def test_manual_backup_is_enqueued_after_commit_and_never_moves_schedule(
    client: httpx.AsyncClient, runtime: Runtime, sent: SentMessages
) -> None:
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp)
    account = await create_account(runtime, tenant)
    before = (await client.get(f"/v1/tenants/{tenant.id}", headers=msp.headers)).json()[
        "next_backup_at"
    ]
    r = await client.post(
        f"/v1/tenants/{tenant.id}/backups",
        json={"account_ids": [str(account.id)]},
        headers=msp.headers,
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and job["params"]["account_ids"] == [str(account.id)]
    assert sent.actors() == ["run_backup"] and sent.messages[0].args == (job["id"],)
    after = (await client.get(f"/v1/tenants/{tenant.id}", headers=msp.headers)).json()[
        "next_backup_at"
    ]
    assert after == before
    detail = (await client.get(f"/v1/jobs/{job['id']}", headers=msp.headers)).json()
    assert detail["progress"]["tasks_total"] == 0 and detail["issues"] == []
    r = await client.post(
        f"/v1/tenants/{tenant.id}/backups",
        json={"account_ids": [str(uuid.uuid4())]},
        headers=msp.headers,
    )
    assert r.status_code == 422
    # An empty selection is not "everything": refused, where it started a full backup.
    empties: list[dict[str, list[str]]] = [{"account_ids": []}, {"services": []}]
    for empty in empties:
        r = await client.post(f"/v1/tenants/{tenant.id}/backups", json=empty, headers=msp.headers)
        assert r.status_code == 422, empty
        assert r.headers["content-type"].startswith("application/problem+json")
    assert len(sent.messages) == 1  # the refused requests enqueued nothing
    r = await client.post(f"/v1/jobs/{job['id']}/cancel", headers=msp.headers)
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    assert (
        await client.post(f"/v1/jobs/{job['id']}/cancel", headers=msp.headers)
    ).status_code == 409
    # Every service named at once is a request like any other.
    every = list(registry.names())
    r = await client.post(
        f"/v1/tenants/{tenant.id}/backups", json={"services": every}, headers=msp.headers
    )
    assert r.status_code == 202 and r.json()["params"]["services"] == sorted(every), r.text


async def test_backup_needs_consent(
    client: httpx.AsyncClient, runtime: Runtime, sent: SentMessages
) -> None:
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp, consented=False)
    r = await client.post(f"/v1/tenants/{tenant.id}/backups", headers=msp.headers)
    assert r.status_code == 409 and r.json()["consent_state"] == "pending"
    assert sent.messages == []


async def test_policy_validation_and_schedule(client: httpx.AsyncClient, runtime: Runtime) -> None:
    msp = await create_msp(runtime)
    tenant = await create_tenant(runtime, msp)
    body: dict[str, Any]
    for body in (
        {"backups_per_day": 0},
        {"backups_per_day": 25},
        {"retention_days": 0},
        {"services": []},
    ):
        r = await client.put(f"/v1/tenants/{tenant.id}/policy", json=body, headers=msp.headers)
        assert r.status_code == 422, body
    r = await client.put(
        f"/v1/tenants/{tenant.id}/policy",
        json={
            "services": ["mail", "onedrive"],
            "backups_per_day": 24,
            "retention_days": None,
            "auto_protect": False,
        },
        headers=msp.headers,
    )
    assert r.status_code == 200
    assert r.json() | {"services": sorted(r.json()["services"])} == {
        "services": ["mail", "onedrive"],
        "backups_per_day": 24,
        "retention_days": None,
        "auto_protect": False,
        "include_deleted_items": True,
        "include_junk": False,
        "include_recoverable_items": False,
        "rpo_minutes": None,
    }
