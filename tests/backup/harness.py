"""Drive the backup engine end to end against graphsim, without a broker.

``EngineHarness`` owns a Runtime on real storage (embedded or scale-out), an MSP and a tenant
connected to a simulated Microsoft 365 tenant through real consent and discovery, and calls
the engine's own entry points (the functions the actors call), so tests exercise the same
code the workers run.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from graphsim import Simulator
from safekeep.backup.catalog import SnapshotRun
from safekeep.backup.collect import CollectContext
from safekeep.backup.jobs.backup import backup_account_service
from safekeep.backup.jobs.discover import run_discovery_job
from safekeep.backup.jobs.export import run_export_job
from safekeep.backup.jobs.restore import restore_unit
from safekeep.backup.restore.report import JobRestoreReport
from safekeep.backup.selection import Scope, resolve_units
from safekeep.runtime import Runtime
from safekeep.search.query import SearchQuery
from safekeep.settings import Settings
from safekeep.tenants import outbox
from safekeep.tenants.account import repository as account_repository
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.job import service as job_service
from safekeep.tenants.models import (
    Account,
    Export,
    ItemVersion,
    Job,
    JobKind,
    JobTrigger,
    Policy,
    Tenant,
)
from safekeep.tenants.scope import TenantScope
from safekeep.tenants.tenant import repository as tenant_repository
from safekeep.tenants.tenant.service import system_scope
from safekeep.workers import context
from tests.factories import MspHandle, connect_tenant, create_msp, create_tenant


def sim_settings(base: Settings, sim: Simulator) -> Settings:
    """The same settings, pointed at the simulator's Entra ID and Graph."""
    return base.model_copy(
        update={
            "login_url": sim.base_url,
            "graph_url": sim.base_url,
            "ca_bundle": sim.ca_path,
            "app_client_id": sim.app_id,
            "app_client_secret": type(base.app_client_secret)(sim.app_secret),
        }
    )


@dataclass
class EngineHarness:
    runtime: Runtime
    sim: Simulator
    msp: MspHandle
    tenant: Tenant
    sim_tenant_id: str
    sent: list[outbox.Message] = field(default_factory=list)

    @property
    def scope(self) -> TenantScope:
        return system_scope(self.tenant)

    async def reload_tenant(self) -> Tenant:
        async with self.runtime.db.session() as session:
            tenant = await tenant_repository.get_system(session, self.tenant.id)
        assert tenant is not None
        self.tenant = tenant
        return tenant

    async def policy(self) -> Policy:
        async with self.runtime.db.session() as session:
            return await tenant_repository.get_policy(session, self.tenant)

    async def set_policy(self, **values: Any) -> Policy:
        async with self.runtime.db.session() as session:
            policy = await tenant_repository.get_policy(session, self.tenant)
            for key, value in values.items():
                setattr(policy, key, value)
        return policy

    async def start_job(self, kind: JobKind, params: dict[str, Any] | None = None) -> Job:
        with outbox.collect():
            async with self.runtime.db.session() as session:
                tenant = await tenant_repository.get_system(session, self.tenant.id)
                assert tenant is not None
                job = await job_service.start_job(
                    session,
                    tenant,
                    kind=kind,
                    trigger=JobTrigger.manual,
                    requested_by="test",
                    params=params or {},
                )
        return job

    async def job(self, job_id: uuid.UUID) -> Job:
        async with self.runtime.db.session() as session:
            job = await session.get(Job, job_id)
        assert job is not None
        return job

    async def discover(self) -> list[Account]:
        job = await self.start_job(JobKind.discover)
        await run_discovery_job(self.runtime, str(job.id))
        done = await self.job(job.id)
        assert done.status == "succeeded", (done.status, done.error_code, done.error_detail)
        return await self.accounts()

    async def accounts(self) -> list[Account]:
        async with self.runtime.db.session() as session:
            return await account_repository.all_for_tenant(session, self.scope, self.tenant.id)

    async def user(self, index: int = 0) -> Account:
        """The tenant's ``index``-th user account in Graph id order (stable across runs)."""
        users = sorted(
            (a for a in await self.accounts() if a.kind == "user"), key=lambda a: a.graph_id
        )
        return users[index]

    async def open_ids(self, account: Account, service: str, kinds: list[str]) -> dict[str, Any]:
        """The account's open (not ended) items of ``kinds`` in ``service`` by external id."""
        async with self.runtime.db.session() as session:
            return await catalog.open_external_ids(session, account.id, service, kinds)

    async def account(self, key: str) -> Account:
        """An account by UPN prefix, display name or Graph id."""
        for account in await self.accounts():
            names = {
                account.graph_id,
                account.display_name,
                account.principal_name or "",
                (account.principal_name or "").split("@")[0],
            }
            if key in names:
                return account
        raise LookupError(key)

    async def snapshot_run(self, account: Account, service: str) -> SnapshotRun:
        """The account's snapshot of ``service`` under way, outside any task: a new one, or
        the running one resumed."""
        return await SnapshotRun.begin(
            self.runtime,
            msp_id=self.tenant.msp_id,
            tenant_id=self.tenant.id,
            account_id=account.id,
            service=service,
        )

    async def backup(self, account: Account, service: str) -> tuple[SnapshotRun, int]:
        """One backup of one account and service, as a backup task runs it."""
        return await backup_account_service(
            self.runtime, self.tenant, await self.policy(), account, service
        )

    async def all_versions(self, account: Account, service: str) -> list[ItemVersion]:
        """Every version, open or ended, of the account's items in ``service``."""
        async with self.runtime.db.session() as session:
            rows = await session.execute(
                select(ItemVersion).where(
                    ItemVersion.account_id == account.id, ItemVersion.service == service
                )
            )
            return list(rows.scalars())

    async def versions_per_item(self, account: Account, service: str) -> dict[uuid.UUID, int]:
        """How many versions each of the account's items in ``service`` has, by item id."""
        async with self.runtime.db.session() as session:
            rows = await session.execute(
                select(ItemVersion.item_id, func.count())
                .where(ItemVersion.account_id == account.id, ItemVersion.service == service)
                .group_by(ItemVersion.item_id)
            )
            return {item_id: count for item_id, count in rows.all()}

    async def assert_resumed_once_each(
        self, account: Account, service: str, kinds: list[str], expected: set[str]
    ) -> None:
        """After a killed run: the next one resumes it and ends with the ``expected`` items
        (Graph ids) of ``kinds`` stored once each, and the one after it has nothing to do."""
        run, _ = await self.backup(account, service)
        assert run.resumed
        assert set(await self.open_ids(account, service, kinds)) == expected
        assert set((await self.versions_per_item(account, service)).values()) == {1}
        run, _ = await self.backup(account, service)
        assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 0, 0)

    def only_delta_rounds(self, rounds: int, endpoint: str, tree: str | None = None) -> None:
        """The last run sent one ``$batch`` and nothing else, carrying ``rounds`` delta
        requests whose paths end in ``endpoint`` (one per folder or calendar), plus one for
        the folder ``tree`` where the service has a delta of its folders."""
        counters = self.sim.counters()
        assert counters["by_endpoint"] == {"POST /$batch": 1}, counters["by_endpoint"]
        inner = dict(counters["batch_by_endpoint"])
        if tree is not None:
            assert inner.pop(tree) == 1, inner
        assert all(e.endswith(endpoint) for e in inner), inner
        assert sum(inner.values()) == rounds, inner

    async def assert_unchanged_runs_cost_delta_rounds(
        self, account: Account, service: str, rounds: int, endpoint: str, tree: str | None = None
    ) -> None:
        """Two more backups of an unchanged mailbox change nothing and each costs only its
        delta rounds (``only_delta_rounds``): the incremental economy of a service."""
        for _ in range(2):
            self.sim.reset_counters()
            run, skipped = await self.backup(account, service)
            assert skipped == 0
            assert (run.counters.added, run.counters.changed, run.counters.removed) == (0, 0, 0)
            self.only_delta_rounds(rounds, endpoint, tree)

    async def search_titles(self, service: str, text: str) -> list[str]:
        """Titles of the tenant's hits for ``text`` in one service. OpenSearch shows new
        documents after its refresh interval, so this waits a few seconds for the first hit
        (and answers [] if none comes)."""
        backend = await self.runtime.search_backend()
        query = SearchQuery(
            tenant_ids=frozenset({str(self.tenant.id)}), text=text, services=frozenset({service})
        )
        for _ in range(50):
            hits = [hit.title for hit in (await backend.search(query)).hits]
            if hits:
                return hits
            await asyncio.sleep(0.1)
        return []

    async def restore(
        self,
        account: Account,
        service: str,
        *,
        scope_type: str = "service",
        item_ids: Sequence[uuid.UUID] = (),
        at: datetime | None = None,
        target: Account | None = None,
        folder_mode: str = "original",
        conflict: str = "skip",
        channels: str = "import",
    ) -> JobRestoreReport:
        scope = Scope(
            type=scope_type,
            account_id=account.id,
            service=service,
            item_ids=tuple(item_ids),
            at=at,
            snapshot_id=None,
        )
        units = await resolve_units(self.runtime, self.scope, self.tenant, scope)
        assert len(units) == 1, units
        return await restore_unit(
            self.runtime,
            self.tenant,
            self.scope,
            units[0],
            scope,
            target=target or account,
            folder_mode=folder_mode,  # type: ignore[arg-type]
            conflict=conflict,  # type: ignore[arg-type]
            channels=channels,  # type: ignore[arg-type]
        )

    async def export(
        self, account: Account, service: str, *, options: dict[str, Any] | None = None
    ) -> bytes:
        """Run an export job of the account's whole service, as it is now (what every engine
        test exports), and return the ZIP's bytes."""
        export_id = uuid.uuid4()
        params = {
            "scope": {
                "type": "service",
                "account_id": str(account.id),
                "service": service,
                "item_ids": [],
            },
            "at": None,
            "options": options or {},
            "export_id": str(export_id),
        }
        job = await self.start_job(JobKind.export, params)
        async with self.runtime.db.session() as session:
            session.add(
                Export(
                    id=export_id, tenant_id=self.tenant.id, job_id=job.id, options=params["options"]
                )
            )
        await run_export_job(self.runtime, str(job.id))
        done = await self.job(job.id)
        assert done.status == "succeeded", (done.status, done.error_code, done.error_detail)
        async with self.runtime.db.session() as session:
            row = await session.get(Export, export_id)
        assert row is not None
        assert row.blob_key
        return await (await self.runtime.blobs()).get(row.blob_key)


async def connect(
    runtime: Runtime, sim: Simulator, *, sim_tenant: str | None = None
) -> EngineHarness:
    """An MSP and a tenant that consented to the simulated tenant, with discovery done."""
    context.configure(runtime.settings, factory=lambda _settings: runtime)
    context.forget_runtimes()
    msp = await create_msp(runtime, "Harness MSP")
    simulated = sim.tenant(sim_tenant)
    tenant = await create_tenant(runtime, msp, name=simulated.name, consented=False)
    await connect_tenant(runtime, tenant, sim, simulated.id)
    harness = EngineHarness(runtime, sim, msp, tenant, simulated.id)
    await harness.reload_tenant()
    await harness.discover()
    return harness


@contextmanager
def worker_killed_at(report: int, *, before_report: bool = False) -> Iterator[None]:
    """Inside the block, a backup dies as a killed worker would, at its ``report``-th
    progress report (each report follows a committed page): after saving that report, or
    just before it with ``before_report``. Raises RuntimeError("worker killed")."""
    original = CollectContext.progress
    calls = {"n": 0}

    async def dying(self: CollectContext) -> None:
        if not before_report:
            await original(self)
        calls["n"] += 1
        if calls["n"] == report:
            raise RuntimeError("worker killed")
        if before_report:
            await original(self)

    CollectContext.progress = dying  # type: ignore[method-assign]
    try:
        yield
    finally:
        CollectContext.progress = original  # type: ignore[method-assign]
