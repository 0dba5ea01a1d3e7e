"""Uploads: drive files (one PUT or a session of 320 KiB-multiple fragments) and mail or
event attachments (one POST under 3 MB, a session of chunks up to 4 MB above).

Session URLs are pre-authenticated: fragments go without the token, but still through the
limits of the mailbox or tenant they write to. A fragment the session disagrees about (416)
is resumed from ``nextExpectedRanges``; a failed upload cancels its session.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from safekeep.graph.errors import GraphError
from safekeep.graph.options import Json, RequestOptions, Scope
from safekeep.graph.transport import Transport, load_json

log = logging.getLogger(__name__)

FRAGMENT_UNIT = 320 * 1024  # drive upload fragments are multiples of 320 KiB ...
DRIVE_FRAGMENT_MAX = 60 * 1024 * 1024  # ... and under 60 MiB
# Outlook refuses a request whose body passes 4 MB: "The maximum request length supported
# is 4MB." (400). A message created with its attachments counts them all.
OUTLOOK_REQUEST_MAX = 4 * 1024 * 1024
# A file attachment below Microsoft's "3 MB" goes in one POST: its base64 (under 4,000,000
# characters) and its properties stay under that limit, where 3 MiB of base64 alone fill it.
ATTACHMENT_DIRECT_MAX = 3_000_000
ATTACHMENT_CHUNK = 3 * 1024 * 1024  # attachment session chunks must be at most 4 MB

Conflict = Literal["fail", "replace", "rename"]


@dataclass(frozen=True)
class Session:
    """An open upload session: its URL and the limits its fragments count against."""

    url: str
    scope: Scope
    mailbox: str | None = None

    def options(self, **changes: object) -> RequestOptions:
        base = RequestOptions(auth=False, scope=self.scope, mailbox=self.mailbox)
        return base.but(**changes)


# -- drive files -----------------------------------------------------------------------------


async def drive_file(
    transport: Transport,
    item_path: str,
    size: int,
    chunks: AsyncIterable[bytes],
    *,
    conflict: Conflict,
    small_limit: int,
    fragment_size: int,
    mailbox: str | None,
) -> Json:
    if size <= small_limit:
        data = b"".join([chunk async for chunk in chunks])
        check_size(len(data), size)
        body = await transport.json(
            "PUT",
            f"{item_path}/content",
            RequestOptions(
                content=data,
                mailbox=mailbox,
                params={"@microsoft.graph.conflictBehavior": conflict},
                headers={"Content-Type": "application/octet-stream"},
                expected=(200, 201),
            ),
        )
        transport.stats.bytes_uploaded += len(data)
        return body or {}
    session = Session(await drive_session(transport, item_path, conflict, mailbox), "sharepoint")
    try:
        return await to_drive_session(
            transport, session.url, size, chunks, fragment_size=fragment_size, resume=False
        )
    except BaseException:
        await cancel(transport, session)
        raise


def drive_item_path(drive_id: str, parent_id: str, name: str) -> str:
    drive, parent = quote(drive_id, safe=""), quote(parent_id, safe="")
    return f"/drives/{drive}/items/{parent}:/{quote(name, safe='')}:"


async def drive_session(
    transport: Transport, item_path: str, conflict: Conflict, mailbox: str | None
) -> str:
    session = await transport.json(
        "POST",
        f"{item_path}/createUploadSession",
        RequestOptions(
            mailbox=mailbox,
            expected=(200,),
            json={"item": {"@microsoft.graph.conflictBehavior": conflict}, "deferCommit": False},
            idempotent=True,
        ),
    )
    upload_url = str((session or {}).get("uploadUrl") or "")
    if not upload_url:
        raise GraphError(200, "NoUploadUrl", "createUploadSession gave no uploadUrl")
    return upload_url


async def to_drive_session(
    transport: Transport,
    upload_url: str,
    size: int,
    chunks: AsyncIterable[bytes],
    *,
    fragment_size: int,
    resume: bool,
) -> Json:
    if fragment_size % FRAGMENT_UNIT or not 0 < fragment_size < DRIVE_FRAGMENT_MAX:
        raise ValueError("fragment_size must be a multiple of 320 KiB below 60 MiB")
    session = Session(upload_url, "sharepoint")
    start = 0
    if resume:
        start = await _next_expected(transport, session) or 0
    fragments = rechunk(_skip(chunks, start), fragment_size)
    _, item = await _send_fragments(transport, session, size, fragments, start=start)
    return item or {}


# -- mail and event attachments --------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    """A file attachment to create: what Graph's fileAttachment and AttachmentItem need."""

    name: str
    content_type: str
    size: int
    is_inline: bool = False
    content_id: str | None = None

    def properties(self, extra: Json) -> Json:
        """``extra`` plus what a fileAttachment and an upload session's AttachmentItem both
        say of the file (``contentId`` only when there is one: Graph rejects an empty one)."""
        item: Json = {
            **extra,
            "name": self.name,
            "contentType": self.content_type,
            "isInline": self.is_inline,
        }
        if self.content_id:
            item["contentId"] = self.content_id
        return item


async def mail_attachment(
    transport: Transport,
    user_id: str,
    parent: str,
    attachment: Attachment,
    data: bytes | AsyncIterable[bytes],
) -> str | None:
    if attachment.size < ATTACHMENT_DIRECT_MAX:
        raw = data if isinstance(data, bytes) else b"".join([c async for c in data])
        return await _direct_attachment(transport, user_id, parent, attachment, raw)
    item = attachment.properties({"attachmentType": "file", "size": attachment.size})
    created = await transport.json(
        "POST",
        f"{parent}/attachments/createUploadSession",
        RequestOptions(
            mailbox=user_id, json={"AttachmentItem": item}, expected=(201, 200), idempotent=True
        ),
    )
    upload_url = str((created or {}).get("uploadUrl") or "")
    if not upload_url:
        raise GraphError(201, "NoUploadUrl", "createUploadSession gave no uploadUrl")
    session = Session(upload_url, "exchange", user_id)
    source: AsyncIterable[bytes] = _once(data) if isinstance(data, bytes) else data
    try:
        location, _ = await _send_fragments(
            transport, session, attachment.size, rechunk(source, ATTACHMENT_CHUNK)
        )
    except BaseException:
        await cancel(transport, session)
        raise
    found = re.search(r"Attachments\('([^']+)'\)", location or "")
    return found.group(1) if found else None


async def _direct_attachment(
    transport: Transport, user_id: str, parent: str, attachment: Attachment, raw: bytes
) -> str | None:
    check_size(len(raw), attachment.size)
    body = attachment.properties(
        {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "contentBytes": base64.b64encode(raw).decode("ascii"),
        }
    )
    created = await transport.json(
        "POST",
        f"{parent}/attachments",
        RequestOptions(json=body, mailbox=user_id, expected=(201, 200)),
    )
    transport.stats.bytes_uploaded += len(raw)
    return str(created["id"]) if created and created.get("id") else None


# -- sessions --------------------------------------------------------------------------------


async def _send_fragments(
    transport: Transport,
    session: Session,
    size: int,
    fragments: AsyncIterator[bytes],
    *,
    start: int = 0,
) -> tuple[str | None, Json | None]:
    """PUT each fragment in order; return the final answer's Location and JSON body."""
    offset = start
    final: tuple[str | None, Json | None] | None = None
    async for fragment in fragments:
        if offset + len(fragment) > size:
            raise ValueError(f"more data than the declared size {size}")
        final = await _put_fragment(transport, session, fragment, offset, size)
        offset += len(fragment)
    check_size(offset, size)
    if final is None:
        raise GraphError(0, "UploadIncomplete", "the upload session did not complete")
    return final


async def _put_fragment(
    transport: Transport, session: Session, fragment: bytes, start: int, total: int
) -> tuple[str | None, Json | None] | None:
    """Send ``fragment`` (at ``start``); None while the upload continues."""
    pos = 0
    disagreements = 0
    while pos < len(fragment):
        part = fragment[pos:]
        first = start + pos
        headers = {
            "Content-Range": f"bytes {first}-{first + len(part) - 1}/{total}",
            "Content-Type": "application/octet-stream",
        }
        options = session.options(content=part, headers=headers, idempotent=True)
        async with transport.open("PUT", session.url, options) as resp:
            raw = await transport.read(resp)
        status = resp.status_code
        if status in (200, 201, 202):
            transport.stats.bytes_uploaded += len(part)
            if first + len(part) < total:
                return None
            body = load_json(raw) if raw.strip() else None
            return resp.headers.get("location"), body if isinstance(body, dict) else None
        if status != 416 or disagreements >= 3:
            raise transport.error(resp, raw, "PUT")
        # 416: part of this range already arrived (an earlier attempt got through
        # unseen), or not all of the previous one did; the session says which.
        disagreements += 1
        expected = await _next_expected(transport, session)
        if expected is None or not start <= expected <= start + len(fragment):
            raise GraphError(
                416, "invalidRange", f"upload session expects byte {expected}, cannot resume there"
            )
        pos = expected - start
    return None


async def _next_expected(transport: Transport, session: Session) -> int | None:
    status = await transport.json("GET", session.url, session.options(expected=(200,)))
    ranges = (status or {}).get("nextExpectedRanges") or []
    if not ranges:
        return None
    head = str(ranges[0]).split("-", 1)[0]
    return int(head) if head.isdigit() else None


async def cancel(transport: Transport, session: Session) -> None:
    try:
        await asyncio.shield(
            transport.json("DELETE", session.url, session.options(expected=(200, 204, 404)))
        )
    except Exception:  # the session expires by itself; the original error matters more
        log.info("could not cancel upload session", exc_info=True)


# -- byte streams ----------------------------------------------------------------------------


def check_size(actual: int, declared: int) -> None:
    if actual != declared:
        raise ValueError(f"got {actual} bytes, declared {declared}")


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _skip(source: AsyncIterable[bytes], count: int) -> AsyncIterator[bytes]:
    """Drop the first ``count`` bytes of a stream (those an upload session already has)."""
    async for chunk in source:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        yield chunk[count:] if count else chunk
        count = 0


async def rechunk(source: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """Regroup arbitrary chunks into pieces of exactly ``size`` bytes (the last one shorter)."""
    buffer = bytearray()
    async for chunk in source:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)
