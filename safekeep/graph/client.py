"""The Microsoft Graph client every collector, discovery step and restore writer goes through.

A thin facade: the rules Microsoft asks well-behaved apps to follow live in ``transport``
(token, limiter, Retry-After, retries), and the shapes of Graph's conversations in
``paging`` (collections and delta rounds), ``download``, ``batch`` and ``uploads``. Each of
those describes its requests with one ``RequestOptions``. It knows nothing of tenants or
jobs: it takes plain arguments.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import Unpack
from urllib.parse import quote

import httpx

from safekeep.graph import batch as batching
from safekeep.graph import download, paging, uploads
from safekeep.graph.auth import TokenProvider
from safekeep.graph.batch import BATCH_LIMIT, BatchRequest, BatchResponse
from safekeep.graph.netio import graph_http_client
from safekeep.graph.options import Json, ReadFields, RequestFields, RequestOptions, Scope, prefer
from safekeep.graph.paging import DeltaPage
from safekeep.graph.throttle import Limiter
from safekeep.graph.transport import (
    MAILBOX_CONCURRENCY,
    SHAREPOINT_CONCURRENCY,
    USER_AGENT,
    GraphResponse,
    GraphStats,
    RetryPolicy,
    Transport,
    ssl_context,
)
from safekeep.graph.uploads import (
    ATTACHMENT_CHUNK,
    ATTACHMENT_DIRECT_MAX,
    DRIVE_FRAGMENT_MAX,
    FRAGMENT_UNIT,
    OUTLOOK_REQUEST_MAX,
    Attachment,
    Conflict,
)

__all__ = [
    "ATTACHMENT_CHUNK",
    "ATTACHMENT_DIRECT_MAX",
    "BATCH_LIMIT",
    "DRIVE_FRAGMENT_MAX",
    "FRAGMENT_UNIT",
    "MAILBOX_CONCURRENCY",
    "OUTLOOK_REQUEST_MAX",
    "SHAREPOINT_CONCURRENCY",
    "USER_AGENT",
    "BatchRequest",
    "BatchResponse",
    "DeltaPage",
    "GraphClient",
    "GraphResponse",
    "GraphStats",
    "Json",
    "RequestOptions",
    "Scope",
    "prefer",
    "ssl_context",
]


class GraphClient:
    """One tenant's view of Graph. Cheap to create; share the limiter across clients."""

    def __init__(
        self,
        *,
        graph_url: str,
        tokens: TokenProvider,
        limiter: Limiter,
        tenant_key: str,
        ca_bundle: str | None = None,
        http: httpx.AsyncClient | None = None,
        max_attempts: int = 8,
        deadline_seconds: float = 900,
        timeout: float = 60,
        api_version: str = "v1.0",
        mailbox_concurrency: int = MAILBOX_CONCURRENCY,
        tenant_concurrency: int | None = None,
        sharepoint_concurrency: int = SHAREPOINT_CONCURRENCY,
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        retry_after_margin: float = 0.025,
    ) -> None:
        self._owns_http = http is None
        self.transport = Transport(
            graph_url=graph_url,
            tokens=tokens,
            limiter=limiter,
            tenant_key=tenant_key,
            http=http
            or graph_http_client(
                ssl_context(ca_bundle),
                httpx.Timeout(timeout),
                httpx.Limits(max_connections=100, max_keepalive_connections=40),
            ),
            api_version=api_version,
            policy=RetryPolicy(
                max_attempts=max(1, max_attempts),
                deadline_seconds=deadline_seconds,
                backoff_base=backoff_base,
                backoff_cap=backoff_cap,
                retry_after_margin=retry_after_margin,
            ),
            mailbox_concurrency=mailbox_concurrency,
            tenant_concurrency=tenant_concurrency,
            sharepoint_concurrency=sharepoint_concurrency,
        )
        # The transport's parts that callers read (none is ever replaced), named on the client.
        self.stats: GraphStats = self.transport.stats
        self.limiter: Limiter = self.transport.limiter
        self.tokens: TokenProvider = self.transport.tokens
        self.tenant_key: str = self.transport.tenant_key
        self.root: str = self.transport.root

    async def aclose(self) -> None:
        if self._owns_http:
            await self.transport.http.aclose()

    async def __aenter__(self) -> GraphClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- JSON ------------------------------------------------------------------------------------

    async def get_json(self, path_or_url: str, **fields: Unpack[ReadFields]) -> Json:
        options = RequestOptions.of(fields)
        return await paging.get_json(self.transport, path_or_url, options)

    async def request_json(
        self, method: str, path_or_url: str, **fields: Unpack[RequestFields]
    ) -> Json | None:
        """Send one request and return its JSON object (None for an empty 2xx body).

        ``idempotent`` says whether a request that may have reached Graph can be sent again
        after a network failure; by default only GET, PUT and DELETE are. 429 and 5xx
        answers are always retried: Graph did not apply them.
        """
        return await self.transport.json(method, path_or_url, RequestOptions.of(fields))

    async def request(
        self, method: str, path_or_url: str, **fields: Unpack[RequestFields]
    ) -> GraphResponse:
        """Like ``request_json`` but hands back status, headers and raw body, for answers
        whose meaning is in a header (a 202's ``Location`` to poll, an ``ETag``)."""
        return await self.transport.exchange(method, path_or_url, RequestOptions.of(fields))

    # -- collections -----------------------------------------------------------------------------

    async def paginate(self, path: str, **fields: Unpack[ReadFields]) -> AsyncIterator[list[Json]]:
        """Yield each page's ``value``; ``@odata.nextLink`` is followed exactly as given
        (it already encodes the query) and ``headers`` are sent again with every page."""
        options = RequestOptions.of(fields)
        async for values in paging.paginate(self.transport, path, options):
            yield values

    async def delta(
        self, path_or_link: str, **fields: Unpack[ReadFields]
    ) -> AsyncIterator[DeltaPage]:
        """Walk a delta round page by page, starting from a path or a saved next/delta link.

        The caller makes each page durable before asking for the next one, and may persist
        ``next_link`` to resume an interrupted round. The last page carries ``delta_link``.
        Raises ``ResyncRequired`` when the token is no longer valid.
        """
        options = RequestOptions.of(fields)
        async for page in paging.delta(self.transport, path_or_link, options):
            yield page

    # -- content ---------------------------------------------------------------------------------

    async def stream(
        self,
        path_or_url: str,
        *,
        mailbox: str | None = None,
        headers: Mapping[str, str] | None = None,
        chunk_size: int | None = None,
    ) -> AsyncIterator[bytes]:
        """Yield the bytes of a ``$value`` or drive ``content``, resuming a broken transfer.
        Pieces come as they arrive (a socket read, decoded), unless ``chunk_size`` asks for
        pieces of that size: regrouping copies every byte twice, which showed as 3% of a full
        backup's samples, and the blob store cuts its own chunks anyway. Use
        ``contextlib.aclosing`` if you may stop early, so the slot is released at once."""
        async for chunk in download.stream(
            self.transport, path_or_url, mailbox=mailbox, headers=headers, chunk_size=chunk_size
        ):
            yield chunk

    # -- $batch ----------------------------------------------------------------------------------

    async def batch(
        self, requests: Sequence[BatchRequest], *, mailbox: str | None = None
    ) -> list[BatchResponse]:
        """Run requests through JSON ``$batch``, 20 at a time, answers in request order.

        Requests linked by ``depends_on`` stay in the same call. Inner requests refused with
        429 or 5xx are sent again after their own ``Retry-After`` (with whatever depended on
        them and failed with 424); other failures are returned, see ``BatchResponse.error``.
        """
        return await batching.run(self.transport, requests, mailbox)

    # -- uploads ---------------------------------------------------------------------------------

    async def upload_drive_file(
        self,
        drive_id: str,
        parent_id: str,
        name: str,
        size: int,
        chunks: AsyncIterable[bytes],
        *,
        conflict: Conflict = "fail",
        small_limit: int = 4 * 1024 * 1024,
        fragment_size: int = 32 * FRAGMENT_UNIT,
        mailbox: str | None = None,
    ) -> Json:
        """Create or replace a file under ``parent_id``; returns the new driveItem.

        Small files take one PUT; larger ones an upload session, sent in fragments that are
        multiples of 320 KiB and resumed from ``nextExpectedRanges`` after a failure.
        Raises ``Conflict`` when ``conflict="fail"`` and the name is taken.
        """
        if conflict not in ("fail", "replace", "rename"):
            raise ValueError("conflict must be fail, replace or rename")
        return await uploads.drive_file(
            self.transport,
            uploads.drive_item_path(drive_id, parent_id, name),
            size,
            chunks,
            conflict=conflict,
            small_limit=small_limit,
            fragment_size=fragment_size,
            mailbox=mailbox,
        )

    async def create_drive_upload_session(
        self,
        drive_id: str,
        parent_id: str,
        name: str,
        *,
        conflict: Conflict = "fail",
        mailbox: str | None = None,
    ) -> str:
        """Open an upload session for ``name`` under ``parent_id``; returns its uploadUrl.

        The URL is pre-authenticated and lasts for days: a restore can save it and resume
        with ``upload_to_drive_session`` after a crash.
        """
        item_path = uploads.drive_item_path(drive_id, parent_id, name)
        return await uploads.drive_session(self.transport, item_path, conflict, mailbox)

    async def upload_to_drive_session(
        self,
        upload_url: str,
        size: int,
        chunks: AsyncIterable[bytes],
        *,
        fragment_size: int = 32 * FRAGMENT_UNIT,
        resume: bool = True,
    ) -> Json:
        """Send a file's bytes (all of them, from the start) into an upload session.

        With ``resume`` the session is asked what it already has (``nextExpectedRanges``)
        and those bytes are read from ``chunks`` but not sent again. Returns the driveItem.
        """
        return await uploads.to_drive_session(
            self.transport, upload_url, size, chunks, fragment_size=fragment_size, resume=resume
        )

    async def upload_mail_attachment(
        self,
        user_id: str,
        message_id: str,
        name: str,
        content_type: str,
        data: bytes | AsyncIterable[bytes],
        size: int,
        *,
        is_inline: bool = False,
        content_id: str | None = None,
        event_id: str | None = None,
    ) -> str | None:
        """Attach a file to a message (or to ``event_id``'s event); returns its id if known.

        Under 3 MB it is one POST with base64 content; above, an upload session fed in
        chunks of at most 4 MB (the upload URL carries its own credential).
        """
        owner = f"/users/{quote(user_id, safe='')}"
        parent = (
            f"{owner}/events/{quote(event_id, safe='')}"
            if event_id
            else f"{owner}/messages/{quote(message_id, safe='')}"
        )
        attachment = Attachment(name, content_type, size, is_inline, content_id)
        return await uploads.mail_attachment(self.transport, user_id, parent, attachment, data)
