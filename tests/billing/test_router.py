"""GET /v1/billing: anonymous, wrong scope, tenant-limited key, the other MSP, valid."""

from __future__ import annotations

from datetime import timedelta

import httpx

from safekeep.runtime import Runtime
from safekeep.tenants.models import UsageReport, utcnow
from tests.billing.conftest import set_customer
from tests.factories import MspHandle, create_key, create_msp, create_tenant

PROBLEM = "application/problem+json"


async def add_reports(runtime: Runtime, msp: MspHandle, days: int, seats: int) -> None:
    today = utcnow().date()
    async with runtime.db.session() as session:
        for ago in range(1, days + 1):
            session.add(
                UsageReport(
                    msp_id=msp.id,
                    day=today - timedelta(days=ago),
                    protected_seats=seats,
                    retained_seats=ago % 3,
                    stored_bytes=ago * 1000,
                    reported_at=utcnow() if ago > 1 else None,
                    stripe_ids={},
                )
            )


async def test_billing_shows_status_customer_and_the_last_30_reports(
    billing_http: httpx.AsyncClient, billing_runtime: Runtime
) -> None:
    msp = await create_msp(billing_runtime, "Northwind IT")
    customer = await set_customer(billing_runtime, msp)
    await add_reports(billing_runtime, msp, 35, seats=7)
    other = await create_msp(billing_runtime, "Fabrikam IT")
    await add_reports(billing_runtime, other, 3, seats=99)

    key = await create_key(billing_runtime, msp, ["read"])
    r = await billing_http.get("/v1/billing", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "active"
    assert body["billing_enabled"] is True
    assert body["stripe_customer_id"] == customer
    reports = body["usage_reports"]
    today = utcnow().date()
    assert [r["day"] for r in reports] == [
        (today - timedelta(days=ago)).isoformat() for ago in range(1, 31)
    ]
    assert {r["protected_seats"] for r in reports} == {7}  # none of the other MSP's
    assert reports[0]["reported_at"] is None  # yesterday: still to be sent
    assert reports[1]["reported_at"] is not None
    assert (reports[2]["retained_seats"], reports[2]["stored_bytes"]) == (0, 3000)


async def test_an_msp_never_billed_has_an_empty_history(
    billing_http: httpx.AsyncClient, billing_runtime: Runtime
) -> None:
    msp = await create_msp(billing_runtime, "New partner")
    r = await billing_http.get("/v1/billing", headers=msp.headers)
    assert r.status_code == 200
    assert r.json()["stripe_customer_id"] is None
    assert r.json()["usage_reports"] == []


async def test_anonymous_wrong_scope_and_tenant_limited_keys_are_refused(
    billing_http: httpx.AsyncClient, billing_runtime: Runtime
) -> None:
    msp = await create_msp(billing_runtime, "Northwind IT")
    tenant = await create_tenant(billing_runtime, msp)
    for headers in ({}, {"Authorization": "Bearer sk_not_a_real_key"}):
        r = await billing_http.get("/v1/billing", headers=headers)
        assert r.status_code == 401
        assert r.headers["content-type"] == PROBLEM
    export_only = await create_key(billing_runtime, msp, ["export"])
    limited = await create_key(billing_runtime, msp, ["read"], tenant_ids=[tenant.id])
    for key in (export_only, limited):
        r = await billing_http.get("/v1/billing", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 403, r.text
        assert r.headers["content-type"] == PROBLEM
