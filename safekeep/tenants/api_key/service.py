"""API keys: high-entropy bearer secrets, shown once, stored as SHA-256.

A fast hash is enough here (unlike passwords) because the secret has 256 bits of entropy; a
lookup by hash also keeps authentication one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.errors import Forbidden, NotFound, UnprocessableEntity
from safekeep.tenants.api_key import repository
from safekeep.tenants.audit import service as audit
from safekeep.tenants.models import ApiKey, MspStatus, utcnow
from safekeep.tenants.pagination import Page
from safekeep.tenants.remembered import REMEMBER_SECONDS, Remembered
from safekeep.tenants.scope import Principal, Scope
from safekeep.tenants.tenant import repository as tenant_repository

KEY_PREFIX = "sk_"

# How stale a key's ``last_used_at`` may be: reads do not write on every call, only when the
# recorded use is older than this.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Grant:
    """A live key as authentication sees it: who it acts for and what it may do."""

    principal: Principal
    msp_status: MspStatus


# How long an API process answers from its memory of a key before reading it again: the bound
# on how late *another* process notices a revocation or an MSP's suspension; the process that
# revokes a key forgets it at once (when the revocation commits).
GRANT_CACHE_SECONDS = REMEMBER_SECONDS


@dataclass(slots=True)
class _KnownKey:
    grant: Grant
    expires_at: datetime | None
    used_at: datetime | None  # the key's last_used_at as last read or written here


class GrantCache(Remembered[str, _KnownKey]):
    """Live keys by secret hash (see ``Remembered``). Unknown, revoked and expired keys are
    never kept, so a wrong guess costs a read every time and fills nothing."""


GRANTS = GrantCache()


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def issue(
    session: AsyncSession,
    *,
    msp_id: uuid.UUID,
    name: str,
    scopes: Sequence[Scope],
    tenant_ids: Sequence[uuid.UUID] | None,
    created_by: uuid.UUID | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    secret = new_secret()
    key = ApiKey(
        msp_id=msp_id,
        name=name,
        prefix=secret[: len(KEY_PREFIX) + 6],
        secret_hash=hash_secret(secret),
        scopes=sorted({s.value for s in scopes}),
        tenant_ids=sorted(str(t) for t in tenant_ids) if tenant_ids is not None else None,
        created_by=created_by,
        expires_at=expires_at,
    )
    session.add(key)
    await session.flush()
    return key, secret


async def authenticate(session: AsyncSession, secret: str) -> Grant | None:
    """The grant of the live key with this secret, or None (unknown, revoked, expired).

    One indexed query reads the key with its MSP, remembered for ``GRANT_CACHE_SECONDS``
    (see ``GrantCache``): a portal polling with one key costs one read every two seconds, not
    one per request. A revocation applies to the next request in the process that made it and
    within ``GRANT_CACHE_SECONDS`` in every other. Expiry is checked on every request. Use is
    recorded at most once per ``LAST_USED_RESOLUTION``: a read writes nothing otherwise."""
    if not secret.startswith(KEY_PREFIX) or len(secret) > 200:
        return None
    secret_hash = hash_secret(secret)
    known = GRANTS.get(secret_hash)
    if known is None:
        generation = GRANTS.generation
        row = await repository.get_grant_by_hash(session, secret_hash)
        if row is None:
            return None
        known = _KnownKey(
            grant=_grant(row),
            expires_at=row.expires_at,
            used_at=row.last_used_at,
        )
        GRANTS.put(secret_hash, known, generation)
    now = utcnow()
    if known.expires_at is not None and known.expires_at <= now:
        return None
    if known.used_at is None or now - known.used_at > LAST_USED_RESOLUTION:
        known.used_at = now
        key_id = known.grant.principal.api_key_id
        assert key_id is not None
        await repository.mark_used(session, key_id, now=now, not_since=now - LAST_USED_RESOLUTION)
    return known.grant


def _grant(row: Any) -> Grant:
    return Grant(
        principal=Principal(
            msp_id=row.msp_id,
            api_key_id=row.id,
            scopes=frozenset(Scope(s) for s in row.scopes),
            tenant_ids=(
                frozenset(uuid.UUID(t) for t in row.tenant_ids)
                if row.tenant_ids is not None
                else None
            ),
        ),
        msp_status=MspStatus(row.msp_status),
    )


async def create(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    scopes: Sequence[Scope],
    tenant_ids: Sequence[uuid.UUID] | None,
    expires_at: datetime | None,
    ip: str | None = None,
) -> tuple[ApiKey, str]:
    """A key never grants more than its creator has: scopes and tenants are subsets."""
    if not principal.has(Scope.admin):
        raise Forbidden("Creating API keys needs the admin scope")
    if any(not principal.has(s) for s in scopes):
        raise Forbidden("A key cannot be given scopes its creator does not have")
    if tenant_ids is not None:
        wanted = frozenset(tenant_ids)
        found = await tenant_repository.existing_ids(session, principal.scope, wanted)
        missing = wanted - found
        if missing:
            raise UnprocessableEntity(
                "Unknown tenant ids",
                errors=[
                    {"loc": ["body", "tenant_ids"], "msg": str(m)}
                    for m in sorted(map(str, missing))
                ],
            )
    elif principal.tenant_ids is not None:
        raise Forbidden("A tenant-limited key can only create keys limited to its tenants")
    if expires_at is not None and expires_at <= utcnow():
        raise UnprocessableEntity(
            "expires_at must be in the future",
            errors=[{"loc": ["body", "expires_at"], "msg": "must be in the future"}],
        )
    key, secret = await issue(
        session,
        msp_id=principal.msp_id,
        name=name,
        scopes=scopes,
        tenant_ids=tenant_ids,
        created_by=principal.api_key_id,
        expires_at=expires_at,
    )
    await audit.record_for(
        session,
        principal,
        "api_key.created",
        target_type="api_key",
        target_id=key.id,
        details={"name": name, "scopes": key.scopes, "tenant_ids": key.tenant_ids},
        ip=ip,
    )
    return key, secret


async def list_keys(
    session: AsyncSession,
    principal: Principal,
    *,
    include_revoked: bool,
    cursor: str | None,
    limit: int,
) -> Page[ApiKey]:
    return await repository.list_for_msp(
        session, principal.msp_id, include_revoked=include_revoked, cursor=cursor, limit=limit
    )


async def get(session: AsyncSession, principal: Principal, key_id: uuid.UUID) -> ApiKey:
    """One of the MSP's keys, revoked or not, as the list shows it (never its secret)."""
    key = await repository.get_for_msp(session, principal.msp_id, key_id)
    if key is None or (
        principal.tenant_ids is not None
        and (
            key.tenant_ids is None
            or not {uuid.UUID(t) for t in key.tenant_ids} <= principal.tenant_ids
        )
    ):
        raise NotFound("No such API key")
    return key


async def revoke(
    session: AsyncSession, principal: Principal, key_id: uuid.UUID, *, ip: str | None = None
) -> ApiKey:
    key = await get(session, principal, key_id)
    if key.revoked_at is not None:
        raise NotFound("No such API key")
    key.revoked_at = utcnow()
    await session.flush()
    # Forget remembered grants now and again once the revocation is committed, so that no
    # request of this process that read the key before the commit keeps it alive.
    GRANTS.forget_with(session.sync_session)
    await audit.record_for(
        session, principal, "api_key.revoked", target_type="api_key", target_id=key.id, ip=ip
    )
    return key
