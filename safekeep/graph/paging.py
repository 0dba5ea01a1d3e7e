"""Collections and delta rounds: ``@odata.nextLink`` followed exactly as given.

Links already encode the query, so the parameters go with the first request only; headers
(``Prefer``, ``ConsistencyLevel``) go with every page, since Outlook forgets them otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from safekeep.graph.errors import GraphError
from safekeep.graph.options import Json, RequestOptions
from safekeep.graph.transport import Transport, is_absolute


@dataclass
class DeltaPage:
    """One page of a delta round: make ``items`` durable, then persist ``next_link``."""

    items: list[Json]
    next_link: str | None
    delta_link: str | None


async def get_json(transport: Transport, path_or_url: str, options: RequestOptions) -> Json:
    """A GET whose answer must be a JSON object (200 only)."""
    body = await transport.json("GET", path_or_url, options.but(expected=(200,)))
    if body is None:
        raise GraphError(200, "EmptyBody", "Graph answered without a body", url=path_or_url)
    return body


async def pages(
    transport: Transport, path_or_url: str, options: RequestOptions
) -> AsyncIterator[Json]:
    """Each page's whole JSON, from ``path_or_url`` to the page without a nextLink."""
    url: str | None = path_or_url
    current = options
    while url is not None:
        page = await get_json(transport, url, current)
        yield page
        url = page.get("@odata.nextLink")
        current = options.but(params=None)


async def paginate(
    transport: Transport, path: str, options: RequestOptions
) -> AsyncIterator[list[Json]]:
    async for page in pages(transport, path, options):
        yield list(page.get("value") or [])


async def delta(
    transport: Transport, path_or_link: str, options: RequestOptions
) -> AsyncIterator[DeltaPage]:
    """A delta round from a path or a saved next/delta link (whose query is its own)."""
    if is_absolute(path_or_link):
        options = options.but(params=None)
    async for page in pages(transport, path_or_link, options):
        yield DeltaPage(
            list(page.get("value") or []),
            page.get("@odata.nextLink"),
            page.get("@odata.deltaLink"),
        )
