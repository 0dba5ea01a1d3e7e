"""Two MSPs with data of every kind, so each route can be tried with the other's ids."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.backup.context import open_repository
from safekeep.runtime import Runtime
from safekeep.tenants.models import (
    Account,
    DeliveryStatus,
    Detection,
    Export,
    ExportStatus,
    Item,
    ItemVersion,
    Job,
    JobKind,
    Snapshot,
    Tenant,
    WebhookDelivery,
    WebhookEndpoint,
    utcnow,
)
from safekeep.tenants.scope import system_principal
from safekeep.tenants.webhook import service as webhook_service
from tests.factories import (
    MspHandle,
    add_backup,
    add_finished_job,
    create_account,
    create_key,
    create_msp,
    create_tenant,
    ransomware_detection,
)


@dataclass
class MspWorld:
    msp: MspHandle
    tenant: Tenant
    other_tenant: Tenant  # a second tenant of the same MSP
    account: Account
    job: Job
    snapshot: Snapshot
    folder: Item
    item: Item
    version: ItemVersion
    webhook: WebhookEndpoint
    delivery: WebhookDelivery  # of ``webhook``, delivered
    export: Export
    api_key_id: uuid.UUID
    detection: Detection

    def ids(self) -> dict[str, str]:
        return {
            "tenant_id": str(self.tenant.id),
            "account_id": str(self.account.id),
            "job_id": str(self.job.id),
            "item_id": str(self.item.id),
            "export_id": str(self.export.id),
            "webhook_id": str(self.webhook.id),
            "delivery_id": str(self.delivery.id),
            "detection_id": str(self.detection.id),
            "key_id": str(self.api_key_id),
        }


async def add_onedrive_item(
    session: AsyncSession, account: Account, external_id: str, kind: str, **version: Any
) -> tuple[Item, ItemVersion]:
    """A OneDrive item of the account and its first version (seq 1, valid from now)."""
    item = Item(
        tenant_id=account.tenant_id,
        account_id=account.id,
        service="onedrive",
        external_id=external_id,
        kind=kind,
    )
    session.add(item)
    await session.flush()
    return item, add_onedrive_version(session, account, item, **version)


def add_onedrive_version(
    session: AsyncSession, account: Account, item: Item, **fields: Any
) -> ItemVersion:
    """A version of a OneDrive item of the account: the first (seq 1, valid from now) unless
    ``fields`` say otherwise."""
    version = ItemVersion(
        item_id=item.id,
        tenant_id=account.tenant_id,
        account_id=account.id,
        service="onedrive",
        kind=item.kind,
        **{"first_seq": 1, "valid_from": utcnow(), **fields},
    )
    session.add(version)
    return version


async def build_world(runtime: Runtime, name: str) -> MspWorld:
    msp = await create_msp(runtime, name)
    tenant = await create_tenant(runtime, msp, name=f"{name} client")
    other = await create_tenant(runtime, msp, name=f"{name} second client")
    account = await create_account(runtime, tenant, name=f"{name} User")
    repo = await open_repository(runtime, tenant)
    content = await repo.put_bytes(f"hello from {name}\n".encode())
    now = utcnow()
    async with runtime.db.session() as session:
        job, snapshot = await add_backup(session, account, items_total=2)
        folder, _ = await add_onedrive_item(
            session, account, f"{name}-folder", "drive_folder", name="Documents", meta={}
        )
        item, version = await add_onedrive_item(
            session,
            account,
            f"{name}-file",
            "file",
            name="hello.txt",
            parent_external_id=f"{name}-folder",
            size=content.size,
            content=content.to_json(),
            content_hash=content.sha256,
            meta={"mime_type": "text/plain"},
        )
        webhook, _secret = await webhook_service.create_endpoint(
            session,
            system_principal(msp.id),
            runtime.settings,
            url=f"https://hooks.example.com/{name}",
            events=["backup.completed"],
            description=None,
        )
        delivery = WebhookDelivery(
            endpoint_id=webhook.id,
            msp_id=msp.id,
            event_id=uuid.uuid4(),
            event_type="backup.completed",
            payload={"type": "backup.completed", "data": {}},
            status=DeliveryStatus.delivered,
            attempts=1,
            last_status_code=204,
            delivered_at=now,
        )
        session.add(delivery)
        export_job = await add_finished_job(session, tenant.id, JobKind.export)
        export = Export(
            tenant_id=tenant.id,
            job_id=export_job.id,
            status=ExportStatus.ready,
            blob_key=f"{tenant.storage_prefix}exports/{uuid.uuid4()}.zip",
            size=4,
            sha256="0" * 64,
            expires_at=now.replace(year=now.year + 1),
        )
        session.add(export)
        detection = ransomware_detection(
            account, {"suspicious_files": 12}, clean=snapshot, snapshot_id=snapshot.id
        )
        session.add(detection)
    from safekeep.tenants.api_key import service as key_service

    async with runtime.db.session() as session:
        grant = await key_service.authenticate(session, msp.key)
        assert grant is not None
        assert grant.principal.api_key_id is not None
        key_id = grant.principal.api_key_id
    return MspWorld(
        msp,
        tenant,
        other,
        account,
        job,
        snapshot,
        folder,
        item,
        version,
        webhook,
        delivery,
        export,
        key_id,
        detection,
    )


@dataclass
class Fingerprint:
    counts: dict[str, int]
    tenants: list[tuple[str, str, str]]
    keys: list[tuple[str, str]]


async def fingerprint(runtime: Runtime) -> Fingerprint:
    """Row counts of every table and the mutable state of the world's rows."""
    from sqlalchemy import func, select

    from safekeep.tenants.models import ApiKey, Base
    from safekeep.tenants.models import Tenant as TenantRow

    async with runtime.db.session() as session:
        counts = {
            name: (await session.execute(select(func.count()).select_from(table))).scalar_one()
            for name, table in Base.metadata.tables.items()
        }
        tenants = sorted(
            (str(t.id), t.name, str(t.status))
            for t in (await session.execute(select(TenantRow))).scalars()
        )
        keys = sorted(
            (str(k.id), str(k.revoked_at))
            for k in (await session.execute(select(ApiKey))).scalars()
        )
    return Fingerprint(counts, tenants, keys)


@dataclass
class World:
    a: MspWorld
    b: MspWorld
    runtime: Runtime
    before: Fingerprint | None = None

    async def key(
        self, scopes: list[str], tenant_ids: list[uuid.UUID] | None = None
    ) -> dict[str, str]:
        """A key of MSP A with these scopes (and tenant limit)."""
        secret = await create_key(self.runtime, self.a.msp, scopes, tenant_ids)
        return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def world(runtime: Runtime) -> World:
    return World(await build_world(runtime, "alpha"), await build_world(runtime, "beta"), runtime)


@pytest.fixture(scope="module")
async def module_world(module_runtime: Runtime) -> World:
    """The same two MSPs, built once for a module whose tests change nothing."""
    world = World(
        await build_world(module_runtime, "alpha"),
        await build_world(module_runtime, "beta"),
        module_runtime,
    )
    world.before = await fingerprint(module_runtime)
    return world
