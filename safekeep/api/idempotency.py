"""``Idempotency-Key`` on creating POSTs: the first answer is stored with the change it made
(same transaction) and replayed for a repeat; the same key with a different request is a 422.

Records belong to the MSP, not to one API key, so a replay is only given to a caller who could
have made the request itself: the route's scope dependency has already run (a replay is always
of the same method and path), and a key limited to some tenants gets one only when the request
names a tenant within its limit (in its path, and in the stored answer when that has one).
Otherwise there is no replay and the route runs its own checks, which refuse such a caller
(a tenant outside the limit is not found; MSP-wide creates need an unlimited key).
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

from fastapi import Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.api.deps import SessionDep
from safekeep.errors import IdempotencyKeyReused
from safekeep.tenants.idempotency import service
from safekeep.tenants.scope import Principal

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Repeat a create safely: the first answer is replayed for the same key",
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

    async def replay(self, principal: Principal) -> JSONResponse | None:
        if self.key is None:
            return None
        record = await service.find(self.session, principal.msp_id, self.key)
        if record is None:
            return None
        if not _within_limit(principal, self.path_tenant_id, record.body):
            return None
        if record.request_hash != self.request_hash:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was already used with a different request"
            )
        return JSONResponse(
            record.body, status_code=record.status_code, headers={"Idempotent-Replayed": "true"}
        )

    async def save(
        self,
        principal: Principal,
        status_code: int,
        body: BaseModel | Any,
        *,
        stored: BaseModel | Any | None = None,
    ) -> Any:
        """Keep the answer for replays; ``stored`` replaces it where the answer holds a
        secret that must be shown only once (a replay then carries the secret as null)."""
        if self.key is not None:
            body_to_store = body if stored is None else stored
            await service.save(
                self.session,
                msp_id=principal.msp_id,
                key=self.key,
                method=self.method,
                path=self.path,
                request_hash=self.request_hash,
                status_code=status_code,
                body=jsonable_encoder(body_to_store),
            )
        return body


def _within_limit(principal: Principal, path_tenant_id: str | None, stored: Any) -> bool:
    """Whether every tenant the replayed request concerns is one this key may touch."""
    if principal.tenant_ids is None:
        return True
    if path_tenant_id is None:
        return False
    named: list[object] = [path_tenant_id]
    if isinstance(stored, dict):
        named.append(stored.get("tenant_id"))
    for value in named:
        if value is None:
            continue
        try:
            tenant_id = uuid.UUID(str(value))
        except ValueError:
            return False
        if not principal.scope.allows(tenant_id):
            return False
    return True


async def get_idempotency(
    request: Request, session: SessionDep, key: IdempotencyKeyHeader = None
) -> Idempotency:
    body = await request.body()
    with contextlib.suppress(ValueError):  # canonical JSON: whitespace and key order don't count
        body = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
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
    """Makes a creating route idempotent, the same way for every one: a repeat gets the stored
    answer and the route does not run again; a first call's answer is kept for replays, with
    the fields named in ``shown_once`` (a secret shown only once) as null.

    The route declares ``principal`` (its scope dependency) and returns its answer's model;
    the decorator adds the ``Idempotency-Key`` dependency to its signature, so FastAPI
    resolves it (after the route's own dependencies) and documents the header as before."""

    def decorate(route: Route) -> Route:
        signature = inspect.signature(route, eval_str=True)
        key = inspect.Parameter(
            "idempotency", inspect.Parameter.KEYWORD_ONLY, annotation=IdempotencyDep
        )

        @functools.wraps(route)
        async def answer(*, idempotency: Idempotency, **kwargs: Any) -> Any:
            principal: Principal = kwargs["principal"]
            if (replay := await idempotency.replay(principal)) is not None:
                return replay
            body = await route(**kwargs)
            stored = body.model_copy(update=dict.fromkeys(shown_once)) if shown_once else None
            return await idempotency.save(principal, status_code, body, stored=stored)

        answer.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*signature.parameters.values(), key]
        )
        return answer

    return decorate
