"""JSON ``$batch``: up to 20 requests per call, each throttled and retried on its own.

Graph answers every inner request separately (its own status, headers and ``Retry-After``),
in any order, and fails a request whose ``dependsOn`` failed with 424. Inner requests
refused with 429 or 5xx are sent again, with whatever depended on them, once their own
``Retry-After`` has passed for everyone sharing their limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from safekeep.graph.errors import GraphError, classify, parse_retry_after
from safekeep.graph.options import Json, RequestOptions
from safekeep.graph.targets import exchange_mailboxes
from safekeep.graph.transport import RETRYABLE_5XX, RetryState, Transport, is_absolute

BATCH_LIMIT = 20  # requests per JSON $batch


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


@dataclass
class _Round:
    """What one call of a group came back with: the answers to keep and those to resend."""

    final: dict[str, BatchResponse] = field(default_factory=dict)
    retry: dict[str, BatchRequest] = field(default_factory=dict)
    waits: dict[str, float] = field(default_factory=dict)  # limiter key -> Retry-After
    transient: bool = False  # some refusal was a 5xx rather than a 429


async def run(
    transport: Transport, requests: Sequence[BatchRequest], mailbox: str | None
) -> list[BatchResponse]:
    """Answers in request order; requests linked by ``depends_on`` share a call."""
    ids = [r.id for r in requests]
    if len(set(ids)) != len(ids):
        raise ValueError("batch request ids must be unique")
    known = set(ids)
    for request in requests:
        missing = set(request.depends_on or ()) - known
        if missing:
            raise ValueError(f"request {request.id} depends on unknown ids {sorted(missing)}")
    results: dict[str, BatchResponse] = {}
    for group in pack(requests, BATCH_LIMIT):
        results.update(await _run_group(transport, group, mailbox))
    return [results[i] for i in ids]


async def _run_group(
    transport: Transport, group: list[BatchRequest], mailbox: str | None
) -> dict[str, BatchResponse]:
    final: dict[str, BatchResponse] = {}
    pending = list(group)
    state = RetryState()
    while pending:
        box = mailbox or _single_mailbox(transport, pending)
        answers = await _send(transport, pending, box)
        outcome = _sort(transport, pending, answers, box)
        final.update(outcome.final)
        if not outcome.retry:
            break
        delay = await _pause(transport, outcome, state)
        if delay is None:
            break  # out of attempts: give the 5xx answers back as they are
        for request_id in outcome.retry:
            del final[request_id]
        pending = [r for r in pending if r.id in outcome.retry]
        transport.stats.retries += len(pending)
        if delay:
            await asyncio.sleep(delay)
    return final


async def _send(
    transport: Transport, pending: list[BatchRequest], box: str | None
) -> dict[str, Json]:
    exchange = [r for r in pending if exchange_mailboxes([transport.version_path(r.url)])]
    width = min(transport.mailbox_concurrency, len(exchange)) if box and exchange else 1
    options = RequestOptions(
        json={"requests": [_inner_json(transport, r, pending) for r in pending]},
        mailbox=box,
        expected=(200,),
        idempotent=all(r.method.upper() == "GET" for r in pending),
        scope="exchange" if box and exchange else None,
        width=max(1, width),
    )
    body = await transport.json("POST", "/$batch", options)
    return {str(a.get("id")): a for a in (body or {}).get("responses", [])}


def _sort(
    transport: Transport,
    pending: list[BatchRequest],
    answers: Mapping[str, Json],
    box: str | None,
) -> _Round:
    outcome = _Round()
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
        if status == 429 or status in RETRYABLE_5XX:
            outcome.retry[request.id] = request
            if status in (429, 503):
                transport.count_throttled(status)
            outcome.transient = outcome.transient or status != 429
            wait = parse_retry_after(_header(headers, "retry-after"))
            if wait is not None:
                key = transport.target(transport.absolute(request.url), box, None).record
                outcome.waits[key] = max(outcome.waits.get(key, 0.0), wait)
        outcome.final[request.id] = BatchResponse(request.id, status, headers, answer.get("body"))
    _add_failed_dependents(pending, outcome)
    return outcome


def _add_failed_dependents(pending: list[BatchRequest], outcome: _Round) -> None:
    """A 424 caused by a request we are about to resend is not final either."""
    grew = True
    while grew:
        grew = False
        for request in pending:
            if request.id in outcome.retry or outcome.final[request.id].status != 424:
                continue
            if any(dep in outcome.retry for dep in request.depends_on or ()):
                outcome.retry[request.id] = request
                grew = True


async def _pause(transport: Transport, outcome: _Round, state: RetryState) -> float | None:
    """Record the round's Retry-Afters for every sharer and say how long this caller waits
    on its own before resending (None: out of attempts)."""
    if outcome.waits or not outcome.transient:
        longest = max(outcome.waits.values(), default=transport.policy.backoff(state.throttles))
        transport.check_deadline(state, longest, None)
        for key, wait in outcome.waits.items():
            await transport.record_retry_after(key, wait)
        return 0.0 if outcome.waits else longest
    state.failures += 1
    if state.failures >= transport.policy.max_attempts:
        return None
    return transport.policy.backoff(state.failures)


def _inner_json(transport: Transport, request: BatchRequest, pending: list[BatchRequest]) -> Json:
    url = request.url
    if is_absolute(url):
        prefix = f"{transport.root}/{transport.api_version}"
        if not url.startswith(prefix):
            raise ValueError(f"batch url outside Graph {transport.api_version}: {url}")
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


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _single_mailbox(transport: Transport, requests: Sequence[BatchRequest]) -> str | None:
    """The one mailbox every Exchange request of a batch addresses, if there is one."""
    paths = []
    for request in requests:
        if is_absolute(request.url):
            paths.append(transport.version_path(request.url))
            continue
        path = request.url if request.url.startswith("/") else "/" + request.url
        paths.append(path if path.startswith(("/v1.0/", "/beta/")) else "/v1.0" + path)
    found = exchange_mailboxes(paths)
    return found.pop() if len(found) == 1 else None


def pack(requests: Sequence[BatchRequest], limit: int) -> list[list[BatchRequest]]:
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
