"""JSON ``$batch``: up to 20 requests per call, each throttled and retried on its own.

Graph answers every inner request separately (its own status, headers and ``Retry-After``),
in any order, and fails a request whose ``dependsOn`` failed with 424. Inner requests
refused with 429 or 5xx are sent again, with whatever depended on them, once their own
``Retry-After`` has passed for everyone sharing their limits.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pybase64

from safekeep.graph.errors import GraphError, classify, parse_retry_after
from safekeep.graph.options import Json, RequestOptions, Scope
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

    def binary(self) -> bytes:
        """A binary answer (a MIME ``$value``, a photo): inside ``$batch`` it comes back as a
        base64 string. Decoded strictly by a SIMD decoder (a few percent of a full backup's
        CPU went to the standard one), leniently as before if that refuses it."""
        self.raise_for_error()
        if not isinstance(self.body, str):
            raise GraphError(self.status, "InvalidBatchBody", "expected a base64 string body")
        try:
            return pybase64.b64decode(self.body, validate=True)
        except (binascii.Error, ValueError):
            pass
        try:
            return base64.b64decode(self.body, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise GraphError(self.status, "InvalidBatchBody", "unreadable base64 body") from exc


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
    for chain in pack(requests, len(requests), chains=True):
        _check_chain(chain)
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
    """Send ``pending`` and collect the answers by id.

    Exchange runs up to 4 requests of an envelope at once against the mailbox's limit, so
    when the mailbox's adaptive window grants fewer than that, the requests go in envelopes
    of at most that many (a ``dependsOn`` chain runs one at a time and is never split), one
    after the other, each holding as many slots as it carries Exchange requests.
    """
    answers: dict[str, Json] = {}
    rest = list(pending)
    while rest:
        size = await _envelope_size(transport, rest, box)
        part = pack(rest, size)[0]  # a chain always goes on its own
        answers.update(await _send_envelope(transport, part, box))
        sent = {r.id for r in part}
        rest = [r for r in rest if r.id not in sent]
    return answers


async def _envelope_size(transport: Transport, pending: list[BatchRequest], box: str | None) -> int:
    """How many of ``pending`` the next envelope may carry (read again before each one,
    since the previous envelope's answers may have cut the window)."""
    exchange = [r for r in pending if exchange_mailboxes([transport.version_path(r.url)])]
    if not (box and exchange):
        return BATCH_LIMIT
    key = transport.target(transport.absolute(exchange[0].url), box, "exchange").slot
    assert key is not None
    window = await transport.limiter.window(key, ceiling=transport.mailbox_concurrency)
    if window >= transport.mailbox_concurrency:
        return BATCH_LIMIT
    return max(window, *(len(c) for c in pack(pending, BATCH_LIMIT, chains=True)))


async def _send_envelope(
    transport: Transport, pending: list[BatchRequest], box: str | None
) -> dict[str, Json]:
    exchange = [r for r in pending if exchange_mailboxes([transport.version_path(r.url)])]
    width = min(transport.mailbox_concurrency, len(exchange)) if box and exchange else 1
    targets = [transport.target(transport.absolute(r.url), box, None) for r in pending]
    scope: Scope | None = None
    if box and exchange:
        scope = "exchange"
    elif all(t.shared is not None for t in targets):
        scope = "sharepoint"
    options = RequestOptions(
        json={"requests": [_inner_json(transport, r, pending) for r in pending]},
        mailbox=box,
        expected=(200,),
        idempotent=all(r.method.upper() == "GET" for r in pending),
        scope=scope,
        width=max(1, width),
        learn=False,
        pauses=tuple(dict.fromkeys(key for t in targets for key in t.clear)),
    )
    body = await transport.json("POST", "/$batch", options)
    answers = {str(a.get("id")): a for a in (body or {}).get("responses", [])}
    await _heed_retry_after(transport, pending, answers, box)
    await _learn(transport, pending, answers, box)
    return answers


async def _heed_retry_after(
    transport: Transport, pending: list[BatchRequest], answers: Mapping[str, Json], box: str | None
) -> None:
    """Record each inner Retry-After for every sharer of its key at once, before the next
    envelope (or anyone else's request) can go to that mailbox or resource."""
    waits: dict[str, float] = {}
    for request in pending:
        answer = answers.get(request.id) or {}
        headers = {str(k): str(v) for k, v in (answer.get("headers") or {}).items()}
        wait = parse_retry_after(_header(headers, "retry-after"))
        status = int(answer.get("status") or 0)
        if wait is not None and (status == 429 or status in RETRYABLE_5XX):
            key = transport.target(transport.absolute(request.url), box, None).record
            waits[key] = max(waits.get(key, 0.0), wait)
    for key, wait in waits.items():
        await transport.record_retry_after(key, wait)


async def _learn(
    transport: Transport, pending: list[BatchRequest], answers: Mapping[str, Json], box: str | None
) -> None:
    """Teach each window its inner answers: a cut if any was a 429, else a step per answer
    that was not a 5xx (which says nothing about load)."""
    outcomes: dict[tuple[str, int], list[int]] = {}
    for request in pending:
        status = int((answers.get(request.id) or {}).get("status") or 0)
        target = transport.target(transport.absolute(request.url), box, None)
        key = transport.adaptive_key(target)
        if key is not None and status and status < 500:
            outcomes.setdefault(key, []).append(status)
    for key, statuses in outcomes.items():
        if 429 in statuses:
            await transport.learn(key, throttled=True)
            continue
        for _ in statuses:
            await transport.learn(key, throttled=False)


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
    """How long this caller waits on its own before resending (None: out of attempts).
    The round's Retry-Afters are already recorded for every sharer (``_heed_retry_after``)
    and the resend waits for them in the transport."""
    if outcome.waits or not outcome.transient:
        longest = max(outcome.waits.values(), default=transport.policy.backoff(state.throttles))
        transport.check_deadline(state, longest, None)
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


def _check_chain(requests: Sequence[BatchRequest]) -> None:
    """Graph runs linked requests only as one sequence: each depends on at most one other,
    none has two dependents, and one (the first) depends on none."""
    firsts = [r for r in requests if not r.depends_on]
    depended = [d for r in requests for d in r.depends_on or ()]
    one_each = len(depended) == len(set(depended)) == len(requests) - 1
    if len(firsts) != 1 or not one_each:
        raise ValueError(
            "dependsOn must link requests into one sequence: "
            + ", ".join(f"{r.id} <- {list(r.depends_on or ())}" for r in requests)
        )


def pack(
    requests: Sequence[BatchRequest], limit: int, *, chains: bool = False
) -> list[list[BatchRequest]]:
    """Split into calls of at most ``limit``, keeping each dependsOn chain in one call of
    its own: Graph runs a call fully in parallel or fully in sequence, and refuses one that
    mixes a chain with other requests (with ``chains``: the chains themselves, one list
    each)."""
    parent = {r.id: r.id for r in requests}

    def root(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for request in requests:
        for dep in request.depends_on or ():
            if dep in parent:
                parent[root(dep)] = root(request.id)
    components: dict[str, list[BatchRequest]] = {}
    for request in requests:
        components.setdefault(root(request.id), []).append(request)
    if chains:
        return list(components.values())
    groups: list[list[BatchRequest]] = []
    sequences: list[list[BatchRequest]] = []
    current: list[BatchRequest] = []
    for component in components.values():
        if len(component) > limit:
            raise ValueError(f"a dependsOn chain of {len(component)} requests exceeds {limit}")
        if len(component) > 1:
            sequences.append(component)
            continue
        if len(current) + len(component) > limit:
            groups.append(current)
            current = []
        current.extend(component)
    if current:
        groups.append(current)
    return groups + sequences
