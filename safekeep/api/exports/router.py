from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from safekeep.api.auth import ExportPrincipal, ReadPrincipal
from safekeep.api.deps import ClientIp, RuntimeDep, SessionDep
from safekeep.api.exports.schemas import DownloadUrl, ExportOut, ExportRequest
from safekeep.api.head import head_only
from safekeep.api.idempotency import idempotent
from safekeep.api.problems import responses
from safekeep.api.ranges import parse_range, started
from safekeep.api.schemas import BINARY, Page, Paging, page_of
from safekeep.backup.jobs import service as job_requests
from safekeep.disposition import content_disposition
from safekeep.errors import Conflict, Gone
from safekeep.instants import as_utc
from safekeep.storage.errors import BlobNotFound
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import Export, utcnow
from safekeep.tenants.tenant import service as tenant_service

router = APIRouter(tags=["Export"])

URL_TTL_SECONDS = 3600
READ_SIZE = 1024 * 1024


def export_out(export: Export) -> ExportOut:
    base = f"/v1/exports/{export.id}"
    return ExportOut(
        id=export.id,
        tenant_id=export.tenant_id,
        job_id=export.job_id,
        status=export.status,
        size=export.size,
        sha256=export.sha256,
        items=export.items,
        options=export.options,
        created_at=export.created_at,
        expires_at=export.expires_at,
        links={
            "self": base,
            "download": f"{base}/download",
            "url": f"{base}/url",
            "job": f"/v1/jobs/{export.job_id}",
        },
    )


@router.post(
    "/v1/tenants/{tenant_id}/exports",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExportOut,
    responses=responses(401, 403, 404, 409, 422),
)
@idempotent(202)
async def create_export(
    tenant_id: uuid.UUID,
    body: ExportRequest,
    principal: ExportPrincipal,
    session: SessionDep,
    ip: ClientIp,
) -> ExportOut:
    """Build a ZIP of the scope as of a point in time: mail as .eml (and .mbox on request),
    events as .ics, contacts as .vcf, files as themselves, and a manifest with hashes."""
    export = await job_requests.request_export(
        session, principal, tenant_id, body.model_dump(mode="json"), ip=ip
    )
    return export_out(export)


@router.get(
    "/v1/tenants/{tenant_id}/exports",
    response_model=Page[ExportOut],
    responses=responses(400, 401, 403, 404, 422),
)
async def list_exports(
    tenant_id: uuid.UUID,
    principal: ReadPrincipal,
    session: SessionDep,
    paging: Paging,
) -> Page[ExportOut]:
    await tenant_service.get(session, principal.scope, tenant_id)
    page = await paging.read(catalog.list_exports, session, principal.scope, tenant_id)
    return page_of(page, export_out)


@router.get(
    "/v1/exports/{export_id}", response_model=ExportOut, responses=responses(401, 403, 404, 422)
)
async def get_export(
    export_id: uuid.UUID, principal: ReadPrincipal, session: SessionDep
) -> ExportOut:
    return export_out(await job_requests.get_export(session, principal.scope, export_id))


@router.get(
    "/v1/exports/{export_id}/download",
    response_class=StreamingResponse,
    responses={
        # A binary schema, so that generated clients hand the bytes over instead of dropping them.
        200: {"description": "The ZIP", "content": {"application/zip": BINARY}},
        206: {"description": "The requested range", "content": {"application/zip": BINARY}},
        307: {"description": "Redirect to a pre-signed URL (with redirect=true on S3)"},
        **responses(401, 403, 404, 409, 410, 416, 422),
    },
)
async def download_export(
    request: Request,
    export_id: uuid.UUID,
    principal: ExportPrincipal,
    session: SessionDep,
    runtime: RuntimeDep,
    ip: ClientIp,
    redirect: bool = Query(
        False, description="Redirect to a pre-signed URL where the store has them"
    ),
    range_header: Annotated[str | None, Header(alias="Range", include_in_schema=False)] = None,
) -> object:
    """The ZIP, resumable with Range requests (or a redirect to a pre-signed URL)."""
    # A HEAD's redirect hands out the pre-signed URL in its Location: as good as the bytes.
    how = "redirect" if redirect else None if head_only(request) else "api"
    export = await job_requests.export_for_download(session, principal, export_id, ip=ip, how=how)
    store = await runtime.blobs()
    assert export.blob_key is not None
    assert export.size is not None
    if redirect:
        url = await store.presigned_get_url(
            export.blob_key, url_ttl(export), filename=f"export-{export.id}.zip"
        )
        if url:
            return RedirectResponse(url, status_code=307)
    etag = f'"{export.sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(f"export-{export.id}.zip"),
    }
    start, end, code = 0, export.size - 1, 200
    wanted = parse_range(range_header, export.size)
    if wanted and request.headers.get("if-range", etag).strip() == etag:
        start, end = wanted
        code = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{export.size}"
    headers["Content-Length"] = str(end - start + 1 if export.size else 0)
    key = export.blob_key

    async def body() -> AsyncIterator[bytes]:
        position = start
        while position <= end:
            last = min(end, position + READ_SIZE - 1)
            yield await store.get_range(key, position, last)
            position = last + 1

    # Whether the ZIP is still stored is known before the answer starts: one gone (expired by
    # the sweep meanwhile, removed by hand) is a 410, not a 200 cut off after its head.
    try:
        if head_only(request):
            await store.size(key)
            return Response(status_code=code, media_type="application/zip", headers=headers)
        stream = await started(body())
    except BlobNotFound:
        raise Gone("This export's archive is no longer stored; ask for a new one") from None
    return StreamingResponse(
        stream, status_code=code, media_type="application/zip", headers=headers
    )


@router.get(
    "/v1/exports/{export_id}/url",
    response_model=DownloadUrl,
    responses=responses(401, 403, 404, 409, 410, 422),
)
async def export_url(
    request: Request,
    export_id: uuid.UUID,
    principal: ExportPrincipal,
    session: SessionDep,
    runtime: RuntimeDep,
    ip: ClientIp,
) -> DownloadUrl:
    """A pre-signed URL to the ZIP in the object store (S3 stores only), valid for an hour
    or until the export expires, whichever comes first."""
    how = None if head_only(request) else "presigned_url"
    export = await job_requests.export_for_download(session, principal, export_id, ip=ip, how=how)
    store = await runtime.blobs()
    assert export.blob_key is not None
    ttl = url_ttl(export)
    url = await store.presigned_get_url(export.blob_key, ttl, filename=f"export-{export.id}.zip")
    if url is None:
        raise Conflict("This deployment's blob store has no pre-signed URLs; use /download")
    return DownloadUrl(url=url, expires_at=utcnow() + timedelta(seconds=ttl))


def url_ttl(export: Export) -> int:
    """How long a pre-signed URL to the export lives: an hour, and never past the export's
    own expiry (the URL is as good as the bytes, which the API stops serving then)."""
    if export.expires_at is None:
        return URL_TTL_SECONDS
    left = (as_utc(export.expires_at) - utcnow()).total_seconds()
    return max(1, min(URL_TTL_SECONDS, int(left)))
