"""Idempotency-Keys of creating requests: claimed before the request runs, then holding its
first answer (kept 24 hours).

A key is claimed by inserting its record without an answer under the unique ``(msp_id, key)``,
so of concurrent requests with one key exactly one claims it; the others find the claim. The
claim is committed before the request's work begins, gets the answer in the transaction
that commits that work (``complete``), and is released if the work fails (``release``). A
claim that outlives ``CLAIM_TIMEOUT`` belongs to a request that died (a crash, a lost
connection) and is free; so is a record past ``RETENTION``. A live record is never replaced.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.tenants.idempotency import repository
from safekeep.tenants.models import IdempotencyRecord, utcnow

RETENTION = timedelta(hours=24)
# How long a claim without an answer holds its key. A request still running past this loses
# its claim to a retry and then stores nothing: its completion finds the claim gone (see
# ``complete``) and its work is rolled back, so the key still makes one change only.
CLAIM_TIMEOUT = timedelta(minutes=1)
# Claims tried in one call: a record found free (expired, stale) is deleted and the key claimed
# again; it can only be taken again meanwhile by another request, whose record is then found.
_ATTEMPTS = 5


async def find(session: AsyncSession, msp_id: uuid.UUID, key: str) -> IdempotencyRecord | None:
    """The key's live record (an answer within retention, or a claim not yet stale)."""
    record = await repository.find(session, msp_id, key)
    if record is None or _is_free(record):
        return None
    return record


def _is_free(record: IdempotencyRecord) -> bool:
    now = utcnow()
    if record.created_at < now - RETENTION:
        return True
    return record.in_progress and record.created_at < now - CLAIM_TIMEOUT


async def claim(
    session: AsyncSession,
    *,
    msp_id: uuid.UUID,
    key: str,
    method: str,
    path: str,
    request_hash: str,
) -> uuid.UUID | IdempotencyRecord | None:
    """Claim the key for this request: the claim's id (the caller commits it before the work
    begins); or the live record that holds the key (an answer, or another request's claim);
    or None when the key changed hands throughout (treat it as in progress)."""
    for _ in range(_ATTEMPTS):
        claimed = await repository.insert_claim(
            session,
            msp_id=msp_id,
            key=key,
            method=method,
            path=path,
            request_hash=request_hash,
        )
        if claimed is not None:
            return claimed
        record = await repository.find(session, msp_id, key)
        if record is None:  # released since: claim again
            continue
        if not _is_free(record):
            return record
        now = utcnow()
        await repository.delete_if_free(
            session, record.id, expired_before=now - RETENTION, stale_before=now - CLAIM_TIMEOUT
        )
    return None


async def complete(
    session: AsyncSession, claim_id: uuid.UUID, *, status_code: int, body: Any
) -> bool:
    """Store the answer in the claim, in the transaction of the request's work. False when
    the claim is gone (it went stale and a retry took the key): the work must not commit."""
    return await repository.complete(session, claim_id, status_code=status_code, body=body)


async def release(session: AsyncSession, claim_id: uuid.UUID) -> None:
    """Free the key of a request that failed, so that a retry runs (a claim that holds an
    answer is kept)."""
    await repository.release(session, claim_id)


async def prune(session: AsyncSession) -> int:
    return await repository.delete_older_than(session, utcnow() - RETENTION)
