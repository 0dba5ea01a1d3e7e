"""What a browser shows of a message (``meta``) and what search indexes (``search_fields``).

Both are derived from the same two sources, the Graph JSON kept as the version's document
and the MIME kept as its content, so that a version indexed by the collector (bytes in hand)
and one re-indexed later by the retry job (bytes read back) get the same document.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import uuid
from datetime import datetime
from typing import Any

from safekeep.backup.catalog import SearchFields
from safekeep.backup.services.base import ContentReader
from safekeep.backup.services.mail import mime
from safekeep.search.extract import TEXTS, extract_text, file_type_of, html_to_text
from safekeep.settings import settings
from safekeep.tenants.models import ItemVersion

MESSAGE = "message"
FOLDER = "mail_folder"

# Attachment text is extracted only from types that carry text, and only below this size:
# a 40 MB scan adds little to search and a lot to a backup's CPU time.
EXTRACT_MAX_BYTES = 4 * 1024 * 1024
# Messages above this are not parsed for attachment text at all (subject, people and body
# still come from the JSON), so a 150 MB message is never held whole for indexing.
PARSE_MAX_BYTES = 40 * 1024 * 1024
TEXT_BEARING = frozenset(
    {"txt", "text", "csv", "tsv", "md", "log", "json", "xml", "html", "htm", "ics", "vcf"}
    | {"docx", "xlsx", "pptx", "pdf"}
)


def parse_when(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def address(value: Any) -> dict[str, str] | None:
    """``{"emailAddress": {"name", "address"}}`` as ``{"name", "address"}``."""
    if not isinstance(value, dict):
        return None
    inner = value.get("emailAddress") or {}
    name, addr = str(inner.get("name") or ""), str(inner.get("address") or "")
    if not (name or addr):
        return None
    return {"name": name, "address": addr}


def addresses(values: Any) -> list[dict[str, str]]:
    found = [address(v) for v in values or []]
    return [a for a in found if a is not None]


def display(addr: dict[str, str]) -> str:
    name, email = addr.get("name", ""), addr.get("address", "")
    if name and email and name != email:
        return f"{name} <{email}>"
    return email or name


def attachment_kind(att: dict[str, Any]) -> str:
    odata = str(att.get("@odata.type") or mime.FILE_ATTACHMENT)
    return {
        mime.FILE_ATTACHMENT: "file",
        mime.ITEM_ATTACHMENT: "item",
        mime.REFERENCE_ATTACHMENT: "reference",
    }.get(odata, "file")


def message_meta(message: dict[str, Any], folder_path: str) -> dict[str, Any]:
    """The small fields the browse API shows for a message (see the package docstring)."""
    flag = message.get("flag") or {}
    return {
        "subject": message.get("subject") or "",
        "from": address(message.get("from") or message.get("sender")),
        "to": addresses(message.get("toRecipients")),
        "cc": addresses(message.get("ccRecipients")),
        "bcc": addresses(message.get("bccRecipients")),
        "received_at": message.get("receivedDateTime"),
        "sent_at": message.get("sentDateTime"),
        "is_read": bool(message.get("isRead", False)),
        "is_draft": bool(message.get("isDraft", False)),
        "importance": message.get("importance") or "normal",
        "flag": flag.get("flagStatus") or "notFlagged",
        "categories": list(message.get("categories") or []),
        "internet_message_id": message.get("internetMessageId"),
        "conversation_id": message.get("conversationId"),
        "has_attachments": bool(message.get("hasAttachments", False)),
        "attachments": [
            {
                "name": att.get("name") or "",
                "content_type": att.get("contentType"),
                "size": int(att.get("size") or 0),
                "is_inline": bool(att.get("isInline", False)),
                "kind": attachment_kind(att),
            }
            for att in message.get("attachments") or []
        ],
        "folder_path": folder_path,
        "body_preview": (message.get("bodyPreview") or "")[:255],
    }


def body_text(message: dict[str, Any]) -> str:
    body = message.get("body") or {}
    content = str(body.get("content") or "")
    if str(body.get("contentType") or "text").lower() == "html":
        return html_to_text(content)
    return content


def _text_bearing(name: str | None, content_type: str) -> bool:
    return file_type_of(name or "", content_type) in TEXT_BEARING


def _part_text(part: mime.EncodedAttachment, limit: int) -> str:
    data = part.decoded_within(EXTRACT_MAX_BYTES)
    if data is None:
        return ""
    return extract_text(part.name or "", part.content_type, data, limit=limit)


def _attachment_text(raw: bytes, limit: int, tenant_id: uuid.UUID) -> str:
    """Text of the text-bearing attachments parsed out of the MIME, at most ``limit`` chars:
    each attachment's text (read up to ``limit``) cut to what is left of it.

    An attachment's text depends on its bytes as encoded in the MIME, its type (by name and
    content type, the charset included) and ``limit``: with the tenant, the key of its text in
    ``TEXTS``. One seen before costs a SHA-256 of its encoded bytes instead of
    decoding and reading it, wherever it stands among the message's attachments."""
    texts: list[str] = []
    budget = limit
    for part in mime.encoded_file_attachments(raw, _text_bearing, EXTRACT_MAX_BYTES):
        if budget <= 0:
            break
        key = (
            "attachment",
            tenant_id,
            hashlib.sha256(part.encoded).digest(),
            part.transfer_encoding,
            file_type_of(part.name or "", part.content_type),
            part.content_type,
            limit,
        )
        text = TEXTS.text(key, functools.partial(_part_text, part, limit))[:budget]
        if text:
            texts.append(text)
            budget -= len(text) + 1
    return "\n".join(texts)


def _fields(
    version: ItemVersion, message: dict[str, Any] | None, raw: bytes | None
) -> SearchFields:
    meta = version.meta or {}
    limit = settings.search_body_max_chars
    if message is None:
        return SearchFields(title=version.name, folder_path=meta.get("folder_path") or "/")
    sender = address(message.get("from") or message.get("sender"))
    recipients = [
        display(a)
        for key in ("toRecipients", "ccRecipients", "bccRecipients")
        for a in addresses(message.get(key))
    ]
    attachments = message.get("attachments") or []
    names = [str(a.get("name")) for a in attachments if a.get("name")]
    return SearchFields(
        title=str(message.get("subject") or version.name),
        folder_path=meta.get("folder_path") or "/",
        date=parse_when(message.get("receivedDateTime")) or version.modified_at,
        sender=display(sender) if sender else None,
        recipients=recipients,
        body=body_text(message)[:limit],
        attachment_names=names,
        attachment_text=_attachment_text(raw, limit, version.tenant_id) if raw else "",
        has_attachments=bool(message.get("hasAttachments"))
        or any(not a.get("isInline") for a in attachments),
    )


def has_extractable(message: dict[str, Any] | None) -> bool:
    """Whether the MIME is worth parsing for attachment text (saves a blob read otherwise)."""
    for att in (message or {}).get("attachments") or []:
        if attachment_kind(att) != "file":
            continue
        if int(att.get("size") or 0) > EXTRACT_MAX_BYTES + 4096:
            continue
        if file_type_of(str(att.get("name") or ""), att.get("contentType")) in TEXT_BEARING:
            return True
    return False


async def search_fields(
    version: ItemVersion, document: dict[str, Any] | None, content: ContentReader
) -> SearchFields | None:
    """The one way a message becomes a search document (folders are not indexed)."""
    if version.kind != MESSAGE:
        return None
    raw: bytes | None = None
    if has_extractable(document) and 0 < version.size <= PARSE_MAX_BYTES:
        raw = await content()
    return await asyncio.to_thread(_fields, version, document, raw)
