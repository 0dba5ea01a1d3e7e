"""Browse: folders, items and versions as they were at a point in time; original bytes."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse

from safekeep.api.auth import ReadPrincipal
from safekeep.api.deps import ClientIp, RuntimeDep, SessionDep
from safekeep.api.head import head_only
from safekeep.api.items.schemas import (
    ItemListing,
    ItemOut,
    ItemVersions,
    SnapshotRef,
    VersionOut,
)
from safekeep.api.policy.schemas import Service, described
from safekeep.api.problems import responses
from safekeep.api.ranges import parse_range, started
from safekeep.api.schemas import BINARY, Cursor, Limit, Paging
from safekeep.backup import browse
from safekeep.backup.services import module_for
from safekeep.disposition import content_disposition
from safekeep.tenants.audit import service as audit
from safekeep.tenants.models import Account, Item, ItemVersion

router = APIRouter(prefix="/v1/tenants/{tenant_id}/accounts/{account_id}/items", tags=["Browse"])

At = Annotated[
    str | None,
    Query(
        max_length=64,
        description="A timestamp (ISO 8601) or a snapshot id; default: the latest backup",
    ),
]


def _links(account: Account, item: Item, version: ItemVersion) -> dict[str, str]:
    base = f"/v1/tenants/{account.tenant_id}/accounts/{account.id}/items/{item.id}"
    return {
        "self": base,
        "versions": f"{base}/versions",
        "content": f"{base}/content?version={version.id}",
    }


def item_out(account: Account, item: Item, version: ItemVersion, folder_path: str) -> ItemOut:
    return ItemOut(
        id=item.id,
        external_id=item.external_id,
        folder_path=folder_path,
        version_id=version.id,
        kind=version.kind,
        name=version.name,
        is_folder=version.kind in module_for(version.service).folder_kinds,
        size=version.size,
        modified_at=version.modified_at,
        meta=version.meta,
        valid_from=version.valid_from,
        valid_to=version.valid_to,
        links=_links(account, item, version),
    )


@router.get("", response_model=ItemListing, responses=responses(400, 401, 403, 404, 422))
async def list_items(
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    principal: ReadPrincipal,
    session: SessionDep,
    service: Service = Query(description=described()),
    at: At = None,
    folder: uuid.UUID | None = Query(None, description="A folder's item id; default: the root"),
    cursor: Cursor = None,
    limit: Limit = 100,
) -> ItemListing:
    """The folders and items directly under `folder`, as they were at `at`, by name (its
    first 200 characters, then the item id)."""
    account = await browse.load_account(session, principal.scope, tenant_id, account_id)
    listing = await browse.list_children(
        session,
        principal.scope,
        account,
        service,
        at=browse.parse_at(at),
        folder_id=folder,
        cursor=cursor,
        limit=limit,
    )
    seq = listing.point.seq
    paths = browse.FolderPaths(session, principal.scope, account.id, service)

    async def path(parent: str | None) -> str:
        return await paths.path(parent, seq)

    folder_out = None
    inside = "/"
    if listing.folder:
        folder_item, folder_version = listing.folder
        folder_out = item_out(
            account, folder_item, folder_version, await path(folder_version.parent_external_id)
        )
        inside = await path(folder_item.external_id)
    return ItemListing(
        snapshot=SnapshotRef.model_validate(listing.point.snapshot),
        service=service,
        folder=folder_out,
        items=[item_out(account, i, v, inside) for i, v in listing.entries],
        next_cursor=listing.next_cursor,
    )


@router.get("/{item_id}", response_model=ItemOut, responses=responses(401, 403, 404, 422))
async def get_item(
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    item_id: uuid.UUID,
    principal: ReadPrincipal,
    session: SessionDep,
    at: At = None,
) -> ItemOut:
    account = await browse.load_account(session, principal.scope, tenant_id, account_id)
    item, version = await browse.item_at(
        session, principal.scope, account, item_id, at=browse.parse_at(at)
    )
    paths = browse.FolderPaths(session, principal.scope, account.id, item.service)
    path = await paths.path(version.parent_external_id, version.first_seq)
    return item_out(account, item, version, path)


@router.get(
    "/{item_id}/versions",
    response_model=ItemVersions,
    responses=responses(400, 401, 403, 404, 422),
)
async def list_versions(
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    item_id: uuid.UUID,
    principal: ReadPrincipal,
    session: SessionDep,
    paging: Paging,
) -> ItemVersions:
    """The item's versions, newest first, with the snapshots each was valid in, a page at a
    time (pass `next_cursor` back as `cursor`; null on the last page)."""
    account = await browse.load_account(session, principal.scope, tenant_id, account_id)
    found = await browse.versions(
        session, principal.scope, account, item_id, cursor=paging.cursor, limit=paging.limit
    )
    item, rows = found.item, found.versions
    paths = browse.FolderPaths(session, principal.scope, account.id, item.service)
    folder_paths = [await paths.path(v.parent_external_id, v.first_seq) for v in rows]
    return ItemVersions(
        item_id=item.id,
        external_id=item.external_id,
        service=item.service,
        kind=item.kind,
        versions=[
            VersionOut(
                id=v.id,
                folder_path=folder_path,
                first_seq=v.first_seq,
                last_seq=v.last_seq,
                valid_from=v.valid_from,
                valid_to=v.valid_to,
                name=v.name,
                size=v.size,
                modified_at=v.modified_at,
                content_sha256=v.content_hash,
                meta=v.meta,
            )
            for v, folder_path in zip(rows, folder_paths, strict=True)
        ],
        next_cursor=found.next_cursor,
    )


@router.get(
    "/{item_id}/content",
    response_class=StreamingResponse,
    responses={
        # A binary schema, so that generated clients hand the bytes over instead of dropping them.
        200: {"description": "The original bytes", "content": {"application/octet-stream": BINARY}},
        206: {
            "description": "The requested range",
            "content": {"application/octet-stream": BINARY},
        },
        **responses(401, 403, 404, 416, 422),
    },
)
async def get_content(
    request: Request,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    item_id: uuid.UUID,
    principal: ReadPrincipal,
    session: SessionDep,
    runtime: RuntimeDep,
    ip: ClientIp,
    version: uuid.UUID | None = Query(None, description="A version id; default: at `at`"),
    at: At = None,
    range_header: Annotated[str | None, Header(alias="Range", include_in_schema=False)] = None,
) -> Response:
    """The original bytes: MIME for mail, the file for OneDrive and SharePoint, ICS for an
    event, VCF for a contact. Files support Range. Every download is audited."""
    account = await browse.load_account(session, principal.scope, tenant_id, account_id)
    item, row = await browse.item_at(
        session, principal.scope, account, item_id, at=browse.parse_at(at), version_id=version
    )
    content = await browse.content(runtime, session, account, row)
    headers = {
        "ETag": f'"{content.etag}"',
        "Content-Disposition": content_disposition(content.filename),
    }
    status = 200
    start, end = 0, None
    if content.rangeable and content.size is not None:
        headers["Accept-Ranges"] = "bytes"
        wanted = parse_range(range_header, content.size)
        if_range = request.headers.get("if-range")
        if wanted and (if_range is None or if_range.strip() == headers["ETag"]):
            start, end = wanted
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{content.size}"
            headers["Content-Length"] = str(end - start + 1)
        else:
            headers["Content-Length"] = str(content.size)
    elif content.size is not None:
        headers["Content-Length"] = str(content.size)
    if head_only(request):  # the headers a download would have; nothing read, nothing audited
        return Response(status_code=status, media_type=content.media_type, headers=headers)
    await audit.record_for(
        session,
        principal,
        "item.downloaded",
        tenant_id=tenant_id,
        target_type="item_version",
        target_id=row.id,
        details={"item_id": str(item.id), "name": row.name, "range": headers.get("Content-Range")},
        ip=ip,
    )
    body = await started(content.open(start, end))  # a store that fails, fails before the 200
    return StreamingResponse(
        body, status_code=status, media_type=content.media_type, headers=headers
    )
