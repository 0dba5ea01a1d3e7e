"""Usage counts the data Safekeep keeps: a deleted tenant's seats that hold data are retained
seats, and their bytes stored, until a purge removes them (deleting a tenant deletes no
data), and so is any account holding data that is no protected seat."""

from __future__ import annotations

from typing import Any

import httpx

from safekeep.backup.jobs.purge import run_purge_job
from safekeep.runtime import Runtime
from safekeep.tenants import outbox
from safekeep.tenants.models import AccountKind, AccountState
from tests.factories import create_account, create_msp, create_tenant, end_snapshot


async def usage(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    r = await client.get("/v1/usage", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    figures = ("protected_seats", "retained_seats", "stored_bytes")
    for name in figures:  # a page's tenants add up to the totals
        assert body[name] == sum(t[name] for t in body["tenants"]), (name, body)
    return body


def figures(body: dict[str, Any]) -> tuple[int, int, int]:
    return body["protected_seats"], body["retained_seats"], body["stored_bytes"]


def of_tenant(body: dict[str, Any], tenant_id: object) -> tuple[str, int, int, int] | None:
    for t in body["tenants"]:
        if t["tenant_id"] == str(tenant_id):
            return t["status"], t["protected_seats"], t["retained_seats"], t["stored_bytes"]
    return None


async def purge(client: httpx.AsyncClient, runtime: Runtime, path: str, h: dict[str, str]) -> None:
    account_id = path.rsplit("/", 1)[1]
    r = await client.post(f"{path}/purge", json={"confirm": account_id}, headers=h)
    assert r.status_code == 202, r.text
    with outbox.collect():
        await run_purge_job(runtime, r.json()["id"])
    job = (await client.get(f"/v1/jobs/{r.json()['id']}", headers=h)).json()
    assert job["status"] == "succeeded", job


async def test_a_deleted_tenants_data_is_billed_as_retained_until_purged(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    msp = await create_msp(any_runtime, "Northwind IT")
    h = msp.headers
    leaving = await create_tenant(any_runtime, msp, name="Contoso")
    staying = await create_tenant(any_runtime, msp, name="Litware")
    adele = await create_account(any_runtime, leaving, name="Adele Vance")  # protected
    await end_snapshot(any_runtime, adele, bytes_added=5000)
    await create_account(any_runtime, leaving, name="Comms Site", kind=AccountKind.site)
    alex = await create_account(any_runtime, leaving, name="Alex W", state=AccountState.cancelled)
    await end_snapshot(any_runtime, alex, bytes_added=700)
    megan = await create_account(any_runtime, staying, name="Megan Bowen")
    await end_snapshot(any_runtime, megan, bytes_added=300)
    # a tenant deleted with nothing backed up holds nothing: it leaves usage at once
    empty = await create_tenant(any_runtime, msp, name="Fabrikam")
    await create_account(any_runtime, empty, name="Nestor W")

    before = await usage(any_client, h)
    assert figures(before) == (4, 1, 6000)
    assert of_tenant(before, leaving.id) == ("active", 2, 1, 5700)

    for tenant in (leaving, empty):
        r = await any_client.delete(f"/v1/tenants/{tenant.id}", headers=h)
        assert r.status_code == 204, r.text
    after = await usage(any_client, h)
    # Contoso's two seats with data are retained now (the site without data is no seat);
    # its bytes are still stored, and billed
    assert figures(after) == (1, 2, 6000)
    assert of_tenant(after, leaving.id) == ("deleted", 0, 2, 5700)
    assert of_tenant(after, staying.id) == ("active", 1, 0, 300)
    assert of_tenant(after, empty.id) is None

    # A deleted tenant's seat cannot be released any more; its purge is asked for directly.
    base = f"/v1/tenants/{leaving.id}/accounts"
    await purge(any_client, any_runtime, f"{base}/{adele.id}", h)
    assert figures(await usage(any_client, h)) == (1, 1, 1000)
    await purge(any_client, any_runtime, f"{base}/{alex.id}", h)
    gone = await usage(any_client, h)
    assert figures(gone) == (1, 0, 300)
    assert of_tenant(gone, leaving.id) is None


async def test_data_of_a_seat_that_is_not_protected_is_retained(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    """An active account that is no protected seat but holds data (a backup that finished
    after its seat was released, before this release kept it as cancelled) is kept data,
    billed as retained like a cancelled one."""
    msp = await create_msp(any_runtime, "Northwind IT")
    tenant = await create_tenant(any_runtime, msp)
    lee = await create_account(any_runtime, tenant, name="Lee Gu", protected=False)
    await end_snapshot(any_runtime, lee, bytes_added=900)
    await create_account(any_runtime, tenant, name="Diego S", protected=False)  # no data
    assert figures(await usage(any_client, msp.headers)) == (0, 1, 900)
