"""A channel or chat as a readable HTML transcript (images inline) plus its JSON, in the
export ZIP as ``<team>/<channel>.html`` and ``.json`` (chats under ``Chats/``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from safekeep.backup.services.base import ExportContext, ExportEntry, Selection
from safekeep.backup.services.teams.restore import grouped
from safekeep.backup.services.teams.transcript import render_html, render_json
from safekeep.storage.repository import ContentRef

Json = dict[str, Any]


async def export(ctx: ExportContext, selection: Selection) -> AsyncIterator[ExportEntry]:
    """Per channel or chat: ``<path>.html`` (readable, images inline) and ``<path>.json``."""
    by_container = await grouped(ctx.repo, selection)
    for container, messages in by_container.items():
        threads = _threads([doc for _, doc in messages])
        hosted: dict[str, bytes] = {}
        for _, doc in messages:
            for hosted_id, ref in (doc.get("hostedContents") or {}).items():
                hosted[f"{doc['message']['id']}/{hosted_id}"] = await ctx.repo.read_bytes(
                    ContentRef.from_json(ref)
                )
        path = str(messages[0][1].get("path") or container).strip("/") or container
        page = render_html(path.replace("/", " / "), threads, hosted).encode()
        data = render_json(threads)
        yield ExportEntry(path=f"{path}.html", open=_bytes(page), version=None)
        yield ExportEntry(path=f"{path}.json", open=_bytes(data), version=None)


def _threads(docs: list[Json]) -> list[Json]:
    roots = {
        str(d["message"]["id"]): {**d["message"], "replies": []}
        for d in docs
        if not d["message"].get("replyToId")
    }
    for doc in docs:
        parent = doc["message"].get("replyToId")
        if parent and str(parent) in roots:
            roots[str(parent)]["replies"].append(doc["message"])
    return list(roots.values())


def _bytes(data: bytes) -> Any:
    async def stream() -> AsyncIterator[bytes]:
        yield data

    return stream
