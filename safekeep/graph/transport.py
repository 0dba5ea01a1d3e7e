"""Sending one Graph request well: the token, the limiter's slots and pauses, retries.

It owns the rules Microsoft asks well-behaved apps to follow, so that no layer above can
forget them: honour ``Retry-After`` for every request to the throttled resource (through a
limiter shared by all workers), keep at most 4 requests in flight per mailbox, back off on
5xx, never send the bearer token anywhere but Graph (download and upload URLs are
pre-authenticated), and decorate traffic with an ISV User-Agent.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import random
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx
import orjson

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
from safekeep.graph.options import Json, RequestOptions, Scope
from safekeep.graph.targets import Target, target_for
from safekeep.graph.throttle import Limiter

log = logging.getLogger(__name__)

USER_AGENT = "ISV|Safekeep|Safekeep/0.1"
MAILBOX_CONCURRENCY = 4  # Exchange Online: 4 concurrent requests per app per mailbox
# SharePoint and OneDrive limit resource units per minute, not concurrency; this ceiling only
# bounds how far the tenant's adaptive window may open.
SHAREPOINT_CONCURRENCY = 16
# Near SharePoint's budget its answers carry RateLimit-Remaining: below this share of
# RateLimit-Limit (and at least RATE_LIMIT_RESERVE_MIN units) the tenant's SharePoint
# requests pause until RateLimit-Reset, rather than spend the rest and collect 429s.
RATE_LIMIT_RESERVE = 0.05
RATE_LIMIT_RESERVE_MIN = 4

RETRYABLE_5XX = frozenset({502, 503, 504})
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
# Transport failures that prove the request never reached the server: safe to resend even
# for a POST. Anything else (a read timeout, a dropped connection) may have been applied.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


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
        return load_json(self.content)


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often a request is tried before its error reaches the caller.

    ``retry_after_margin``: Retry-After comes rounded (whole seconds or milliseconds) and is
    measured from when Graph sent it; a hair more keeps the first request after it from
    landing just before the pause ends on Graph's side.
    """

    max_attempts: int = 8
    deadline_seconds: float = 900
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    retry_after_margin: float = 0.025

    def backoff(self, attempt: int) -> float:
        """Exponential with jitter, so workers that failed together do not return together."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** max(0, attempt)))
        return random.uniform(ceiling / 2, ceiling)


@dataclass
class RetryState:
    """One request's (or one ``$batch`` group's) history of failures so far."""

    failures: int = 0  # 5xx and network errors
    throttles: int = 0
    first_throttle: float | None = None
    refreshed: bool = False


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Trust the system store, plus ``ca_bundle`` when given (the simulator's CA)."""
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


# Graph writes text as it holds it, in UTF-16, and a string cut inside a surrogate pair (a
# preview or a name cut at a length in the middle of an emoji) can reach us as a lone
# surrogate escape, "\\ud83d": valid JSON, but no UTF-8 can carry it. Such a string is read,
# kept and written back as Graph wrote it (with the escape); only what we store about an
# item and render from it replaces it (safekeep.text).


def json_bytes(value: Any, **options: Any) -> bytes:
    """``value`` as UTF-8 JSON (``json.dumps`` with ``options``), or, when a string in it holds
    a lone surrogate, as ASCII JSON with ``\\u`` escapes: the same value either way."""
    try:
        return jsonlib.dumps(value, ensure_ascii=False, **options).encode()
    except UnicodeEncodeError:
        return jsonlib.dumps(value, ensure_ascii=True, **options).encode()


def dump_json(value: Any) -> bytes:
    return json_bytes(value, separators=(",", ":"))


def load_json(raw: bytes) -> Any:
    """Graph's JSON. orjson reads it at a fifth of the standard library's CPU (a ``$batch`` of
    base64 MIME is megabytes of JSON); what it refuses (a lone surrogate) the standard library
    reads. Errors are ``ValueError`` either way."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return jsonlib.loads(raw)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def is_absolute(path_or_url: str) -> bool:
    return path_or_url.startswith(("https://", "http://"))


class Transport:
    """One tenant's connection to Graph: URLs, token, limits, the retry loop."""

    def __init__(
        self,
        *,
        graph_url: str,
        tokens: TokenProvider,
        limiter: Limiter,
        tenant_key: str,
        http: httpx.AsyncClient,
        api_version: str = "v1.0",
        policy: RetryPolicy | None = None,
        mailbox_concurrency: int = MAILBOX_CONCURRENCY,
        tenant_concurrency: int | None = None,
        sharepoint_concurrency: int = SHAREPOINT_CONCURRENCY,
    ) -> None:
        root = graph_url.rstrip("/")
        for version in ("/v1.0", "/beta"):
            if root.endswith(version):
                root = root[: -len(version)]
        self.root = root
        self._origin = httpx.URL(root)
        self.tokens = tokens
        self.limiter = limiter
        self.tenant_key = tenant_key
        self.api_version = api_version
        self.policy = policy or RetryPolicy()
        self.mailbox_concurrency = mailbox_concurrency
        self.tenant_concurrency = tenant_concurrency
        self.sharepoint_concurrency = sharepoint_concurrency
        self.http = http
        self.stats = GraphStats()
        # Retry-After pauses this transport heard itself, until when (monotonic): written
        # before anything can yield, read just before a request is built. The limiter's copy
        # is shared with every worker but takes a round trip to write (Redis), in which a
        # request of this process that had already cleared it could go out into the pause.
        self._heard: dict[str, float] = {}

    # -- whole exchanges -------------------------------------------------------------------------

    async def exchange(
        self, method: str, path_or_url: str, options: RequestOptions
    ) -> GraphResponse:
        """Send one request and read its whole answer; an unexpected status raises."""
        headers = {"Accept": "application/json", **(options.headers or {})}
        data: bytes | str | None = options.content
        if options.json is not None:
            data = dump_json(options.json)
            headers.setdefault("Content-Type", "application/json")
        sent = options.but(headers=headers, content=data)
        async with self.open(method, path_or_url, sent) as resp:
            raw = await self.read(resp)
            if resp.status_code not in options.expected:
                raise self.error(resp, raw, method)
        return GraphResponse(
            resp.status_code,
            {k.lower(): v for k, v in resp.headers.items()},
            raw,
            str(resp.request.url),
        )

    async def json(self, method: str, path_or_url: str, options: RequestOptions) -> Json | None:
        """The answer's JSON object, or None for an empty 2xx body."""
        answer = await self.exchange(method, path_or_url, options)
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

    # -- the request loop ------------------------------------------------------------------------

    @asynccontextmanager
    async def open(
        self, method: str, path_or_url: str, options: RequestOptions
    ) -> AsyncIterator[httpx.Response]:
        """Send until Graph gives an answer worth returning, holding the limits meanwhile.

        Yields the (streamed) response with the slot still held; the slot is released and
        the response closed when the caller's block ends. ``options.json`` is not encoded
        here: pass the body as ``content`` (``exchange`` does).
        """
        url = self.absolute(path_or_url)
        parsed = httpx.URL(url)  # once: each parse was a visible share of a request's CPU
        ours = self._is_origin(parsed)
        if options.auth and not ours:
            raise ValueError(f"refusing to send the Graph token to {parsed.host}")
        method = method.upper()
        target = target_for(
            self.tenant_key, parsed.path if ours else "", options.mailbox, options.scope
        )
        pauses = tuple(dict.fromkeys(target.clear + options.pauses))
        safe = options.idempotent if options.idempotent is not None else method in _IDEMPOTENT
        state = RetryState()
        request_id = str(uuid.uuid4())
        while True:
            await self.clear(pauses)
            delay = 0.0
            async with AsyncExitStack() as stack:
                adaptive = await self._hold(stack, target, options)
                token = await self.tokens.token() if options.auth else None
                await self.clear(pauses)  # a pause may have begun while we queued
                while (heard := self._heard_pause(pauses)) > 0:
                    await asyncio.sleep(heard)
                    await self.clear(pauses)
                request = self.http.build_request(
                    method,
                    parsed,
                    params=options.params,
                    content=options.content,
                    headers=self._headers(options.headers, token, request_id),
                )
                self.stats.requests += 1
                try:
                    resp = await self.http.send(request, stream=True)
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
                    if options.learn:
                        await self._learn(target, adaptive, resp.status_code)
                    if verdict is None:
                        yield resp
                        return
                    delay = verdict
            if delay > 0:
                await asyncio.sleep(delay)

    async def _judge(
        self,
        resp: httpx.Response,
        state: RetryState,
        target: Target,
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
        if not throttled and status not in RETRYABLE_5XX:
            await self._heed_rate_limit(resp, target)
            return None
        if retry_after is not None:
            # This process's requests first, before anything can yield to another task; then
            # every sharer of this key (even before reading the body), still holding the slot.
            self._hear_pause(target.record, retry_after)
            await self.record_retry_after(target.record, retry_after)
            log.debug("throttled on %s for %.3f s", target.record, retry_after)
        raw = await self.read(resp)
        if status in (429, 503):
            self.count_throttled(status)
        if not throttled:
            delay = self._failure(state, resp, None, method, str(resp.request.url), raw)
            self.stats.retries += 1
            return 0.0 if retry_after is not None else delay
        wait = retry_after if retry_after is not None else self.policy.backoff(state.throttles)
        self.check_deadline(state, wait, lambda: self.error(resp, raw, method), status)
        self.stats.retries += 1
        # With a Retry-After the wait happens in clear() (shared); without, back off alone.
        return 0.0 if retry_after is not None else wait

    def check_deadline(
        self,
        state: RetryState,
        wait: float,
        cause: Callable[[], GraphError] | None,
        status: int = 429,
        method: str = "POST",
    ) -> None:
        """Count one throttle; raise ``Throttled`` if waiting ``wait`` more would pass the
        deadline. ``cause`` builds the error that explains it (None: a ``$batch``'s)."""
        now = time.monotonic()
        state.first_throttle = state.first_throttle or now
        state.throttles += 1
        elapsed = now - state.first_throttle
        if elapsed + wait <= self.policy.deadline_seconds:
            return
        if cause is None:
            raise Throttled(
                429,
                "TooManyRequests",
                "batch requests still throttled at the deadline",
                retry_after=wait,
                method=method,
                url="$batch",
            )
        error = cause()
        raise Throttled(
            status,
            error.code or "TooManyRequests",
            f"still throttled after {elapsed:.0f} s: {error.message}",
            request_id=error.request_id,
            retry_after=wait,
            method=error.method,
            url=error.url,
        )

    def _failure(
        self,
        state: RetryState,
        resp: httpx.Response | None,
        exc: Exception | None,
        method: str,
        url: str,
        raw: bytes = b"",
    ) -> float:
        """Count a 5xx or network failure; raise ``TransientError`` once out of attempts."""
        state.failures += 1
        if state.failures >= self.policy.max_attempts:
            if resp is not None:
                error = self.error(resp, raw, method)
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
        return self.policy.backoff(state.failures)

    def count_throttled(self, status: int) -> None:
        self.stats.throttled += 1
        GRAPH_THROTTLED.labels(str(status)).inc()

    # -- limits ----------------------------------------------------------------------------------

    def _hear_pause(self, key: str, seconds: float) -> None:
        now = time.monotonic()
        self._heard = {k: until for k, until in self._heard.items() if until > now}
        until = now + seconds + self.policy.retry_after_margin
        self._heard[key] = max(until, self._heard.get(key, 0.0))

    def _heard_pause(self, keys: tuple[str, ...]) -> float:
        """Seconds left of the longest pause this transport heard for ``keys`` (0: none)."""
        if not self._heard:
            return 0.0
        now = time.monotonic()
        return max((self._heard.get(key, 0.0) - now for key in keys), default=0.0)

    async def record_retry_after(self, key: str, seconds: float) -> None:
        await self.limiter.record_retry_after(key, seconds + self.policy.retry_after_margin)

    async def clear(self, keys: tuple[str, ...]) -> None:
        started = time.monotonic()
        for key in keys:
            await self.limiter.wait_for_clearance(key)
        waited = time.monotonic() - started
        if waited > 0.001:
            self.stats.retry_after_waited_seconds += waited
            GRAPH_RETRY_AFTER_WAIT.inc(waited)

    async def _hold(
        self, stack: AsyncExitStack, target: Target, options: RequestOptions
    ) -> list[tuple[str, int]]:
        """Take the request's concurrency slots (mailbox, then SharePoint's tenant-wide one,
        then the tenant's); return the adaptive keys held, with their ceilings.

        A batch to one mailbox runs several of its requests at once inside Exchange, so it
        takes ``width`` slots, atomically (and no more than the mailbox's window grants).
        Pre-authenticated download and upload URLs are not Graph calls: they take the
        mailbox slot but not SharePoint's tenant-wide one.
        """
        held: list[tuple[str, int]] = []
        if target.slot is not None:
            ceiling = self.mailbox_concurrency
            await stack.enter_async_context(
                self.limiter.slot(
                    target.slot, limit=ceiling, count=max(1, options.width), adaptive=True
                )
            )
            held.append((target.slot, ceiling))
        if target.shared is not None and options.auth:
            ceiling = self.sharepoint_concurrency
            await stack.enter_async_context(
                self.limiter.slot(target.shared, limit=ceiling, adaptive=True)
            )
            held.append((target.shared, ceiling))
        if self.tenant_concurrency:
            key = f"{self.tenant_key}:all"
            await stack.enter_async_context(
                self.limiter.slot(key, limit=self.tenant_concurrency, adaptive=True)
            )
            held.append((key, self.tenant_concurrency))
        return held

    async def _learn(self, target: Target, held: list[tuple[str, int]], status: int) -> None:
        """Feed an answer to the windows it bears on: the one of the regime that throttled
        it (its mailbox's, or SharePoint's tenant-wide one; a OneDrive request also holds its
        owner's mailbox slot, but SharePoint's 429s say nothing of Exchange's limit) and the
        tenant's. A 429 cuts them, a final answer grows them; a 5xx or a 401 says nothing
        about load and leaves them alone."""
        if status != 429 and (status >= 500 or status == 401):
            return
        tenant_wide = f"{self.tenant_key}:all"
        for key, ceiling in held:
            if key in (target.record, tenant_wide):
                await self.limiter.record_outcome(key, throttled=status == 429, ceiling=ceiling)

    def adaptive_key(self, target: Target) -> tuple[str, int] | None:
        """The window a request's 429s bear on (its mailbox's, or SharePoint's tenant-wide
        one), with its ceiling; None for the directory, whose limits are not per key."""
        if target.slot is not None and target.record == target.slot:
            return target.slot, self.mailbox_concurrency
        if target.shared is not None:
            return target.shared, self.sharepoint_concurrency
        return None

    async def learn(self, key: tuple[str, int], *, throttled: bool) -> None:
        await self.limiter.record_outcome(key[0], throttled=throttled, ceiling=key[1])

    async def _heed_rate_limit(self, resp: httpx.Response, target: Target) -> None:
        """Pause the resource near its budget, before SharePoint starts answering 429."""
        remaining = _number(resp.headers.get("ratelimit-remaining"))
        limit = _number(resp.headers.get("ratelimit-limit"))
        reset = _number(resp.headers.get("ratelimit-reset"))
        if remaining is None or limit is None or not reset:
            return
        if remaining < max(RATE_LIMIT_RESERVE_MIN, RATE_LIMIT_RESERVE * limit):
            await self.limiter.record_retry_after(target.record, reset)

    def target(self, url: str, mailbox: str | None, scope: Scope | None) -> Target:
        return target_for(self.tenant_key, self.graph_path(url), mailbox, scope)

    def graph_path(self, url: str) -> str:
        """The decoded path of ``url`` when it is on Graph's origin, else "": what throttling
        keys are made of."""
        path, on_origin = self._path_of(url)
        return path if on_origin else ""

    def _path_of(self, url: str) -> tuple[str, bool]:
        """The decoded path of an absolute ``url``, and whether it is on Graph's origin. URLs
        on the origin (ours from ``absolute``, and Graph's next and delta links, whose
        skiptokens make them long) are read without a full URL parse; anything else goes
        through httpx."""
        prefix = self.root + "/"
        if url.startswith(prefix):
            path = url[len(self.root) :].partition("?")[0]
            if "#" not in path and "/." not in path:  # no fragment, no dot segments
                return unquote(path), True
        parsed = httpx.URL(url)
        return parsed.path, self._is_origin(parsed)

    # -- URLs, headers, answers ------------------------------------------------------------------

    def _headers(
        self, extra: Mapping[str, str] | None, token: str | None, request_id: str
    ) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "client-request-id": request_id}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if extra:
            headers.update(extra)
        return headers

    def absolute(self, path_or_url: str) -> str:
        if is_absolute(path_or_url):
            return path_or_url
        return self.root + self.version_path(path_or_url)

    def version_path(self, path_or_url: str) -> str:
        if is_absolute(path_or_url):
            return self._path_of(path_or_url)[0]
        path = path_or_url if path_or_url.startswith("/") else "/" + path_or_url
        if path.startswith(("/v1.0/", "/beta/")):
            return path
        return f"/{self.api_version}{path}"

    def same_origin(self, url: str) -> bool:
        return self._is_origin(httpx.URL(url))

    def _is_origin(self, parsed: httpx.URL) -> bool:
        return (parsed.scheme, parsed.host, parsed.port) == (
            self._origin.scheme,
            self._origin.host,
            self._origin.port,
        )

    async def read(self, resp: httpx.Response) -> bytes:
        raw = await resp.aread()
        self.stats.bytes_downloaded += len(raw)
        return raw

    def error(self, resp: httpx.Response, raw: bytes, method: str) -> GraphError:
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
