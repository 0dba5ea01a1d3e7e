"""Keep Graph change-notification subscriptions for each protected account and service.

Most services need one subscription per account (``users/{id}/messages``). A service whose
registry entry names a ``resolver`` (SharePoint: one per library and per list) gets one per
resource the resolver lists; it is asked when the account has no subscription yet or one of
them is due, so a site's new library is picked up at the next renewal (its changes are
still collected meanwhile: every sharepoint backup lists the whole site).

For a tenant whose policy sets ``rpo_minutes``: create what is missing, renew before expiry
(two thirds into the lifetime, or at once on ``reauthorizationRequired``), re-create what
Graph removed or what predates the tenant's last consent, and delete what is no longer
wanted (the policy dropped ``rpo_minutes``, an account stopped being protected). Graph calls
happen outside any database transaction; their outcome is written afterwards, row by row.

A new subscription marks its account and service dirty: changes between the last backup and
the subscription are never notified, so one incremental covers them.
"""

from __future__ import annotations

import importlib
import secrets
import uuid
from collections.abc import Awaitable, Callable
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


Resolver = Callable[[GraphClient, Account], Awaitable[list[str]]]


def _resolver(kind: ChangeNotifications) -> Resolver | None:
    if kind.resolver is None:
        return None
    module, _, name = kind.resolver.partition(":")
    found: Resolver = getattr(importlib.import_module(module), name)
    return found


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


def _live(tenant: Tenant, policy: Policy, runtime: Runtime) -> bool:
    return (
        tenant.status == TenantStatus.active
        and tenant.consent_state == ConsentState.granted
        and policy.rpo_minutes is not None
        and runtime.settings.notifications_possible
    )


def _needs_asking(rows: list[GraphSubscription], tenant: Tenant, now: datetime) -> bool:
    """Whether a resolved service's resources must be listed again: none yet, or a row about
    to be renewed, re-created or retried anyway."""
    if not rows:
        return True
    return any(
        row.status != SubscriptionStatus.active
        or (row.next_action_at is not None and row.next_action_at <= now)
        or (tenant.consent_changed_at is not None and row.created_at < tenant.consent_changed_at)
        for row in rows
    )


Resolved = dict[tuple[uuid.UUID, str], list[str]]


async def _resolve(runtime: Runtime, tenant_id: uuid.UUID, now: datetime) -> Resolved:
    """Ask Graph for the resources of the accounts whose services list them (outside any
    transaction). An account whose listing failed is left out: its rows stay as they are."""
    asks: list[tuple[Account, str, Resolver]] = []
    async with unit_of_work(runtime) as session:
        tenant = await tenant_repository.get_system(session, tenant_id)
        if tenant is None:
            return {}
        policy = await tenant_repository.get_policy(session, tenant)
        if not _live(tenant, policy, runtime):
            return {}
        kinds = {name: kind for name, kind in _notifiable().items() if kind.resolver}
        if not kinds:
            return {}
        rows: dict[tuple[uuid.UUID, str], list[GraphSubscription]] = {}
        for row in await repository.for_tenant(session, tenant.id):
            rows.setdefault((row.account_id, row.service), []).append(row)
        for account in await account_repository.all_for_tenant(
            session, system_scope(tenant), tenant.id
        ):
            for service in wanted_services(account, policy):
                resolver = _resolver(kinds[service]) if service in kinds else None
                if resolver and _needs_asking(rows.get((account.id, service), []), tenant, now):
                    asks.append((account, service, resolver))
    out: Resolved = {}
    if not asks:
        return out
    async with graph_client(runtime, tenant) as graph:
        for account, service, resolver in asks:
            try:
                out[(account.id, service)] = await resolver(graph, account)
            except GraphError as exc:
                log.info(
                    "graph_subscription_resources_failed",
                    account_id=str(account.id),
                    service=service,
                    code=exc.code,
                )
    return out


async def _plan(
    runtime: Runtime, tenant_id: uuid.UUID, now: datetime, resolved: Resolved
) -> _Plan | None:
    async with unit_of_work(runtime) as session:
        tenant = await tenant_repository.get_system(session, tenant_id)
        if tenant is None:
            return None
        policy = await tenant_repository.get_policy(session, tenant)
        rows = {
            (r.account_id, r.service, r.resource): r
            for r in await repository.for_tenant(session, tenant.id)
        }
        wanted: dict[tuple[uuid.UUID, str, str], Account] = {}
        if _live(tenant, policy, runtime):
            for account in await account_repository.all_for_tenant(
                session, system_scope(tenant), tenant.id
            ):
                for service in wanted_services(account, policy):
                    kind = _notifiable()[service]
                    if kind.resolver is None:
                        resources = [kind.resource.format(user=account.graph_id)]
                    elif (account.id, service) in resolved:
                        resources = resolved[(account.id, service)]
                    else:  # not asked this time, or the listing failed: keep what there is
                        resources = [r for a, s, r in rows if a == account.id and s == service]
                    for resource in resources:
                        wanted[(account.id, service, resource)] = account
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
                    resource=key[2],
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
    resolved = await _resolve(runtime, uuid.UUID(tenant_id), now)
    plan = await _plan(runtime, uuid.UUID(tenant_id), now, resolved)
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
