"""What every fault trial checks: graphsim's drives and the catalog's latest view agree.

Nothing missing (every live file and folder has an open version), nothing duplicated (one open
version per item, one item per Graph id), nothing stale (names, paths and hashes are today's),
and the stored bytes, read back through the blob store and decrypted, hash to graphsim's.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import func, select

from graphsim import Simulator
from safekeep.backup.context import open_repository
from safekeep.backup.services.onedrive import SERVICE
from safekeep.tenants.models import Item, ItemVersion, Snapshot, Tenant
from tests.e2e.conftest import Deployment

SERVICE_NAME = "onedrive"


@dataclass
class Compared:
    files: int
    folders: int
    bytes_read: int


def graphsim_drives(sim: Simulator) -> dict[str, dict[str, tuple[str, str, str | None]]]:
    """Graph id -> (kind, path, sha256 or None) of every live item, per drive owner's id."""
    tenant = sim.tenant()
    out: dict[str, dict[str, tuple[str, str, str | None]]] = {}
    for user in tenant.users.values():
        drive = tenant.drives.get(user.drive_id or "")
        if drive is None:
            continue
        items: dict[str, tuple[str, str, str | None]] = {}
        for item in drive.items.values():
            if item.deleted or item.parent_id is None:
                continue
            if item.is_folder:
                items[item.id] = ("drive_folder", drive.path_of(item), None)
            else:
                assert item.content is not None
                items[item.id] = ("file", drive.path_of(item), item.content.hashes()[1].lower())
        out[user.id] = items
    return out


async def assert_catalog_matches_graphsim(
    deployment: Deployment, tenant_id: uuid.UUID | str
) -> Compared:
    """The deployment's catalog for the tenant against its simulator's drives, as above."""
    runtime = deployment.runtime
    tenant_uuid = uuid.UUID(str(tenant_id))
    truth = graphsim_drives(deployment.sim)
    async with runtime.db.session() as session:
        tenant = await session.get(Tenant, tenant_uuid)
        assert tenant is not None
        rows = (
            await session.execute(
                select(Item.external_id, ItemVersion)
                .join(ItemVersion, ItemVersion.item_id == Item.id)
                .where(
                    ItemVersion.tenant_id == tenant_uuid,
                    ItemVersion.service == SERVICE_NAME,
                    ItemVersion.last_seq.is_(None),
                )
            )
        ).all()
        per_graph_id = (
            await session.execute(
                select(Item.external_id, func.count())
                .where(Item.tenant_id == tenant_uuid, Item.service == SERVICE_NAME)
                .group_by(Item.external_id)
            )
        ).all()
        snapshots = (
            (await session.execute(select(Snapshot).where(Snapshot.tenant_id == tenant_uuid)))
            .scalars()
            .all()
        )
    assert snapshots and all(s.status == "complete" for s in snapshots), [
        (s.seq, s.status) for s in snapshots
    ]
    duplicates = {ext: n for ext, n in Counter(ext for ext, _ in rows).items() if n > 1}
    assert not duplicates, f"items with several open versions: {duplicates}"
    twins = {ext: n for ext, n in per_graph_id if n > 1}
    assert not twins, f"Graph ids stored as several items: {twins}"
    stored = {ext: version for ext, version in rows}
    expected = {ext: value for drive in truth.values() for ext, value in drive.items()}
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    assert not missing, f"{len(missing)} items in graphsim missing from the backup: {missing[:5]}"
    assert not extra, f"{len(extra)} items in the backup that graphsim no longer has: {extra[:5]}"
    repo = await open_repository(runtime, tenant)
    files = folders = read = 0
    for ext, (kind, path, sha) in expected.items():
        version = stored[ext]
        assert version.kind == kind, (ext, version.kind, kind)
        assert version.meta["path"] == path, f"stale path for {ext}: {version.meta['path']}"
        if kind == "drive_folder":
            folders += 1
            continue
        files += 1
        assert version.content_hash == sha, f"stale content recorded for {path}"
        content = await SERVICE.content(repo, version)
        digest = hashlib.sha256()
        async for chunk in content.open(0, None):
            digest.update(chunk)
            read += len(chunk)
        assert digest.hexdigest() == sha, f"stored bytes of {path} differ from graphsim's"
    return Compared(files=files, folders=folders, bytes_read=read)
