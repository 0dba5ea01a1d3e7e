"""``Idempotency-Key`` on creating POSTs (as Stripe's API and the IETF draft
draft-ietf-httpapi-idempotency-key-header describe it).

The first request with a key claims it before the route runs: an insert under the unique
``(msp_id, key)``, committed at once, so that of concurrent requests with one key exactly one
runs. Its answer is stored in the claim in the transaction that commits the route's change,
and replayed for a repeat (``Idempotent-Replayed: true``). Meanwhile a repeat gets a 409
(``idempotency-key-in-progress``, with ``Retry-After``) and changes nothing. The same key with
a different request (method, path or body) is a 422 (``idempotency-key-reused``). A request
that fails (an error answer of any status, or an exception) releases its claim, so a retry
runs; a claim left by a request that died is free once ``CLAIM_TIMEOUT`` has passed, and a
record once it is past its retention. A live record is never replaced.

Records belong to the MSP, not to one API key, so a record is only used by a caller who could
have made its request itself: the route's scope dependency has already run (a replay is
always of the same method and path), and a key limited to some tenants uses one only when
the request names a tenant within its limit. A request such a key could not make at all (a
tenant outside its limit, an MSP-wide create) is left to the route's own checks, which refuse
it (a tenant outside the limit is not found; MSP-wide creates need an unlimited key) without
reading, claiming or storing anything under the key. A record whose stored answer concerns a
tenant outside the caller's limit (necessarily another request) is a 422, as for any key
reused with another request: the caller neither sees it nor runs the route under the key.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import structlog
from fastapi import Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.api.deps import SessionDep
from safekeep.errors import Conflict, IdempotencyKeyReused
from safekeep.tenants.idempotency import service
from safekeep.tenants.models import IdempotencyRecord
from safekeep.tenants.scope import Principal

log = structlog.get_logger(__name__)

# What a 409 tells a client to wait before trying the key again.
RETRY_AFTER_SECONDS = 1


class IdempotencyKeyInProgress(
    Conflict,
    slug="idempotency-key-in-progress",
    title="A request with this Idempotency-Key is in progress",
):
    pass


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Repeat a create safely: the first answer is replayed for the same key "
        "(`Idempotent-Replayed: true`); while the first request with it runs, a repeat gets "
        "409 `idempotency-key-in-progress` with `Retry-After`; the key with another request "
        "is 422 `idempotency-key-reused`",
    ),
]


class Idempotency:
    def __init__(
        self,
        session: AsyncSession,
        key: str | None,
        method: str,
        path: str,
        body: bytes,
        *,
        path_tenant_id: str | None = None,
    ):
        self.session = session
        self.key = key
        self.method = method
        self.path = path
        self.path_tenant_id = path_tenant_id
        self.request_hash = hashlib.sha256(
            method.encode() + b" " + path.encode() + b"\n" + body
        ).hexdigest()
        self.claim_id: uuid.UUID | None = None

    async def claim(self, principal: Principal) -> JSONResponse | None:
        """Claim the key for this request and commit the claim (None: the route may run), or
        answer a repeat: the stored answer's replay; 409 while the key's first request is in
        progress; 422 for a key used with another request. Nothing is changed by a repeat."""
        assert self.key is not None
        found = await service.claim(
            self.session,
            msp_id=principal.msp_id,
            key=self.key,
            method=self.method,
            path=self.path,
            request_hash=self.request_hash,
        )
        if isinstance(found, uuid.UUID):
            # Committed before the route runs: a concurrent request now finds the key taken.
            await self.session.commit()
            self.claim_id = found
            return None
        if found is not None and (
            found.request_hash != self.request_hash or not _answer_within_limit(principal, found)
        ):
            raise IdempotencyKeyReused(
                "This Idempotency-Key was already used with a different request"
            )
        if found is None or found.status_code is None:
            raise IdempotencyKeyInProgress(
                "A request with this Idempotency-Key is still in progress; retry it later "
                "to get its answer",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return JSONResponse(
            found.body, status_code=found.status_code, headers={"Idempotent-Replayed": "true"}
        )

    async def complete(
        self,
        status_code: int,
        body: BaseModel | Any,
        *,
        stored: BaseModel | Any | None = None,
    ) -> Any:
        """Keep the answer for replays and commit it with the route's change; ``stored``
        replaces it where the answer holds a secret that must be shown only once (a replay
        then carries the secret as null)."""
        assert self.claim_id is not None
        body_to_store = body if stored is None else stored
        kept = await service.complete(
            self.session,
            self.claim_id,
            status_code=status_code,
            body=jsonable_encoder(body_to_store),
        )
        if not kept:
            # The claim went stale and a retry took the key: this change must not commit.
            raise IdempotencyKeyInProgress(
                "This request took so long that a retry with the same Idempotency-Key took "
                "its place; nothing was changed. Retry it to get that request's answer",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        await self.session.commit()
        self.claim_id = None
        return body

    async def release(self) -> None:
        """After the route failed: undo its work and free the key, so a retry runs. A release
        that fails too is left to the claim's timeout."""
        claim_id, self.claim_id = self.claim_id, None
        if claim_id is None:
            return
        try:
            await self.session.rollback()
            await service.release(self.session, claim_id)
            await self.session.commit()
        except Exception as exc:
            log.warning(
                "idempotency_release_failed",
                path=self.path,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
            with contextlib.suppress(Exception):
                await self.session.rollback()


def _tenant_allowed(principal: Principal, value: object) -> bool:
    try:
        tenant_id = uuid.UUID(str(value))
    except ValueError:
        return False
    return principal.scope.allows(tenant_id)


def _request_within_limit(principal: Principal, path_tenant_id: str | None) -> bool:
    """Whether this key may make the request at all: unlimited, or naming a tenant of its
    limit in the path (a limited key makes no MSP-wide creates)."""
    if principal.tenant_ids is None:
        return True
    return path_tenant_id is not None and _tenant_allowed(principal, path_tenant_id)


def _answer_within_limit(principal: Principal, record: IdempotencyRecord) -> bool:
    """Whether the tenant a stored answer names (if any) is one this key may see."""
    if principal.tenant_ids is None or not isinstance(record.body, dict):
        return True
    tenant_id = record.body.get("tenant_id")
    return tenant_id is None or _tenant_allowed(principal, tenant_id)


def canonical_body(body: bytes) -> bytes:
    """The body as compact JSON with sorted keys (whitespace and key order don't count), or
    as it came when it is not JSON that can be read back and written again. Never raises:
    a hostile body (nested past the recursion limit, an integer too long to convert, bytes
    that are not UTF-8) is hashed as raw bytes, and the route answers it."""
    try:
        return json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except Exception:
        return body


async def get_idempotency(
    request: Request, session: SessionDep, key: IdempotencyKeyHeader = None
) -> Idempotency:
    body = canonical_body(await request.body())
    tenant = request.path_params.get("tenant_id")
    return Idempotency(
        session,
        key,
        request.method,
        request.url.path,
        body,
        path_tenant_id=str(tenant) if tenant is not None else None,
    )


IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]

Route = Callable[..., Awaitable[BaseModel]]


def idempotent(status_code: int, *, shown_once: tuple[str, ...] = ()) -> Callable[[Route], Route]:
    """Makes a creating route idempotent, the same way for every one: the first request with
    a key claims it, runs, and keeps its answer (with the fields named in ``shown_once``, a
    secret shown only once, as null); a repeat gets the stored answer, or a 409 while the
    first is running, and the route does not run again (see the module's docstring).

    The route declares ``principal`` (its scope dependency) and returns its answer's model;
    the decorator adds the ``Idempotency-Key`` dependency to its signature, so FastAPI
    resolves it (after the route's own dependencies) and documents the header as before.
    With a key, the request's session is committed by the decorator: the claim before the
    route runs, the route's change with the answer after it."""

    def decorate(route: Route) -> Route:
        signature = inspect.signature(route, eval_str=True)
        key = inspect.Parameter(
            "idempotency", inspect.Parameter.KEYWORD_ONLY, annotation=IdempotencyDep
        )

        @functools.wraps(route)
        async def answer(*, idempotency: Idempotency, **kwargs: Any) -> Any:
            principal: Principal = kwargs["principal"]
            if idempotency.key is None or not _request_within_limit(
                principal, idempotency.path_tenant_id
            ):
                return await route(**kwargs)
            if (replay := await idempotency.claim(principal)) is not None:
                return replay
            try:
                body = await route(**kwargs)
                stored = body.model_copy(update=dict.fromkeys(shown_once)) if shown_once else None
                return await idempotency.complete(status_code, body, stored=stored)
            except BaseException:
                await idempotency.release()
                raise

        answer.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*signature.parameters.values(), key]
        )
        return answer

    return decorate
