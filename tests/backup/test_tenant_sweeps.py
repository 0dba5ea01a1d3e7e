"""A tenant's sweeps, restores, exports and browsing read versions through an index, never
the table.

Retention and the blob collector's mark phase run every day for every tenant with a retention
period, in batches of versions. Without an index on the tenant each batch read the versions of
every tenant (the mark phase walked the whole table in id order, the retention sweep read the
versions it keeps again for every batch): a deployment's daily work grew with the square of
its tenants. Each sweep's statements are asked for their plans on both databases.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

from sqlalchemy import insert

from safekeep.runtime import Runtime
from safekeep.tenants.catalog import repository as catalog
from safekeep.tenants.models import Item, ItemVersion, utcnow
from safekeep.tenants.models.item_version import NAME_KEY_CHARS
from safekeep.tenants.tenant.service import system_scope
from tests.factories import create_account, create_msp, create_tenant
from tests.plans import Recorder, plans_of


async def test_the_sweeps_of_a_tenant_read_its_versions_by_index(any_runtime: Runtime) -> None:
    msp = await create_msp(any_runtime, "Sweeps MSP")
    tenant = await create_tenant(any_runtime, msp)
    held = (await create_account(any_runtime, tenant)).id
    last = uuid.uuid4()
    with Recorder(any_runtime, keep="item_version") as sent:
        async with any_runtime.db.session() as session:
            horizon = utcnow() - timedelta(days=30)
            await catalog.expired_version_ids(session, tenant.id, horizon, 1000)
            await catalog.expired_version_ids(session, tenant.id, horizon, 1000, [held], after=last)
            await catalog.blob_refs(session, tenant.id, after=None, limit=1000)
            await catalog.blob_refs(session, tenant.id, after=last, limit=1000)
            await catalog.delete_orphan_items(session, tenant.id)
            await session.rollback()
    assert len(sent) == 5, sent
    for sql, params in sent:
        for plan in await plans_of(any_runtime, sql, params):
            assert plan.reads_by_index("item_version", "tenant_id"), (sql, plan.steps)
            if "ORDER BY" in sql:
                assert plan.sorts == [], (sql, plan.sorts)


async def test_restore_and_export_page_through_a_state_in_index_order(
    any_runtime: Runtime,
) -> None:
    """Restore and export read an account's state 500 items at a time: each page must start
    after the last one's item in an index, not sort the account's every version again."""
    msp = await create_msp(any_runtime, "State MSP")
    tenant = await create_tenant(any_runtime, msp)
    account = await create_account(any_runtime, tenant)
    scope = system_scope(tenant)
    with Recorder(any_runtime, keep="item_version") as sent:
        async with any_runtime.db.session() as session:
            for after in (None, uuid.uuid4()):
                for kinds, exclude in ((["message"], None), (None, ["folder"]), (None, None)):
                    await catalog.versions_at(
                        session,
                        scope,
                        account.id,
                        "mail",
                        3,
                        kinds=kinds,
                        exclude_kinds=exclude,
                        after_item_id=after,
                    )
    assert len(sent) == 6, sent
    for sql, params in sent:
        for plan in await plans_of(any_runtime, sql, params):
            assert plan.sorts == [], (sql, plan.steps)
            assert plan.reads_by_index("item_version", "account_id"), (sql, plan.steps)
            if "item_id >" in sql:
                assert any(re.search(r"item_id ?> ?", s) for s in plan.steps), plan.steps


async def test_a_point_in_time_steps_back_through_the_accounts_own_snapshots(
    any_runtime: Runtime,
) -> None:
    """Browsing, restoring or exporting "as of" a time looks up the account's newest snapshot
    finished by then: through the account's snapshots in seq order, not by sorting every
    snapshot its tenant finished before that time."""
    msp = await create_msp(any_runtime, "Point MSP")
    tenant = await create_tenant(any_runtime, msp)
    account = await create_account(any_runtime, tenant)
    with Recorder(any_runtime, keep="FROM snapshot") as sent:
        async with any_runtime.db.session() as session:
            for at in (None, utcnow() - timedelta(days=90)):
                await catalog.latest_complete(
                    session, system_scope(tenant), account.id, "mail", at=at
                )
    assert len(sent) == 2, sent
    for sql, params in sent:
        for plan in await plans_of(any_runtime, sql, params):
            assert plan.sorts == [], (sql, plan.steps)
            assert plan.reads_by_index("snapshot", "account_id"), (sql, plan.steps)


async def test_a_folders_children_are_read_in_index_order(any_runtime: Runtime) -> None:
    """Browsing a folder pages through its children by name key and item: each page is read
    from ``ix_item_version_children`` (a folder of 50,000 files sorted all of them for every page:
    60-140 ms), and the page after a cursor enters the index at the cursor's key."""
    msp = await create_msp(any_runtime, "Browse MSP")
    tenant = await create_tenant(any_runtime, msp)
    account = await create_account(any_runtime, tenant)
    with Recorder(any_runtime, keep="item_version") as sent:
        async with any_runtime.db.session() as session:
            for after in (None, ("Budget 2026.xlsx", uuid.uuid4())):
                await catalog.children_at(
                    session,
                    system_scope(tenant),
                    account.id,
                    "onedrive",
                    3,
                    parent_external_id="folder",
                    after_name=after,
                    limit=51,
                )
    assert len(sent) == 2, sent
    for page, (sql, params) in enumerate(sent):
        for plan in await plans_of(any_runtime, sql, params):
            assert plan.sorts == [], (sql, plan.steps)
            reads = [s for s in plan.steps if re.match(r"(SEARCH|SCAN|.* on) item_version\b", s)]
            browse = [s for s in reads if "INDEX ix_item_version_children (account_id=" in s
                      or "item_version ix_item_version_children: ((account_id =" in s]  # fmt: skip
            assert reads and browse == reads, plan.steps
            if page == 1:  # after a cursor: a seek at its key
                assert any("<expr>>?" in s or "200) >= " in s for s in browse), browse


async def test_paging_a_folder_returns_each_child_once_in_name_key_order(
    any_runtime: Runtime,
) -> None:
    """Names alike in their first 200 characters (and beyond) are ordered by item; a page
    after any cursor starts exactly after its row, whatever the page size."""
    msp = await create_msp(any_runtime, "Paging MSP")
    tenant = await create_tenant(any_runtime, msp)
    account = await create_account(any_runtime, tenant)
    long = "Quarterly report " + "x" * 250  # longer than the key
    names = ["b.txt", "a.txt", long + " v1", long + " v2", long, "Ä.txt", "a.txt", "zz", ""]
    now = utcnow()
    rows: list[tuple[str, uuid.UUID]] = []
    async with any_runtime.db.session() as session:
        for n, name in enumerate(names):
            item_id = uuid.uuid4()
            rows.append((name, item_id))
            common = {"tenant_id": tenant.id, "account_id": account.id, "service": "onedrive"}
            await session.execute(
                insert(Item), [{**common, "id": item_id, "external_id": f"i{n}", "kind": "file"}]
            )
            await session.execute(
                insert(ItemVersion),
                [
                    {
                        **common,
                        "item_id": item_id,
                        "kind": "file",
                        "first_seq": 1,
                        "valid_from": now,
                        "parent_external_id": "folder",
                        "name": name,
                        "refs": [],
                        "meta": {},
                    }
                ],
            )
        await session.commit()
    scope = system_scope(tenant)
    async with any_runtime.db.session() as session:
        everything = await catalog.children_at(
            session, scope, account.id, "onedrive", 1, parent_external_id="folder",
            after_name=None, limit=100,
        )  # fmt: skip
        listed = [(v.name, i.id) for i, v in everything]
        assert sorted(listed) == sorted(rows)
        keys = [(name[:NAME_KEY_CHARS], item_id) for name, item_id in listed]
        assert [k[1] for k in keys if k[0] == long[:NAME_KEY_CHARS]] == sorted(
            item_id for name, item_id in rows if name.startswith(long)
        )
        for size in (1, 2, 4):
            paged: list[tuple[str, uuid.UUID]] = []
            after: tuple[str, uuid.UUID] | None = None
            while True:
                page = await catalog.children_at(
                    session, scope, account.id, "onedrive", 1, parent_external_id="folder",
                    after_name=after, limit=size,
                )  # fmt: skip
                paged += [(v.name, i.id) for i, v in page]
                if len(page) < size:
                    break
                after = paged[-1]
            assert paged == listed, size
