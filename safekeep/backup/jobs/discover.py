"""Discovery: which users (with licences, mailboxes, OneDrives) and sites a tenant has."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import structlog

from safekeep import registry
from safekeep.backup.context import graph_client
from safekeep.backup.jobs.lifecycle import JobOutcome, run_job
from safekeep.graph import directory
from safekeep.graph.client import GraphClient
from safekeep.graph.errors import UserNotFound
from safekeep.runtime import Runtime, unit_of_work
from safekeep.tenants.account.service import FoundAccount, apply_discovery
from safekeep.tenants.models import AccountKind, Job, Tenant
from safekeep.tenants.tenant import repository as tenant_repository
from safekeep.tenants.tenant.service import system_scope

log = structlog.get_logger(__name__)

# Probing each user's mailbox and drive: bounded so one tenant does not hog Graph.
PROBE_CONCURRENCY = 8


async def run_discovery_job(runtime: Runtime, job_id: str) -> None:
    await run_job(runtime, job_id, discover)


async def _probe(
    graph: GraphClient, user: dict[str, object], limit: asyncio.Semaphore
) -> FoundAccount | None:
    """The user as found, with the services it has; None when it was deleted from the
    directory after the listing (it is then missing from this discovery, as if listed no
    more, instead of failing the discovery of every other user)."""
    user_id = str(user["id"])
    licences: list[object] = list(user.get("assignedLicenses") or [])  # type: ignore[call-overload]
    licensed = bool(licences) and user.get("userType", "Member") != "Guest"
    probes = registry.probes("user")
    found = dict.fromkeys(probes, False)
    if licensed:
        async with limit:
            try:
                for key, probe in probes.items():
                    found[key] = bool(await registry.resolve(probe)(graph, user_id))
            except UserNotFound:
                log.info("discovery_user_vanished", user_id=user_id)
                return None
    return FoundAccount(
        kind=AccountKind.user,
        graph_id=user_id,
        display_name=str(user.get("displayName") or user.get("userPrincipalName") or user_id),
        principal_name=str(user.get("userPrincipalName") or "") or None,
        mail=str(user.get("mail") or "") or None,
        licensed=licensed,
        account_enabled=bool(user.get("accountEnabled", True)),
        sku_ids=[str(lic.get("skuId")) for lic in licences if isinstance(lic, dict)],
        services_found=found,
    )


async def discover(runtime: Runtime, job: Job, tenant: Tenant) -> JobOutcome:
    async with graph_client(runtime, tenant) as graph:
        users = await directory.list_users(graph)
        skus = await directory.list_subscribed_skus(graph)
        sites = await directory.list_sites(graph)
        limit = asyncio.Semaphore(PROBE_CONCURRENCY)
        probed = await asyncio.gather(*(_probe(graph, u, limit) for u in users))
        found = [account for account in probed if account is not None]
    for site in sites:
        found.append(
            FoundAccount(
                kind=AccountKind.site,
                graph_id=str(site["id"]),
                display_name=str(site.get("displayName") or site.get("name") or site["id"]),
                principal_name=str(site.get("webUrl") or "") or None,
                mail=None,
                licensed=True,
                services_found={s.found_key: True for s in registry.specs() if s.kind == "site"},
            )
        )
    async with unit_of_work(runtime) as session:
        row = await tenant_repository.get_system(session, tenant.id)
        assert row is not None
        policy = await tenant_repository.get_policy(session, row)
        result = await apply_discovery(
            session, row, system_scope(row), found, auto_protect=policy.auto_protect
        )
    return JobOutcome(
        result={
            "users": len(users),
            "sites": len(sites),
            "skus": [
                {"sku_id": s.get("skuId"), "sku_part_number": s.get("skuPartNumber")} for s in skus
            ],
            **asdict(result),
        }
    )
