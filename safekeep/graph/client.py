"""The Microsoft Graph client every collector, discovery step and restore writer goes through.

It owns the rules Microsoft asks well-behaved apps to follow, so that callers cannot forget
them: honour ``Retry-After`` for every request to the throttled resource (through a limiter
shared by all workers), keep at most 4 requests in flight per mailbox, back off on 5xx,
follow ``@odata.nextLink`` exactly as given, never send the bearer token anywhere but Graph
(download and upload URLs are pre-authenticated), and decorate traffic with an ISV
User-Agent. It knows nothing of tenants or jobs: it takes plain arguments.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import re
import ssl
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, unquote, urljoin

import httpx

from safekeep.graph.auth import TokenProvider
from safekeep.graph.errors import (
    GraphError,
    Throttled,
    TransientError,
    classify,
    parse_error_body,
    parse_retry_after,
)
from safekeep.graph.metrics import GRAPH_RETRY_AFTER_WAIT, GRAPH_THROTTLED
from safekeep.graph.throttle import Limiter

log = logging.getLogger(__name__)

USER_AGENT = "ISV|Safekeep|Safekeep/0.1"
MAILBOX_CONCURRENCY = 4  # Exchange Online: 4 concurrent requests per app per mailbox
BATCH_LIMIT = 20  # requests per JSON $batch
FRAGMENT_UNIT = 320 * 1024  # drive upload fragments are multiples of 320 KiB ...
DRIVE_FRAGMENT_MAX = 60 * 1024 * 1024  # ... and under 60 MiB
ATTACHMENT_DIRECT_MAX = 3 * 1024 * 1024  # a file attachment below 3 MB goes in one POST
ATTACHMENT_CHUNK = 3 * 1024 * 1024  # attachment session chunks must be at most 4 MB

_RETRYABLE_5XX = frozenset({502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
# Transport failures that prove the request never reached the server: safe to resend even
# for a POST. Anything else (a read timeout, a dropped connection) may have been applied.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

# Which throttling regime a path falls under. Exchange throttles per app per mailbox,
# SharePoint and OneDrive per app per tenant, everything else (the directory) per tenant.
_VERSION = r"/(?:v1\.0|beta)"
_EXCHANGE_PATH = re.compile(
    _VERSION + r"/users/([^/?]+)/(?:messages|mailFolders|events|calendar|calendars|calendarView|"
    r"calendarGroups|contacts|contactFolders|mailboxSettings|outlook|inferenceClassification|"
    r"todo)(?:[/?(]|$)",
    re.IGNORECASE,
)
_SHAREPOINT_PATH = re.compile(
    _VERSION
    + r"/(?:drives|sites|shares)(?:[/?]|$)|"
    + _VERSION
    + r"/(?:users|groups)/[^/]+/drives?(?:[/?]|$)",
    re.IGNORECASE,
)

Scope = Literal["exchange", "sharepoint", "tenant"]
Json = dict[str, Any]


@dataclass
class GraphStats:
    """Counters for one client; workers export them as metrics and benches print them."""

    requests: int = 0  # HTTP requests sent, retries included
    throttled: int = 0  # 429 and 503 answers received
    retries: int = 0  # requests sent again after a throttle, a 5xx or a network error
    bytes_downloaded: int = 0
    bytes_uploaded: int = 0
    retry_after_waited_seconds: float = 0.0  # time spent waiting for a Retry-After to pass
    token_refreshes: int = 0  # 401s answered by fetching a new token


@dataclass
class GraphResponse:
    """A final answer from Graph: status, lower-cased headers, raw body."""

    status: int
    headers: dict[str, str]
    content: bytes
    url: str

    def json(self) -> Any:
        return _load_json(self.content)


@dataclass
class DeltaPage:
    """One page of a delta round: make ``items`` durable, then persist ``next_link``."""

    items: list[Json]
    next_link: str | None
    delta_link: str | None


@dataclass
class BatchRequest:
    """One request inside a JSON ``$batch``; ``url`` is relative to the version root."""

    id: str
    method: str
    url: str
    headers: dict[str, str] | None = None
    body: Any = None
    depends_on: Sequence[str] | None = None


@dataclass
class BatchResponse:
    id: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> GraphError | None:
        """The error this inner answer stands for (a 424 means a dependency failed)."""
        if self.status < 400:
            return None
        code, message, inner_code, request_id = "", "", None, None
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            err = self.body["error"]
            code = str(err.get("code") or "")
            message = str(err.get("message") or "")
            for key, value in err.items():
                if key.lower() == "innererror" and isinstance(value, dict):
                    inner_code = value.get("code")
                    request_id = value.get("request-id")
        headers = {k.lower(): v for k, v in self.headers.items()}
        return classify(
            self.status,
            code or ("FailedDependency" if self.status == 424 else ""),
            message or f"batch request {self.id} failed with {self.status}",
            inner_code=inner_code,
            request_id=request_id,
            retry_after=parse_retry_after(headers.get("retry-after")),
            location=headers.get("location"),
        )

    def raise_for_error(self) -> None:
        error = self.error
        if error is not None:
            raise error


@dataclass(frozen=True)
class _Target:
    """Where a request's limits live: its slot key, the pauses it obeys, where it records."""

    slot: str | None
    clear: tuple[str, ...]
    record: str


@dataclass
class _RetryState:
    failures: int = 0  # 5xx and network errors
    throttles: int = 0
    first_throttle: float | None = None
    refreshed: bool = False


def prefer(
    *,
    max_page_size: int | None = None,
    immutable_id: bool = False,
    text_body: bool = False,
    extra: Iterable[str] = (),
) -> dict[str, str]:
    """A ``Prefer`` header; Outlook needs it on every page, so pass it with each call."""
    parts: list[str] = []
    if max_page_size is not None:
        parts.append(f"odata.maxpagesize={int(max_page_size)}")
    if immutable_id:
        parts.append('IdType="ImmutableId"')
    if text_body:
        parts.append('outlook.body-content-type="text"')
    parts.extend(extra)
    return {"Prefer": ", ".join(parts)} if parts else {}


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Trust the system store, plus ``ca_bundle`` when given (the simulator's CA)."""
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


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
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        retry_after_margin: float = 0.025,
    ) -> None:
        self.root = graph_url.rstrip("/")
        for version in ("/v1.0", "/beta"):
            if self.root.endswith(version):
                self.root = self.root[: -len(version)]
        self._origin = httpx.URL(self.root)
        self.tokens = tokens
        self.limiter = limiter
        self.tenant_key = tenant_key
        self.api_version = api_version
        self.max_attempts = max(1, max_attempts)
        self.deadline_seconds = deadline_seconds
        self.mailbox_concurrency = mailbox_concurrency
        self.tenant_concurrency = tenant_concurrency
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        # Retry-After comes rounded (whole seconds or milliseconds) and is measured from
        # when Graph sent it; a hair more keeps the first request after it from landing
        # just before the pause ends on Graph's side.
        self.retry_after_margin = retry_after_margin
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            verify=ssl_context(ca_bundle),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=40),
        )
        self.stats = GraphStats()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> GraphClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- JSON ------------------------------------------------------------------------------------

    async def get_json(
        self,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        mailbox: str | None = None,
    ) -> Json:
        body = await self.request_json(
            "GET", path_or_url, params=params, headers=headers, mailbox=mailbox, expected=(200,)
        )
        if body is None:
            raise GraphError(200, "EmptyBody", "Graph answered without a body", url=path_or_url)
        return body

    async def request_json(
        self,
        method: str,
        path_or_url: str,
        *,
        json: Any = None,
        content: bytes | str | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        mailbox: str | None = None,
        expected: Sequence[int] = (200, 201, 202, 204),
        idempotent: bool | None = None,
    ) -> Json | None:
        """Send one request and return its JSON object (None for an empty 2xx body).

        ``idempotent`` says whether a request that may have reached Graph can be sent again
        after a network failure; by default only GET, PUT and DELETE are. 429 and 5xx
        answers are always retried: Graph did not apply them.
        """
        return await self._json(
            method,
            path_or_url,
            json_body=json,
            content=content,
            params=params,
            headers=headers,
            mailbox=mailbox,
            expected=expected,
            idempotent=idempotent,
        )

    async def request(
        self,
        method: str,
        path_or_url: str,
        *,
        json: Any = None,
        content: bytes | str | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        mailbox: str | None = None,
        expected: Sequence[int] = (200, 201, 202, 204),
        idempotent: bool | None = None,
    ) -> GraphResponse:
        """Like ``request_json`` but hands back status, headers and raw body, for answers
        whose meaning is in a header (a 202's ``Location`` to poll, an ``ETag``)."""
        return await self._exchange(
            method,
            path_or_url,
            json_body=json,
            content=content,
            params=params,
            headers=headers,
            mailbox=mailbox,
            expected=expected,
            idempotent=idempotent,
        )

    async def _exchange(
        self,
        method: str,
        path_or_url: str,
        *,
        json_body: Any = None,
        content: bytes | str | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        mailbox: str | None = None,
        expected: Sequence[int] = (200, 201, 202, 204),
        idempotent: bool | None = None,
        auth: bool = True,
        scope: Scope | None = None,
        width: int = 1,
    ) -> GraphResponse:
        send_headers = {"Accept": "application/json", **(headers or {})}
        data: bytes | str | None = content
        if json_body is not None:
            data = _dump_json(json_body)
            send_headers.setdefault("Content-Type", "application/json")
        async with self._open(
            method,
            path_or_url,
            params=params,
            headers=send_headers,
            content=data,
            mailbox=mailbox,
            idempotent=idempotent,
            auth=auth,
            scope=scope,
            width=width,
        ) as resp:
            raw = await self._read(resp)
            if resp.status_code not in expected:
                raise self._error(resp, raw, method)
        return GraphResponse(
            resp.status_code,
            {k.lower(): v for k, v in resp.headers.items()},
            raw,
            str(resp.request.url),
        )

    async def _json(self, method: str, path_or_url: str, **kwargs: Any) -> Json | None:
        answer = await self._exchange(method, path_or_url, **kwargs)
        if not answer.content.strip():
            return None
        try:
            value = answer.json()
        except ValueError as exc:
            raise GraphError(
                answer.status,
                "InvalidJson",
                f"unreadable JSON: {exc}",
                method=method,
                url=answer.url,
            ) from exc
        if not isinstance(value, dict):
            raise GraphError(
                answer.status,
                "InvalidJson",
                "expected a JSON object",
                method=method,
                url=answer.url,
            )
        return value

    # -- collections -----------------------------------------------------------------------------

    async def paginate(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        mailbox: str | None = None,
    ) -> AsyncIterator[list[Json]]:
        """Yield each page's ``value``; ``@odata.nextLink`` is followed exactly as given
        (it already encodes the query) and ``headers`` are sent again with every page."""
        url: str | None = path
        query = params
        while url is not None:
            page = await self.get_json(url, params=query, headers=headers, mailbox=mailbox)
            yield list(page.get("value") or [])
            url = page.get("@odata.nextLink")
            query = None

    async def delta(
        self,
        path_or_link: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        mailbox: str | None = None,
    ) -> AsyncIterator[DeltaPage]:
        """Walk a delta round page by page, starting from a path or a saved next/delta link.

        The caller makes each page durable before asking for the next one, and may persist
        ``next_link`` to resume an interrupted round. The last page carries ``delta_link``.
        Raises ``ResyncRequired`` when the token is no longer valid.
        """
        url: str | None = path_or_link
        query = None if _is_absolute(path_or_link) else params
        while url is not None:
            page = await self.get_json(url, params=query, headers=headers, mailbox=mailbox)
            next_link = page.get("@odata.nextLink")
            delta_link = page.get("@odata.deltaLink")
            yield DeltaPage(list(page.get("value") or []), next_link, delta_link)
            url = next_link
            query = None

    # -- content ---------------------------------------------------------------------------------

    async def stream(
        self,
        path_or_url: str,
        *,
        mailbox: str | None = None,
        headers: Mapping[str, str] | None = None,
        chunk_size: int = 1 << 20,
    ) -> AsyncIterator[bytes]:
        """Yield the bytes of a ``$value`` or drive ``content`` in chunks of bounded size.

        Drive content answers 302 to a short-lived pre-authenticated URL; it is fetched
        without the Authorization header (and a ``Range`` goes to it, not to Graph). If the
        transfer breaks, it resumes from the last byte received (a new redirect each time,
        since the URL may have expired), skipping bytes if the server ignored ``Range``.
        Use ``contextlib.aclosing`` if you may stop early, so the slot is released at once.
        """
        extra = {k: v for k, v in (headers or {}).items() if k.lower() != "range"}
        requested = next((v for k, v in (headers or {}).items() if k.lower() == "range"), None)
        first, last = _parse_range(requested)
        received = 0
        failures = 0
        while True:
            offset = first + received
            range_header = None
            if requested is not None or received:
                range_header = f"bytes={offset}-{'' if last is None else last}"
            try:
                async for chunk in self._stream_once(
                    path_or_url, mailbox, extra, range_header, offset, last, chunk_size
                ):
                    received += len(chunk)
                    yield chunk
                return
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout) as exc:
                failures += 1
                self.stats.retries += 1
                if failures >= self.max_attempts:
                    raise TransientError(
                        0,
                        "network_error",
                        f"download kept failing: {exc}",
                        method="GET",
                        url=path_or_url,
                    ) from exc
                await asyncio.sleep(self._backoff(failures))

    async def _stream_once(
        self,
        path_or_url: str,
        mailbox: str | None,
        headers: dict[str, str],
        range_header: str | None,
        offset: int,
        last: int | None,
        chunk_size: int,
    ) -> AsyncIterator[bytes]:
        location: str | None = None
        async with self._open("GET", path_or_url, headers=headers, mailbox=mailbox) as resp:
            if resp.status_code in _REDIRECTS:
                location = urljoin(str(resp.request.url), resp.headers.get("location", ""))
                await resp.aclose()
            else:
                # Exchange serves $value directly; it may or may not honour Range.
                async for chunk in self._body(resp, range_header, offset, last, chunk_size):
                    yield chunk
                return
        download_headers = {"Range": range_header} if range_header else {}
        async with self._open(
            "GET", location, headers=download_headers, auth=False, scope="sharepoint"
        ) as resp:
            async for chunk in self._body(resp, range_header, offset, last, chunk_size):
                yield chunk

    async def _body(
        self,
        resp: httpx.Response,
        range_header: str | None,
        offset: int,
        last: int | None,
        chunk_size: int,
    ) -> AsyncIterator[bytes]:
        """The bytes wanted from ``resp``: a 200 to a ranged request carries the whole
        content, so the range is cut out here."""
        if resp.status_code not in (200, 206):
            raise self._error(resp, await self._read(resp), "GET")
        whole = range_header is not None and resp.status_code == 200
        skip = offset if whole else 0
        remaining = (last - offset + 1) if whole and last is not None else None
        async for chunk in resp.aiter_bytes(chunk_size):
            self.stats.bytes_downloaded += len(chunk)
            if skip:
                if len(chunk) <= skip:
                    skip -= len(chunk)
                    continue
                chunk = chunk[skip:]
                skip = 0
            if remaining is not None:
                chunk = chunk[:remaining]
                remaining -= len(chunk)
            if chunk:
                yield chunk
            if remaining == 0:
                return

    # -- $batch ----------------------------------------------------------------------------------

    async def batch(
        self, requests: Sequence[BatchRequest], *, mailbox: str | None = None
    ) -> list[BatchResponse]:
        """Run requests through JSON ``$batch``, 20 at a time, answers in request order.

        Requests linked by ``depends_on`` stay in the same call. Inner requests refused with
        429 or 5xx are sent again after their own ``Retry-After`` (with whatever depended on
        them and failed with 424); other failures are returned, see ``BatchResponse.error``.
        """
        ids = [r.id for r in requests]
        if len(set(ids)) != len(ids):
            raise ValueError("batch request ids must be unique")
        known = set(ids)
        for request in requests:
            missing = set(request.depends_on or ()) - known
            if missing:
                raise ValueError(f"request {request.id} depends on unknown ids {sorted(missing)}")
        results: dict[str, BatchResponse] = {}
        for group in _pack(requests, BATCH_LIMIT):
            results.update(await self._batch_group(group, mailbox))
        return [results[i] for i in ids]

    async def _batch_group(
        self, group: list[BatchRequest], mailbox: str | None
    ) -> dict[str, BatchResponse]:
        final: dict[str, BatchResponse] = {}
        pending = list(group)
        state = _RetryState()
        while pending:
            box = mailbox or _single_mailbox(pending)
            exchange = [r for r in pending if _EXCHANGE_PATH.match(self._version_path(r.url))]
            width = min(self.mailbox_concurrency, len(exchange)) if box and exchange else 1
            payload = {"requests": [self._inner_json(r, pending) for r in pending]}
            body = await self._json(
                "POST",
                "/$batch",
                json_body=payload,
                mailbox=box,
                expected=(200,),
                idempotent=all(r.method.upper() == "GET" for r in pending),
                scope="exchange" if box and exchange else None,
                width=max(1, width),
            )
            answers = {str(a.get("id")): a for a in (body or {}).get("responses", [])}
            retry: dict[str, BatchRequest] = {}
            waits: dict[str, float] = {}
            transient = False
            for request in pending:
                answer = answers.get(request.id)
                if answer is None:
                    raise GraphError(
                        200,
                        "BatchIncomplete",
                        f"no answer for request {request.id}",
                        method="POST",
                        url="$batch",
                    )
                status = int(answer.get("status") or 0)
                headers = {str(k): str(v) for k, v in (answer.get("headers") or {}).items()}
                if status == 429 or status in _RETRYABLE_5XX:
                    retry[request.id] = request
                    self.stats.throttled += int(status in (429, 503))
                    if status in (429, 503):
                        GRAPH_THROTTLED.labels(str(status)).inc()
                    transient = transient or status != 429
                    wait = parse_retry_after(_header(headers, "retry-after"))
                    if wait is not None:
                        key = self._target(self._absolute(request.url), box, None).record
                        waits[key] = max(waits.get(key, 0.0), wait)
                final[request.id] = BatchResponse(request.id, status, headers, answer.get("body"))
            # A 424 caused by a request we are about to resend is not final either.
            grew = True
            while grew:
                grew = False
                for request in pending:
                    if request.id in retry or final[request.id].status != 424:
                        continue
                    if any(dep in retry for dep in request.depends_on or ()):
                        retry[request.id] = request
                        grew = True
            if not retry:
                break
            now = time.monotonic()
            if waits or not transient:
                state.first_throttle = state.first_throttle or now
                longest = max(waits.values(), default=self._backoff(state.throttles))
                state.throttles += 1
                if now - state.first_throttle + longest > self.deadline_seconds:
                    raise Throttled(
                        429,
                        "TooManyRequests",
                        "batch requests still throttled at the deadline",
                        retry_after=longest,
                        method="POST",
                        url="$batch",
                    )
                for key, wait in waits.items():
                    await self.limiter.record_retry_after(key, wait + self.retry_after_margin)
                delay = 0.0 if waits else longest
            else:
                state.failures += 1
                if state.failures >= self.max_attempts:
                    break  # give the 5xx answers back as they are
                delay = self._backoff(state.failures)
            for request_id in retry:
                del final[request_id]
            pending = [r for r in pending if r.id in retry]
            self.stats.retries += len(pending)
            if delay:
                await asyncio.sleep(delay)
        return final

    def _inner_json(self, request: BatchRequest, pending: list[BatchRequest]) -> Json:
        url = request.url
        if _is_absolute(url):
            prefix = f"{self.root}/{self.api_version}"
            if not url.startswith(prefix):
                raise ValueError(f"batch url outside Graph {self.api_version}: {url}")
            url = url[len(prefix) :]
        out: Json = {"id": request.id, "method": request.method.upper(), "url": url}
        headers = dict(request.headers or {})
        if request.body is not None:
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
            out["body"] = request.body
        if headers:
            out["headers"] = headers
        in_flight = {r.id for r in pending}
        depends = [d for d in request.depends_on or () if d in in_flight]
        if depends:
            out["dependsOn"] = depends
        return out

    # -- uploads ---------------------------------------------------------------------------------

    async def upload_drive_file(
        self,
        drive_id: str,
        parent_id: str,
        name: str,
        size: int,
        chunks: AsyncIterable[bytes],
        *,
        conflict: Literal["fail", "replace", "rename"] = "fail",
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
        drive, parent = quote(drive_id, safe=""), quote(parent_id, safe="")
        item_path = f"/drives/{drive}/items/{parent}:/{quote(name, safe='')}:"
        if size <= small_limit:
            data = b"".join([chunk async for chunk in chunks])
            _check_size(len(data), size)
            body = await self._json(
                "PUT",
                f"{item_path}/content",
                content=data,
                mailbox=mailbox,
                params={"@microsoft.graph.conflictBehavior": conflict},
                headers={"Content-Type": "application/octet-stream"},
                expected=(200, 201),
            )
            self.stats.bytes_uploaded += len(data)
            return body or {}
        upload_url = await self.create_drive_upload_session(
            drive_id, parent_id, name, conflict=conflict, mailbox=mailbox
        )
        try:
            return await self.upload_to_drive_session(
                upload_url, size, chunks, fragment_size=fragment_size, resume=False
            )
        except BaseException:
            await self._cancel_session(upload_url)
            raise

    async def create_drive_upload_session(
        self,
        drive_id: str,
        parent_id: str,
        name: str,
        *,
        conflict: Literal["fail", "replace", "rename"] = "fail",
        mailbox: str | None = None,
    ) -> str:
        """Open an upload session for ``name`` under ``parent_id``; returns its uploadUrl.

        The URL is pre-authenticated and lasts for days: a restore can save it and resume
        with ``upload_to_drive_session`` after a crash.
        """
        drive, parent = quote(drive_id, safe=""), quote(parent_id, safe="")
        session = await self._json(
            "POST",
            f"/drives/{drive}/items/{parent}:/{quote(name, safe='')}:/createUploadSession",
            mailbox=mailbox,
            expected=(200,),
            json_body={
                "item": {"@microsoft.graph.conflictBehavior": conflict},
                "deferCommit": False,
            },
            idempotent=True,
        )
        upload_url = str((session or {}).get("uploadUrl") or "")
        if not upload_url:
            raise GraphError(200, "NoUploadUrl", "createUploadSession gave no uploadUrl")
        return upload_url

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
        if fragment_size % FRAGMENT_UNIT or not 0 < fragment_size < DRIVE_FRAGMENT_MAX:
            raise ValueError("fragment_size must be a multiple of 320 KiB below 60 MiB")
        start = 0
        if resume:
            start = await self._next_expected(upload_url, "sharepoint", None) or 0
        fragments = _rechunk(_skip(chunks, start), fragment_size)
        _, item = await self._upload_fragments(
            upload_url, size, fragments, scope="sharepoint", mailbox=None, start=start
        )
        return item or {}

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
        if size < ATTACHMENT_DIRECT_MAX:
            raw = data if isinstance(data, bytes) else b"".join([c async for c in data])
            _check_size(len(raw), size)
            attachment: Json = {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": name,
                "contentType": content_type,
                "contentBytes": base64.b64encode(raw).decode("ascii"),
                "isInline": is_inline,
            }
            if content_id:
                attachment["contentId"] = content_id
            created = await self._json(
                "POST",
                f"{parent}/attachments",
                json_body=attachment,
                mailbox=user_id,
                expected=(201, 200),
            )
            self.stats.bytes_uploaded += len(raw)
            return str(created["id"]) if created and created.get("id") else None
        item: Json = {
            "attachmentType": "file",
            "name": name,
            "size": size,
            "contentType": content_type,
            "isInline": is_inline,
        }
        if content_id:
            item["contentId"] = content_id
        session = await self._json(
            "POST",
            f"{parent}/attachments/createUploadSession",
            mailbox=user_id,
            json_body={"AttachmentItem": item},
            expected=(201, 200),
            idempotent=True,
        )
        upload_url = str((session or {}).get("uploadUrl") or "")
        if not upload_url:
            raise GraphError(201, "NoUploadUrl", "createUploadSession gave no uploadUrl")
        source: AsyncIterable[bytes] = _once(data) if isinstance(data, bytes) else data
        try:
            location, _ = await self._upload_fragments(
                upload_url,
                size,
                _rechunk(source, ATTACHMENT_CHUNK),
                scope="exchange",
                mailbox=user_id,
            )
        except BaseException:
            await self._cancel_session(upload_url, mailbox=user_id, scope="exchange")
            raise
        found = re.search(r"Attachments\('([^']+)'\)", location or "")
        return found.group(1) if found else None

    async def _upload_fragments(
        self,
        upload_url: str,
        size: int,
        fragments: AsyncIterator[bytes],
        *,
        scope: Scope,
        mailbox: str | None,
        start: int = 0,
    ) -> tuple[str | None, Json | None]:
        """PUT each fragment in order; return the final answer's Location and JSON body."""
        offset = start
        final: tuple[str | None, Json | None] | None = None
        async for fragment in fragments:
            if offset + len(fragment) > size:
                raise ValueError(f"more data than the declared size {size}")
            final = await self._put_fragment(upload_url, fragment, offset, size, scope, mailbox)
            offset += len(fragment)
        _check_size(offset, size)
        if final is None:
            raise GraphError(0, "UploadIncomplete", "the upload session did not complete")
        return final

    async def _put_fragment(
        self,
        upload_url: str,
        fragment: bytes,
        start: int,
        total: int,
        scope: Scope,
        mailbox: str | None,
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
            async with self._open(
                "PUT",
                upload_url,
                content=part,
                headers=headers,
                auth=False,
                scope=scope,
                mailbox=mailbox,
                idempotent=True,
            ) as resp:
                raw = await self._read(resp)
            status = resp.status_code
            if status in (200, 201, 202):
                self.stats.bytes_uploaded += len(part)
                if first + len(part) < total:
                    return None
                body = _load_json(raw) if raw.strip() else None
                return resp.headers.get("location"), body if isinstance(body, dict) else None
            if status != 416 or disagreements >= 3:
                raise self._error(resp, raw, "PUT")
            # 416: part of this range already arrived (an earlier attempt got through
            # unseen), or not all of the previous one did; the session says which.
            disagreements += 1
            expected = await self._next_expected(upload_url, scope, mailbox)
            if expected is None or not start <= expected <= start + len(fragment):
                raise GraphError(
                    416,
                    "invalidRange",
                    f"upload session expects byte {expected}, cannot resume there",
                )
            pos = expected - start
        return None

    async def _next_expected(
        self, upload_url: str, scope: Scope, mailbox: str | None
    ) -> int | None:
        status = await self._json(
            "GET", upload_url, auth=False, scope=scope, mailbox=mailbox, expected=(200,)
        )
        ranges = (status or {}).get("nextExpectedRanges") or []
        if not ranges:
            return None
        head = str(ranges[0]).split("-", 1)[0]
        return int(head) if head.isdigit() else None

    async def _cancel_session(
        self, upload_url: str, *, mailbox: str | None = None, scope: Scope = "sharepoint"
    ) -> None:
        try:
            await asyncio.shield(
                self._json(
                    "DELETE",
                    upload_url,
                    auth=False,
                    scope=scope,
                    mailbox=mailbox,
                    expected=(200, 204, 404),
                )
            )
        except Exception:  # the session expires by itself; the original error matters more
            log.info("could not cancel upload session", exc_info=True)

    # -- the request loop ------------------------------------------------------------------------

    @asynccontextmanager
    async def _open(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | str | None = None,
        mailbox: str | None = None,
        idempotent: bool | None = None,
        auth: bool = True,
        scope: Scope | None = None,
        width: int = 1,
    ) -> AsyncIterator[httpx.Response]:
        """Send until Graph gives an answer worth returning, holding the limits meanwhile.

        Yields the (streamed) response with the slot still held; the slot is released and
        the response closed when the caller's block ends.
        """
        url = self._absolute(path_or_url)
        if auth and not self._same_origin(url):
            raise ValueError(f"refusing to send the Graph token to {httpx.URL(url).host}")
        method = method.upper()
        target = self._target(url, mailbox, scope)
        safe = idempotent if idempotent is not None else method in _IDEMPOTENT
        state = _RetryState()
        request_id = str(uuid.uuid4())
        while True:
            await self._clear(target.clear)
            delay = 0.0
            async with AsyncExitStack() as stack:
                await self._hold(stack, target, width)
                await self._clear(target.clear)  # a pause may have begun while we queued
                token = await self.tokens.token() if auth else None
                request = self._http.build_request(
                    method,
                    url,
                    params=params,
                    content=content,
                    headers=self._headers(headers, token, request_id),
                )
                self.stats.requests += 1
                try:
                    resp = await self._http.send(request, stream=True)
                except httpx.TransportError as exc:
                    if not (safe or isinstance(exc, _NOT_SENT)):
                        raise TransientError(
                            0,
                            "network_error",
                            f"{type(exc).__name__}: {exc}",
                            method=method,
                            url=url,
                        ) from exc
                    delay = self._failure(state, None, exc, method, url)
                    self.stats.retries += 1
                else:
                    stack.push_async_callback(resp.aclose)
                    verdict = await self._judge(resp, state, target, token, method)
                    if verdict is None:
                        yield resp
                        return
                    delay = verdict
            if delay > 0:
                await asyncio.sleep(delay)

    async def _judge(
        self,
        resp: httpx.Response,
        state: _RetryState,
        target: _Target,
        token: str | None,
        method: str,
    ) -> float | None:
        """None: hand ``resp`` to the caller. A number: retry after that many seconds."""
        status = resp.status_code
        if status == 401 and token is not None and not state.refreshed:
            await resp.aread()
            state.refreshed = True
            self.stats.token_refreshes += 1
            self.tokens.invalidate(token)
            return 0.0
        retry_after = parse_retry_after(resp.headers.get("retry-after"))
        throttled = status == 429 or (status == 503 and retry_after is not None)
        if not throttled and status not in _RETRYABLE_5XX:
            return None
        if retry_after is not None:
            # Tell every sharer of this key first, before anything that could yield to
            # another task (even reading the body) and while we still hold the slot.
            await self.limiter.record_retry_after(
                target.record, retry_after + self.retry_after_margin
            )
            log.debug("throttled on %s for %.3f s", target.record, retry_after)
        raw = await self._read(resp)
        if status in (429, 503):
            self.stats.throttled += 1
            GRAPH_THROTTLED.labels(str(status)).inc()
        if not throttled:
            delay = self._failure(state, resp, None, method, str(resp.request.url), raw)
            self.stats.retries += 1
            return 0.0 if retry_after is not None else delay
        now = time.monotonic()
        state.first_throttle = state.first_throttle or now
        wait = retry_after if retry_after is not None else self._backoff(state.throttles)
        state.throttles += 1
        if now - state.first_throttle + wait > self.deadline_seconds:
            error = self._error(resp, raw, method)
            raise Throttled(
                status,
                error.code or "TooManyRequests",
                f"still throttled after {now - state.first_throttle:.0f} s: {error.message}",
                request_id=error.request_id,
                retry_after=wait,
                method=method,
                url=error.url,
            )
        self.stats.retries += 1
        # With a Retry-After the wait happens in _clear (shared); without, back off alone.
        return 0.0 if retry_after is not None else wait

    def _failure(
        self,
        state: _RetryState,
        resp: httpx.Response | None,
        exc: Exception | None,
        method: str,
        url: str,
        raw: bytes = b"",
    ) -> float:
        """Count a 5xx or network failure; raise ``TransientError`` once out of attempts."""
        state.failures += 1
        if state.failures >= self.max_attempts:
            if resp is not None:
                error = self._error(resp, raw, method)
                raise TransientError(
                    error.status,
                    error.code,
                    error.message,
                    request_id=error.request_id,
                    method=method,
                    url=url,
                )
            raise TransientError(
                0, "network_error", f"{type(exc).__name__}: {exc}", method=method, url=url
            ) from exc
        return self._backoff(state.failures)

    def _backoff(self, attempt: int) -> float:
        """Exponential with jitter, so workers that failed together do not return together."""
        ceiling = min(self._backoff_cap, self._backoff_base * (2 ** max(0, attempt)))
        return random.uniform(ceiling / 2, ceiling)

    async def _clear(self, keys: tuple[str, ...]) -> None:
        started = time.monotonic()
        for key in keys:
            await self.limiter.wait_for_clearance(key)
        waited = time.monotonic() - started
        if waited > 0.001:
            self.stats.retry_after_waited_seconds += waited
            GRAPH_RETRY_AFTER_WAIT.inc(waited)

    async def _hold(self, stack: AsyncExitStack, target: _Target, width: int) -> None:
        """Take the request's concurrency slots (mailbox first, then tenant-wide).

        A batch to one mailbox runs up to 4 of its requests at once inside Exchange, so it
        takes up to 4 slots; only one multi-slot holder per key may gather at a time, which
        rules out two batches each holding half the slots and waiting for the rest.
        """
        if target.slot is not None:
            if width > 1:
                await stack.enter_async_context(self.limiter.slot(f"{target.slot}#gather", limit=1))
            for _ in range(max(1, width)):
                await stack.enter_async_context(
                    self.limiter.slot(target.slot, limit=self.mailbox_concurrency)
                )
        if self.tenant_concurrency:
            await stack.enter_async_context(
                self.limiter.slot(f"{self.tenant_key}:all", limit=self.tenant_concurrency)
            )

    def _target(self, url: str, mailbox: str | None, scope: Scope | None) -> _Target:
        tenant = self.tenant_key
        path = httpx.URL(url).path if self._same_origin(url) else ""
        kind = scope
        derived: str | None = None
        if kind is None:
            match = _EXCHANGE_PATH.match(path)
            if match:
                kind, derived = "exchange", unquote(match.group(1))
            elif _SHAREPOINT_PATH.match(path):
                kind = "sharepoint"
            else:
                kind = "tenant"
        who = mailbox or derived
        slot = f"{tenant}:mailbox:{who.lower()}" if who else None
        if kind == "exchange" and slot is not None:
            return _Target(slot, (tenant, slot), slot)
        if kind == "sharepoint":
            key = f"{tenant}:sharepoint"
            return _Target(slot, (tenant, key), key)
        return _Target(slot, (tenant,), tenant)

    def _headers(
        self, extra: Mapping[str, str] | None, token: str | None, request_id: str
    ) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "client-request-id": request_id}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if extra:
            headers.update(extra)
        return headers

    def _absolute(self, path_or_url: str) -> str:
        if _is_absolute(path_or_url):
            return path_or_url
        return self.root + self._version_path(path_or_url)

    def _version_path(self, path_or_url: str) -> str:
        if _is_absolute(path_or_url):
            return httpx.URL(path_or_url).path
        path = path_or_url if path_or_url.startswith("/") else "/" + path_or_url
        if path.startswith(("/v1.0/", "/beta/")):
            return path
        return f"/{self.api_version}{path}"

    def _same_origin(self, url: str) -> bool:
        parsed = httpx.URL(url)
        return (parsed.scheme, parsed.host, parsed.port) == (
            self._origin.scheme,
            self._origin.host,
            self._origin.port,
        )

    async def _read(self, resp: httpx.Response) -> bytes:
        raw = await resp.aread()
        self.stats.bytes_downloaded += len(raw)
        return raw

    def _error(self, resp: httpx.Response, raw: bytes, method: str) -> GraphError:
        code, message, inner_code, request_id = parse_error_body(raw)
        return classify(
            resp.status_code,
            code,
            message or resp.reason_phrase,
            inner_code=inner_code,
            request_id=request_id or resp.headers.get("request-id"),
            retry_after=parse_retry_after(resp.headers.get("retry-after")),
            location=resp.headers.get("location"),
            method=method,
            url=str(resp.request.url),
        )


# -- helpers --------------------------------------------------------------------------------------


def _is_absolute(path_or_url: str) -> bool:
    return path_or_url.startswith(("https://", "http://"))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _dump_json(value: Any) -> bytes:
    import json

    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _load_json(raw: bytes) -> Any:
    import json

    return json.loads(raw)


def _parse_range(value: str | None) -> tuple[int, int | None]:
    """First and last byte of a ``bytes=S-[E]`` range (suffix ranges are not resumable)."""
    if not value:
        return 0, None
    found = re.fullmatch(r"\s*bytes=(\d+)-(\d*)\s*", value)
    if not found:
        raise ValueError(f"unsupported Range {value!r}: use bytes=START- or bytes=START-END")
    return int(found.group(1)), int(found.group(2)) if found.group(2) else None


def _check_size(actual: int, declared: int) -> None:
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


async def _rechunk(source: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """Regroup arbitrary chunks into pieces of exactly ``size`` bytes (the last one shorter)."""
    buffer = bytearray()
    async for chunk in source:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def _pack(requests: Sequence[BatchRequest], limit: int) -> list[list[BatchRequest]]:
    """Split into calls of at most ``limit``, keeping each dependsOn chain in one call."""
    parent = {r.id: r.id for r in requests}

    def root(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for request in requests:
        for dep in request.depends_on or ():
            parent[root(dep)] = root(request.id)
    components: dict[str, list[BatchRequest]] = {}
    for request in requests:
        components.setdefault(root(request.id), []).append(request)
    groups: list[list[BatchRequest]] = []
    current: list[BatchRequest] = []
    for component in components.values():
        if len(component) > limit:
            raise ValueError(f"a dependsOn chain of {len(component)} requests exceeds {limit}")
        if len(current) + len(component) > limit:
            groups.append(current)
            current = []
        current.extend(component)
    if current:
        groups.append(current)
    return groups


def _single_mailbox(requests: Sequence[BatchRequest]) -> str | None:
    """The one mailbox every Exchange request of a batch addresses, if there is one."""
    found: set[str] = set()
    for request in requests:
        path = request.url if request.url.startswith("/") else "/" + request.url
        if _is_absolute(request.url):
            path = httpx.URL(request.url).path
        elif not path.startswith(("/v1.0/", "/beta/")):
            path = "/v1.0" + path
        match = _EXCHANGE_PATH.match(path)
        if match:
            found.add(unquote(match.group(1)).lower())
    return found.pop() if len(found) == 1 else None
