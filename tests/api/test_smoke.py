from __future__ import annotations

import httpx

from safekeep.runtime import Runtime
from tests.factories import create_msp


async def test_health(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_tenant_roundtrip(client: httpx.AsyncClient, runtime: Runtime) -> None:
    msp = await create_msp(runtime)
    r = await client.post("/v1/tenants", json={"name": "Contoso"}, headers=msp.headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["consent_state"] == "pending"
    assert "/organizations/oauth2/v2.0/authorize?" in body["consent_url"]
    r = await client.get(f"/v1/tenants/{body['id']}", headers=msp.headers)
    assert r.status_code == 200
    assert r.json()["name"] == "Contoso"
