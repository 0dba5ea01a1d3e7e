"""What search knows of a Teams message: author, channel (as the folder path), date,
mentions, attachment names and words."""

from __future__ import annotations

import html
import re
from datetime import datetime
from typing import Any

from safekeep.backup.catalog import SearchFields
from safekeep.backup.services.base import ContentReader
from safekeep.tenants.models import ItemVersion

# A tag ends at its ">"; a "<" before it starts the next one. ("<[^>]+>" tried every "<" to the
# end of the text: 200 KB of "<" took 14.5 s.)
_TAGS = re.compile(r"<[^<>]+>")


def plain_text(message: dict[str, Any]) -> str:
    if message.get("deletedDateTime"):
        return ""
    content = str((message.get("body") or {}).get("content") or "")
    return " ".join(html.unescape(_TAGS.sub(" ", content)).split())


def message_fields(document: dict[str, Any]) -> SearchFields:
    """Author, channel (the folder path), date, mentions and words of one message."""
    message = document["message"]
    author = ((message.get("from") or {}).get("user") or {}).get("displayName")
    mentioned = [
        str(
            ((m.get("mentioned") or {}).get("user") or {}).get("displayName")
            or m.get("mentionText")
        )
        for m in message.get("mentions") or []
    ]
    text = plain_text(message)
    return SearchFields(
        title=str(message.get("subject") or text[:80] or "(no text)"),
        folder_path=str(document.get("path") or "/"),
        date=datetime.fromisoformat(str(message["createdDateTime"]).replace("Z", "+00:00")),
        sender=str(author) if author else None,
        people=[p for p in mentioned if p],
        body=text,
        attachment_names=[
            str(a.get("name")) for a in message.get("attachments") or [] if a.get("name")
        ],
        has_attachments=bool(message.get("attachments")),
    )


async def search_fields(
    version: ItemVersion, document: dict[str, Any] | None, content: ContentReader
) -> SearchFields | None:
    """Messages (thread roots, replies, chat messages) are searchable; teams, channels and
    chats are places, found through their messages' folder path."""
    if not document or "message" not in document:
        return None
    return message_fields(document)
