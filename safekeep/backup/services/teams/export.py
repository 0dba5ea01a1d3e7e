"""A channel or chat as a readable HTML transcript (images inline) plus its JSON, in the
export ZIP as ``<team>/<channel>.html`` and ``.json`` (chats under ``Chats/``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from safekeep.backup.services.base import ExportContext, ExportEntry, Selection
from safekeep.backup.services.teams.restore import grouped
from safekeep.backup.services.teams.transcript import (
    hosted_images,
    render_html,
    render_json,
    threads,
)
from safekeep.text import storable_text

Json = dict[str, Any]


async def export(ctx: ExportContext, selection: Selection) -> AsyncIterator[ExportEntry]:
    """Per channel or chat: ``<path>.html`` (readable, images inline) and ``<path>.json``."""
    by_container = await grouped(ctx.repo, selection)
    for container, messages in by_container.items():
        found = threads([doc for _, doc in messages])
        hosted = await hosted_images(ctx.repo, messages)
        path = str(messages[0][1].get("path") or container).strip("/") or container
        page = storable_text(render_html(path.replace("/", " / "), found, hosted)).encode()
        data = render_json(found)
        yield ExportEntry(path=f"{path}.html", open=_bytes(page), version=None)
        yield ExportEntry(path=f"{path}.json", open=_bytes(data), version=None)


def _bytes(data: bytes) -> Any:
    async def stream() -> AsyncIterator[bytes]:
        yield data

    return stream
