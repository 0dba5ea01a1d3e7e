"""Master-key rotation: re-wrap every tenant's data key and re-seal every secret under the
current ``SAFEKEEP_MASTER_KEY``, without touching a byte of backed-up data.

Backed-up data is encrypted under per-tenant data keys; the master key only wraps those keys
(``safekeep.storage.keys``) and seals a few secrets (``safekeep.tenants.secrets``). Rotating it
therefore rewrites small columns of the ``tenant`` and ``webhook_endpoint`` rows, never the
bucket. The procedure (docs/operations.md): deploy the new key as ``SAFEKEEP_MASTER_KEY`` with
the old one in ``SAFEKEEP_PREVIOUS_MASTER_KEYS`` (every process then opens both), run
``safekeep keys rotate``, then remove the old key.

Each row is rewritten in its own small transaction, only when it does not already open with the
current key: the command can be interrupted and run again, and running it twice changes
nothing. A row that no configured key opens is reported and left as it is; the command then
fails, so an operator never drops an old key that is still needed.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import structlog
from sqlalchemy import select

from safekeep.db import Database
from safekeep.settings import Settings
from safekeep.storage.errors import KeyUnwrapError
from safekeep.storage.keys import unwrap_data_key, unwrap_with_any, wrap_data_key
from safekeep.tenants.audit import service as audit
from safekeep.tenants.models import Tenant, WebhookEndpoint, utcnow
from safekeep.tenants.secrets import SecretUnsealError, seal, unseal, unseal_with_any

log = structlog.get_logger(__name__)

ACTOR = "operator:keys-rotate"
ACTION = "master_key.rotated"
_PAGE = 200
_Row = TypeVar("_Row", Tenant, WebhookEndpoint)


@dataclass
class RotationReport:
    data_keys: int = 0  # tenant data keys re-wrapped
    secrets: int = 0  # sealed secrets re-sealed
    current: int = 0  # already under the current key
    unreadable: list[str] = field(default_factory=list)  # what no configured key opens

    @property
    def ok(self) -> bool:
        return not self.unreadable


def _opens(open_it: Callable[[], object]) -> bool:
    """Whether ``open_it`` (an unwrap or unseal under one key) succeeds: a wrong key is the
    refusal it raises, not an error."""
    try:
        open_it()
    except (KeyUnwrapError, SecretUnsealError):
        return False
    return True


def _reseal(
    report: RotationReport, keys: Sequence[bytes], sealed: bytes, context: str, what: str
) -> bytes | None:
    """The secret sealed under the current key (``keys[0]``), or None when it already is or
    opens with no configured key (then ``report`` says so)."""
    current = keys[0]
    if _opens(partial(unseal, current, sealed, context=context)):
        report.current += 1
        return None
    try:
        secret = unseal_with_any(keys, sealed, context=context)
    except SecretUnsealError:
        report.unreadable.append(what)
        return None
    report.secrets += 1
    return seal(current, secret, context=context)


def _sealed_secrets(row: Tenant | WebhookEndpoint) -> list[tuple[str, str, str]]:
    """The row's sealed secrets: (attribute, the context it is sealed under, how a report
    names it). The contexts are those the tenant and webhook services seal with; a webhook's
    previous secret (kept while a rotation's overlap lasts) is sealed as its current one."""
    if isinstance(row, Tenant):
        return [
            (
                "app_client_secret_sealed",
                f"tenant:{row.id}:app-secret",
                f"tenant {row.id}: app client secret",
            )
        ]
    context = f"webhook:{row.id}:secret"
    return [
        ("secret_sealed", context, f"webhook endpoint {row.id}: signing secret"),
        ("previous_secret_sealed", context, f"webhook endpoint {row.id}: previous secret"),
    ]


def _reseal_row(
    report: RotationReport,
    keys: Sequence[bytes],
    changed_per_msp: Counter[uuid.UUID],
    row: Tenant | WebhookEndpoint,
) -> None:
    """Re-seal the row's secrets (a tenant may have none) under the current key, counting
    each change for its MSP's audit event. A webhook's previous secret whose overlap has
    ended signs nothing more: it is dropped, not re-sealed."""
    if isinstance(row, WebhookEndpoint):
        expires = row.previous_secret_expires_at
        if expires is not None and expires <= utcnow():
            row.previous_secret_sealed = row.previous_secret_expires_at = None
    for column, context, what in _sealed_secrets(row):
        sealed: bytes | None = getattr(row, column)
        if sealed is None:
            continue
        resealed = _reseal(report, keys, sealed, context, what)
        if resealed is not None:
            setattr(row, column, resealed)
            changed_per_msp[row.msp_id] += 1


async def _pages(db: Database, model: type[_Row]) -> AsyncIterator[list[_Row]]:
    """Every row of ``model`` by id, a page at a time, each page in its own transaction:
    what the caller changes in a page is committed before the next page is read."""
    after: uuid.UUID | None = None
    while True:
        async with db.session() as session:
            query = select(model).order_by(model.id).limit(_PAGE)
            if after is not None:
                query = query.where(model.id > after)
            rows = list((await session.scalars(query)).all())
            yield rows
        if len(rows) < _PAGE:
            return
        after = rows[-1].id


async def rotate_master_key(db: Database, settings: Settings) -> RotationReport:
    """Bring every wrapped key and sealed secret under ``settings.master_key``."""
    current, keys = settings.master_key_bytes, settings.master_keys
    report = RotationReport()
    changed_per_msp: Counter[uuid.UUID] = Counter()

    async for tenants in _pages(db, Tenant):
        for tenant in tenants:
            tenant_id = str(tenant.id)
            if _opens(
                partial(unwrap_data_key, current, tenant.wrapped_data_key, tenant_id=tenant_id)
            ):
                report.current += 1
            else:
                try:
                    data_key = unwrap_with_any(keys, tenant.wrapped_data_key, tenant_id=tenant_id)
                except KeyUnwrapError:
                    report.unreadable.append(f"tenant {tenant_id}: data key")
                else:
                    tenant.wrapped_data_key = wrap_data_key(current, data_key, tenant_id=tenant_id)
                    report.data_keys += 1
                    changed_per_msp[tenant.msp_id] += 1
            _reseal_row(report, keys, changed_per_msp, tenant)

    async for endpoints in _pages(db, WebhookEndpoint):
        for endpoint in endpoints:
            _reseal_row(report, keys, changed_per_msp, endpoint)

    # Each MSP's audit log shows that what protects its tenants was re-wrapped, and how much.
    async with db.session() as session:
        for msp_id, count in sorted(changed_per_msp.items()):
            await audit.record(
                session,
                msp_id=msp_id,
                actor=ACTOR,
                action=ACTION,
                details={"rewrapped": count},
            )
    log.info(
        "master key rotated",
        data_keys=report.data_keys,
        secrets=report.secrets,
        current=report.current,
        unreadable=len(report.unreadable),
    )
    return report
