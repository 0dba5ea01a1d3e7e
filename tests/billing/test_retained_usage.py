"""The daily usage sent to Stripe bills the data Safekeep keeps: a deleted tenant's seats that
hold data are retained seats (and their bytes stored) until purged, the same figures
``/v1/usage`` shows."""

from __future__ import annotations

from datetime import timedelta

import httpx

from safekeep.backup.jobs.purge import run_purge_job
from safekeep.billing.stripe_client import BillingClient
from safekeep.billing.usage import UsageOutcome, report_usage
from safekeep.runtime import Runtime
from safekeep.tenants import outbox
from safekeep.tenants.models import AccountKind, utcnow
from safekeep.tenants.scope import system_principal
from safekeep.tenants.tenant import service as tenant_service
from tests.billing.conftest import StripeRecorder, set_customer
from tests.factories import create_account, create_msp, create_tenant, end_snapshot


def meter_values(recorder: StripeRecorder) -> list[tuple[str, str]]:
    return [
        (r.form["event_name"], r.form["payload[value]"])
        for r in recorder.requests
        if r.path == "/v1/billing/meter_events"
    ]


async def test_a_deleted_tenants_seats_with_data_are_billed_as_retained_until_purged(
    billing_runtime: Runtime,
    billing_client: BillingClient,
    stripe_recorder: StripeRecorder,
    billing_http: httpx.AsyncClient,
) -> None:
    msp = await create_msp(billing_runtime, "Northwind IT")
    await set_customer(billing_runtime, msp)
    leaving = await create_tenant(billing_runtime, msp, name="Contoso")
    adele = await create_account(billing_runtime, leaving, name="Adele Vance")
    await end_snapshot(billing_runtime, adele, bytes_added=4000)
    await create_account(billing_runtime, leaving, name="Site", kind=AccountKind.site)  # no data
    staying = await create_tenant(billing_runtime, msp, name="Litware")
    await create_account(billing_runtime, staying, name="Megan Bowen")
    async with billing_runtime.db.session() as session:
        await tenant_service.delete(session, system_principal(msp.id), leaving.id)

    day = utcnow().date() - timedelta(days=2)
    async with billing_runtime.db.session() as session:
        result = await report_usage(session, msp.id, day, client=billing_client)
    assert result.outcome is UsageOutcome.sent and result.report is not None
    report = result.report
    assert (report.protected_seats, report.retained_seats, report.stored_bytes) == (1, 1, 4000)
    assert meter_values(stripe_recorder) == [
        ("safekeep_protected_seats", "1"),
        ("safekeep_retained_seats", "1"),
    ]
    shown = (await billing_http.get("/v1/usage", headers=msp.headers)).json()
    assert (shown["protected_seats"], shown["retained_seats"], shown["stored_bytes"]) == (
        1,
        1,
        4000,
    )

    # purged, its data no longer billed from the next day on
    r = await billing_http.post(
        f"/v1/tenants/{leaving.id}/accounts/{adele.id}/purge",
        json={"confirm": str(adele.id)},
        headers=msp.headers,
    )
    assert r.status_code == 202, r.text
    with outbox.collect():
        await run_purge_job(billing_runtime, r.json()["id"])
    async with billing_runtime.db.session() as session:
        result = await report_usage(session, msp.id, day + timedelta(days=1), client=billing_client)
    assert result.report is not None
    assert (result.report.retained_seats, result.report.stored_bytes) == (0, 0)
    assert meter_values(stripe_recorder)[-1] == ("safekeep_retained_seats", "0")
