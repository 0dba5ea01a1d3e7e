"""Detections over the API: list and filter, acknowledge, release the hold, and the one-call
restore as of the last clean snapshot (auth, scopes and other MSPs: test_matrix)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import select

from safekeep.runtime import Runtime
from safekeep.tenants.models import (
    Account,
    AuditEvent,
    Detection,
    Job,
    JobKind,
    Tenant,
)
from tests.factories import (
    MspHandle,
    add_backup,
    create_account,
    create_msp,
    create_tenant,
    ransomware_detection,
)


async def add_detection(runtime: Runtime, account: Account, *, clean: bool = True) -> Detection:
    async with runtime.db.session() as session:
        snapshot = (await add_backup(session, account))[1] if clean else None
        evidence = {"suspicious_files": 30, "samples": ["a.docx.locked"]}
        detection = ransomware_detection(account, evidence, clean=snapshot)
        session.add(detection)
    return detection


@pytest.fixture
async def world(runtime: Runtime) -> tuple[MspHandle, Tenant, Account, Detection]:
    msp = await create_msp(runtime, "Detected MSP")
    tenant = await create_tenant(runtime, msp)
    account = await create_account(runtime, tenant)
    return msp, tenant, account, await add_detection(runtime, account)


async def test_list_filter_and_read(
    client: httpx.AsyncClient, world: tuple[MspHandle, Tenant, Account, Detection]
) -> None:
    msp, tenant, account, detection = world
    base = f"/v1/tenants/{tenant.id}/detections"
    listed = await client.get(base, headers=msp.headers)
    assert listed.status_code == 200
    [item] = listed.json()["items"]
    assert item["id"] == str(detection.id)
    assert item["account_id"] == str(account.id)
    assert item["kind"] == "ransomware" and item["status"] == "open"
    assert item["evidence"]["suspicious_files"] == 30
    assert item["last_clean_snapshot_id"] == str(detection.last_clean_snapshot_id)
    assert (await client.get(base, params={"status": "released"}, headers=msp.headers)).json()[
        "items"
    ] == []
    assert (
        await client.get(base, params={"status": "gone"}, headers=msp.headers)
    ).status_code == 422
    one = await client.get(f"{base}/{detection.id}", headers=msp.headers)
    assert one.status_code == 200 and one.json() == item


async def test_acknowledge_then_release(
    runtime: Runtime,
    client: httpx.AsyncClient,
    world: tuple[MspHandle, Tenant, Account, Detection],
) -> None:
    msp, tenant, _account, detection = world
    url = f"/v1/tenants/{tenant.id}/detections/{detection.id}"
    acked = await client.post(f"{url}/acknowledge", headers=msp.headers)
    assert acked.status_code == 200
    assert acked.json()["status"] == "acknowledged"
    assert acked.json()["acknowledged_by"]
    again = await client.post(f"{url}/acknowledge", headers=msp.headers)
    assert again.json()["acknowledged_at"] == acked.json()["acknowledged_at"]
    released = await client.post(f"{url}/release", headers=msp.headers)
    assert released.status_code == 200 and released.json()["status"] == "released"
    late = await client.post(f"{url}/acknowledge", headers=msp.headers)
    assert late.status_code == 409
    assert late.headers["content-type"] == "application/problem+json"
    async with runtime.db.session() as session:
        actions = [
            a.action
            for a in (
                await session.execute(
                    select(AuditEvent)
                    .where(AuditEvent.tenant_id == tenant.id)
                    .order_by(AuditEvent.created_at)
                )
            ).scalars()
        ]
    assert actions[-2:] == ["detection.acknowledged", "detection.released"]


async def test_one_call_restore_goes_back_to_the_last_clean_snapshot(
    runtime: Runtime,
    client: httpx.AsyncClient,
    world: tuple[MspHandle, Tenant, Account, Detection],
) -> None:
    msp, tenant, account, detection = world
    resp = await client.post(
        f"/v1/tenants/{tenant.id}/detections/{detection.id}/restore", headers=msp.headers
    )
    assert resp.status_code == 202, resp.text
    async with runtime.db.session() as session:
        job = await session.get(Job, uuid.UUID(resp.json()["id"]))
    assert job is not None and job.kind == JobKind.restore
    assert job.params["snapshot_id"] == str(detection.last_clean_snapshot_id)
    assert job.params["scope"]["type"] == "service"
    assert job.params["scope"]["account_id"] == str(account.id)
    assert job.params["scope"]["service"] == "onedrive"
    # Nothing clean to go back to: a clear 409, no job.
    bare = await add_detection(runtime, account, clean=False)
    refused = await client.post(
        f"/v1/tenants/{tenant.id}/detections/{bare.id}/restore", headers=msp.headers
    )
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"


async def test_thresholds_default_to_the_deployment_then_the_tenants_own(
    runtime: Runtime,
    client: httpx.AsyncClient,
    world: tuple[MspHandle, Tenant, Account, Detection],
) -> None:
    msp, tenant, _account, _detection = world
    url = f"/v1/tenants/{tenant.id}/detection-thresholds"
    default = await client.get(url, headers=msp.headers)
    assert default.status_code == 200
    assert default.json() == {
        "min_files": runtime.settings.detection_min_files,
        "min_deletions": runtime.settings.detection_min_deletions,
        "sigmas": runtime.settings.detection_sigmas,
        "source": "deployment",
    }
    for bad in (
        {"min_files": 0, "min_deletions": 10, "sigmas": 4},
        {"min_files": 5, "min_deletions": 10, "sigmas": 0.5},
        {"min_files": 5, "min_deletions": 10},
    ):
        assert (await client.put(url, json=bad, headers=msp.headers)).status_code == 422
    assert (await client.get(url, headers=msp.headers)).json()["source"] == "deployment"
    own = {"min_files": 25, "min_deletions": 400, "sigmas": 6.0}
    put = await client.put(url, json=own, headers=msp.headers)
    assert put.status_code == 200 and put.json() == {**own, "source": "tenant"}
    assert (await client.get(url, headers=msp.headers)).json() == {**own, "source": "tenant"}
