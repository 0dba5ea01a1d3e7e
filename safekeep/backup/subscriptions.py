"""Keep one Graph change-notification subscription per protected account and service.

For a tenant whose policy sets ``rpo_minutes``: create what is missing, renew before expiry
(two thirds into the lifetime, or at once on ``reauthorizationRequired``), re-create what
Graph removed or what predates the tenant's last consent, and delete what is no longer
wanted (the policy dropped ``rpo_minutes``, an account stopped being protected). Graph calls
happen outside any database transaction; their outcome is written afterwards, row by row.

A new subscription marks its account and service dirty: changes between the last backup and
the subscription are never notified, so one incremental covers them.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from safekeep import registry
from safekeep.backup.context import graph_client
from safekeep.graph.client import GraphClient
from safekeep.graph.errors import GraphError, NotFound
from safekeep.registry import ChangeNotifications
from safekeep.runtime import Runtime, unit_of_work
from safekeep.tenants.account import repository as account_repository
from safekeep.tenants.models import (
    Account,
    AccountState,
    ConsentState,
    GraphSubscription,
    Policy,
    SubscriptionStatus,
    Tenant,
    TenantStatus,
    utcnow,
)
from safekeep.tenants.subscription import repository
from safekeep.tenants.subscription.service import hash_client_state
from safekeep.tenants.tenant import repository as tenant_repository
from safekeep.tenants.tenant.service import system_scope

log = structlog.get_logger(__name__)


def _notifiable() -> dict[str, ChangeNotifications]:
    """The services that declare change notifications (safekeep/registry.py)."""
    return {spec.name: spec.notifications for spec in registry.specs() if spec.notifications}


RETRY_AFTER = timedelta(minutes=15)
NOTIFICATIONS_PATH = "/v1/graph/notifications"
LIFECYCLE_PATH = "/v1/graph/lifecycle"


@dataclass
class SyncResult:
    created: int = 0
    renewed: int = 0
    deleted: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def wanted_services(account: Account, policy: Policy) -> list[str]:
    """The account's services that can be subscribed to: by kind, policy and discovery."""
    if not account.protected or account.state != AccountState.active:
        return []
    return repository.subscribable(account.kind, account.services_found, policy.services)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse(raw: Any, fallback: datetime) -> datetime:
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return fallback


@dataclass
class _Plan:
    tenant: Tenant
    create: list[tuple[uuid.UUID, str, str | None]]  # row id, resource, old subscription id
    renew: list[tuple[uuid.UUID, str, str]]  # row id, subscription id, resource
    delete: list[tuple[uuid.UUID, str | None]]  # row id, subscription id
    services: dict[uuid.UUID, str]  # row id -> service


async def _plan(runtime: Runtime, tenant_id: uuid.UUID, now: datetime) -> _Plan | None:
    async with unit_of_work(runtime) as session:
        tenant = await tenant_repository.get_system(session, tenant_id)
        if tenant is None:
            return None
        policy = await tenant_repository.get_policy(session, tenant)
        rows = {
            (r.account_id, r.service): r for r in await repository.for_tenant(session, tenant.id)
        }
        live = (
            tenant.status == TenantStatus.active
            and tenant.consent_state == ConsentState.granted
            and policy.rpo_minutes is not None
            and runtime.settings.notifications_possible
        )
        wanted: dict[tuple[uuid.UUID, str], Account] = {}
        if live:
            for account in await account_repository.all_for_tenant(
                session, system_scope(tenant), tenant.id
            ):
                for service in wanted_services(account, policy):
                    wanted[(account.id, service)] = account
        plan = _Plan(tenant, [], [], [], {})
        for key, row in rows.items():
            if key not in wanted:
                plan.delete.append((row.id, row.subscription_id))
        for key, account in wanted.items():
            found = rows.get(key)
            if found is None:
                row = GraphSubscription(
                    tenant_id=tenant.id,
                    account_id=account.id,
                    service=key[1],
                    resource=_notifiable()[key[1]].resource.format(user=account.graph_id),
                    status=SubscriptionStatus.pending,
                    next_action_at=now,
                )
                session.add(row)
                await session.flush()
            else:
                row = found
            plan.services[row.id] = row.service
            stale = tenant.consent_changed_at is not None and row.created_at < (
                tenant.consent_changed_at
            )
            due = row.next_action_at is not None and row.next_action_at <= now
            if row.status == SubscriptionStatus.active and not stale:
                if due and row.subscription_id:
                    plan.renew.append((row.id, row.subscription_id, row.resource))
            elif (
                row.status in (SubscriptionStatus.pending, SubscriptionStatus.removed)
                or due
                or stale
            ):
                plan.create.append((row.id, row.resource, row.subscription_id))
        return plan


async def sync_tenant(runtime: Runtime, tenant_id: str) -> SyncResult:
    now = utcnow()
    result = SyncResult()
    plan = await _plan(runtime, uuid.UUID(tenant_id), now)
    if plan is None:
        return result
    outcomes: dict[uuid.UUID, dict[str, Any]] = {}
    gone: list[uuid.UUID] = []
    settings = runtime.settings
    base = settings.resolved_notification_base_url
    can_call = plan.tenant.consent_state == ConsentState.granted
    if not (plan.create or plan.renew or (plan.delete and can_call)):
        gone = [row_id for row_id, _ in plan.delete]
    else:
        async with graph_client(runtime, plan.tenant) as graph:
            for row_id, sub_id in plan.delete:
                if sub_id and can_call:
                    await _delete_quietly(graph, sub_id)
                gone.append(row_id)
                result.deleted += 1
            for row_id, sub_id, resource in plan.renew:
                service = plan.services[row_id]
                expires = now + _notifiable()[service].lifetime
                try:
                    body = await graph.request_json(
                        "PATCH",
                        f"/subscriptions/{sub_id}",
                        json={"expirationDateTime": _iso(expires)},
                        expected=(200,),
                    )
                except NotFound:
                    # Graph forgot it (expired, removed): make a new one.
                    plan.create.append((row_id, resource, None))
                    continue
                except GraphError as exc:
                    outcomes[row_id] = _failed(exc, now)
                    result.failed += 1
                    continue
                granted = _parse((body or {}).get("expirationDateTime"), expires)
                outcomes[row_id] = {
                    "status": SubscriptionStatus.active,
                    "expires_at": granted,
                    "next_action_at": now + (granted - now) * 2 / 3,
                    "last_error": None,
                }
                result.renewed += 1
            for row_id, resource, old in plan.create:
                service = plan.services[row_id]
                kind = _notifiable()[service]
                if old:
                    await _delete_quietly(graph, old)
                state = secrets.token_urlsafe(32)
                expires = now + kind.lifetime
                try:
                    body = await graph.request_json(
                        "POST",
                        "/subscriptions",
                        json={
                            "changeType": kind.change_type,
                            "notificationUrl": base + NOTIFICATIONS_PATH,
                            "lifecycleNotificationUrl": base + LIFECYCLE_PATH,
                            "resource": resource,
                            "expirationDateTime": _iso(expires),
                            "clientState": state,
                        },
                        expected=(201,),
                        idempotent=False,
                    )
                except GraphError as exc:
                    outcomes[row_id] = _failed(exc, now)
                    result.failed += 1
                    continue
                body = body or {}
                granted = _parse(body.get("expirationDateTime"), expires)
                outcomes[row_id] = {
                    "status": SubscriptionStatus.active,
                    "subscription_id": str(body.get("id") or ""),
                    "client_state_hash": hash_client_state(state),
                    "expires_at": granted,
                    "next_action_at": now + (granted - now) * 2 / 3,
                    "last_error": None,
                    "created_at": utcnow(),
                    "dirty": True,
                }
                result.created += 1
    await _record(runtime, outcomes, gone, now)
    result.errors = [str(o["last_error"]) for o in outcomes.values() if o.get("last_error")]
    if result.created or result.renewed or result.deleted or result.failed:
        log.info(
            "graph_subscriptions_synced",
            tenant_id=tenant_id,
            created=result.created,
            renewed=result.renewed,
            deleted=result.deleted,
            failed=result.failed,
        )
    return result


def _failed(exc: GraphError, now: datetime) -> dict[str, Any]:
    # created_at is "last (re)made or tried": a failure after a consent change must not
    # look stale again on the next tick, it waits RETRY_AFTER like any other.
    return {
        "status": SubscriptionStatus.failed,
        "next_action_at": now + RETRY_AFTER,
        "last_error": f"{exc.code}: {exc.message}"[:1000],
        "created_at": now,
    }


async def _delete_quietly(graph: GraphClient, sub_id: str) -> None:
    try:
        await graph.request_json("DELETE", f"/subscriptions/{sub_id}", expected=(204,))
    except GraphError as exc:
        # Already gone or not ours any more: it expires on its own at Graph.
        log.info("graph_subscription_delete_failed", code=exc.code)


async def _record(
    runtime: Runtime,
    outcomes: dict[uuid.UUID, dict[str, Any]],
    gone: list[uuid.UUID],
    now: datetime,
) -> None:
    if not outcomes and not gone:
        return
    async with unit_of_work(runtime) as session:
        for row_id in gone:
            row = await session.get(GraphSubscription, row_id)
            if row is not None:
                await session.delete(row)
        for row_id, values in outcomes.items():
            row = await session.get(GraphSubscription, row_id)
            if row is None:
                continue
            dirty = values.pop("dirty", False)
            for name, value in values.items():
                setattr(row, name, value)
            if dirty and row.dirty_since is None:
                row.dirty_since = now
        await session.flush()
