"""From catalog versions to search documents, and indexing that never fails a backup.

Each service's ``search_fields`` derives the searchable text of a version from its bytes.
Collectors call it on the bytes they have in hand, and the retry job calls it on bytes read
back from the blob store: one way to build a document.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from safekeep.backup.context import open_repository
from safekeep.runtime import Runtime, unit_of_work
from safekeep.search.documents import SearchDocument
from safekeep.storage.repository import ContentRef, TenantRepository
from safekeep.tenants import outbox
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import ItemVersion, Tenant

if TYPE_CHECKING:
    # Annotations only: the catalog writer imports this module to index what it writes.
    from safekeep.backup.catalog import SearchFields, SnapshotRun

log = structlog.get_logger(__name__)


def search_document(
    msp_id: uuid.UUID, version: ItemVersion, fields: SearchFields
) -> SearchDocument:
    return SearchDocument(
        version_id=str(version.id),
        msp_id=str(msp_id),
        tenant_id=str(version.tenant_id),
        account_id=str(version.account_id),
        service=version.service,
        item_id=str(version.item_id),
        folder_path=fields.folder_path or "/",
        kind=version.kind,
        title=fields.title or version.name,
        valid_from=version.valid_from,
        valid_to=version.valid_to,
        date=fields.date or version.modified_at,
        size=version.size,
        sender=fields.sender,
        recipients=fields.recipients,
        people=fields.people,
        location=fields.location,
        body=fields.body,
        attachment_names=fields.attachment_names,
        attachment_text=fields.attachment_text,
        has_attachments=fields.has_attachments,
        file_type=fields.file_type,
    )


# Versions one ``index_versions`` message carries.
INDEX_BATCH = 500


def send_to_index(tenant_id: str, version_ids: Sequence[str]) -> None:
    """Enqueue ``index_versions`` for these versions of one tenant, in bounded messages (in
    the caller's unit of work: they are sent once it commits)."""
    for start in range(0, len(version_ids), INDEX_BATCH):
        outbox.enqueue("index_versions", tenant_id, list(version_ids[start : start + INDEX_BATCH]))


async def index_after_commit(
    run: SnapshotRun,
    docs: Sequence[SearchDocument],
    closed: Sequence[uuid.UUID],
    dropped: Sequence[uuid.UUID],
) -> None:
    """Send a committed page's changes to the search backend. The versions indexed are
    marked so in the run's next transaction (``SnapshotRun.indexed``), not in one of their
    own; if the run stops first, the scheduler's sweep sends them again (``reindex_stale``)."""
    if not (docs or closed or dropped):
        return
    tenant = str(run.tenant_id)
    try:
        backend = await run.runtime.search_backend()
        if docs:
            await backend.index(docs)
        if closed:
            await backend.close_versions(tenant, [str(v) for v in closed], run.started_at)
        if dropped:
            await backend.delete_versions(tenant, [str(v) for v in dropped])
    except Exception as exc:
        log.warning("index_deferred", tenant_id=tenant, error=str(exc)[:300])
        ids = [d.version_id for d in docs] + [str(v) for v in (*closed, *dropped)]
        async with unit_of_work(run.runtime):
            send_to_index(tenant, ids)
        return
    run.indexed(uuid.UUID(d.version_id) for d in docs)


async def _fields_for(repo: TenantRepository, version: ItemVersion) -> SearchFields | None:
    from safekeep.backup.services import module_for

    document = None
    if version.document:
        document = json.loads(await repo.read_bytes(ContentRef.from_json(version.document)))

    async def content() -> bytes | None:
        if not version.content:
            return None
        return await repo.read_bytes(ContentRef.from_json(version.content))

    return await module_for(version.service).search_fields(version, document, content)


async def index_pending(runtime: Runtime, tenant_id: str, version_ids: Sequence[str]) -> None:
    """The retry job: bring these versions' documents in line with the catalog."""
    ids = {uuid.UUID(v) for v in version_ids}
    async with unit_of_work(runtime) as session:
        tenant = await session.get(Tenant, uuid.UUID(tenant_id))
        if tenant is None:
            return
        versions = await catalog.versions_by_ids(session, tenant.id, ids)
    repo = await open_repository(runtime, tenant)
    backend = await runtime.search_backend()
    docs = []
    for version in versions:
        fields = await _fields_for(repo, version)
        if fields is not None:
            docs.append(search_document(tenant.msp_id, version, fields))
    gone = ids - {v.id for v in versions}
    if docs:
        await backend.index(docs)
    if gone:
        await backend.delete_versions(tenant_id, [str(v) for v in gone])
    async with unit_of_work(runtime) as session:
        # Every version read here is now in line with the index, those with no document too.
        await catalog.mark_indexed(session, [v.id for v in versions])
