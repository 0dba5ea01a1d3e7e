"""One Graph delta collection (a drive, a SharePoint list) walked into the catalog, page by
page, resumable and resync-safe. Shared by OneDrive and SharePoint.

Where a round starts: the saved ``resume_link`` (an interrupted round), else the saved
``delta_link``, else the collection's delta path (a full enumeration). Each page is made
durable before its link is saved: the handler fetches and stores what the page needs
outside any transaction, then one catalog transaction records the page and the link.

Resync (HTTP 410, or a token Graph no longer knows): the token is dropped and the collection
enumerated again, from the ``Location`` link when Graph gave one. Unchanged items are
recognised by their change key and cost neither a download nor a version; what the
enumeration did not return is gone and is ended on the last page. A marker state
(``<collection>#resync``) is saved with the first page so that a resync cut short is started
again on the next run rather than resumed: the set of items seen by the pages before the
cut lives only in memory, and ending "what was not seen" needs all of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog

from safekeep.backup.catalog import CatalogPage
from safekeep.backup.collect import CollectContext
from safekeep.graph.errors import ResyncRequired
from safekeep.tenants.models import DeltaState

log = structlog.get_logger(__name__)

RESYNC_SUFFIX = "#resync"
# A Location link that is itself refused sends us back to the plain delta path once; a
# collection refused twice from scratch is a real failure, left to the job's retries.
MAX_RESYNCS = 2

Json = dict[str, Any]
T = TypeVar("T")
Apply = Callable[[CatalogPage], Awaitable[None]]


class PageHandler(Protocol):
    async def prepare(self, items: list[Json], seen: set[str] | None) -> Apply:
        """Fetch and store what ``items`` need (no transaction open); return what records
        them in the page's transaction. Adds every live item to ``seen`` when given."""
        ...

    async def remove_unseen(self, cat: CatalogPage, seen: set[str]) -> None:
        """After a complete re-enumeration: end what it did not return."""
        ...


@dataclass
class DeltaSpec:
    collection: str  # the delta state's key: a drive id, "list:<id>"
    path: str  # the delta path, for a full enumeration
    params: dict[str, Any] = field(default_factory=dict)  # sent with ``path`` only
    headers: dict[str, str] = field(default_factory=dict)  # sent with every page
    mailbox: str | None = None  # the throttling key (a user or a site)
    follow_location: bool = True  # start a resync from Graph's Location link

    @property
    def marker(self) -> str:
        return self.collection + RESYNC_SUFFIX


@asynccontextmanager
async def closing(stream: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close a streaming generator when we stop early, so its HTTP response and
    concurrency slot are released at once rather than when it is garbage-collected."""
    try:
        yield stream
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


def dedupe(items: list[Json]) -> list[Json]:
    """Graph may return an item twice in a round: the last occurrence wins."""
    latest: dict[str, Json] = {}
    for item in items:
        key = str(item.get("id"))
        latest.pop(key, None)
        latest[key] = item
    return list(latest.values())


async def run_delta(
    ctx: CollectContext,
    spec: DeltaSpec,
    handler: PageHandler,
    states: Mapping[str, DeltaState],
) -> None:
    state = states.get(spec.collection)
    marker = states.get(spec.marker)
    resync = marker is not None
    if marker is not None:
        start = marker.resume_link or spec.path
        log.info("delta_resync_restarted", collection=spec.collection)
    elif state is not None and state.resume_link:
        start = state.resume_link
    elif state is not None and state.delta_link:
        start = state.delta_link
    else:
        start = spec.path
    resyncs = 0
    while True:
        try:
            await _round(ctx, spec, handler, start, resync=resync)
            return
        except ResyncRequired as exc:
            resyncs += 1
            if resyncs > MAX_RESYNCS:
                raise
            follow = spec.follow_location and exc.location and resyncs == 1
            start = exc.location if follow and exc.location else spec.path
            resync = True
            log.info("delta_resync", collection=spec.collection, code=exc.inner_code or exc.code)
            async with ctx.run.page() as cat:
                await cat.drop_delta(spec.collection)
                await cat.save_delta(spec.marker, resume_link=start)


async def _round(
    ctx: CollectContext, spec: DeltaSpec, handler: PageHandler, start: str, *, resync: bool
) -> None:
    seen: set[str] | None = set() if resync else None
    pages = ctx.graph.delta(start, params=spec.params, headers=spec.headers, mailbox=spec.mailbox)
    async with closing(pages) as rounds:
        async for page in rounds:
            if seen is None and not page.items and not page.next_link and page.delta_link:
                ctx.run.quiet(spec.collection, page.delta_link)  # nothing to write
                await ctx.progress()
                continue
            apply = await handler.prepare(dedupe(page.items), seen)
            async with ctx.run.page() as cat:
                await apply(cat)
                if page.next_link:
                    await cat.save_delta(spec.collection, resume_link=page.next_link)
                else:
                    if seen is not None:
                        await handler.remove_unseen(cat, seen)
                        await cat.drop_delta(spec.marker)
                    await cat.save_delta(spec.collection, delta_link=page.delta_link)
            await ctx.progress()
