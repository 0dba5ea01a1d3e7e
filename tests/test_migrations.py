"""Migrations build the schema the models describe, on PostgreSQL and SQLite alike."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from safekeep.db import to_sync_url
from safekeep.migrate import alembic_config
from safekeep.tenants.models import Base


def _drift(url: str) -> list[Any]:
    engine = create_engine(to_sync_url(url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_models_and_migrations_agree(database_url: str) -> None:
    """Fails when a model changes without a migration (or the reverse)."""
    assert _drift(database_url) == []


def test_every_table_is_migrated(database_url: str) -> None:
    engine = create_engine(to_sync_url(database_url))
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_downgrade_then_upgrade(database_url: str) -> None:
    from alembic import command

    config = alembic_config(database_url)
    command.downgrade(config, "base")
    engine = create_engine(to_sync_url(database_url))
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    command.upgrade(config, "head")
    assert _drift(database_url) == []


def test_one_owner_per_directory_keeps_the_earliest_binding(tmp_path: Any) -> None:
    """Before consent was proven, a forged callback could bind a directory twice: the
    migration keeps the earliest binding, unbinds the others (audited), then enforces it."""
    import sqlite3
    import uuid

    from alembic import command
    from sqlalchemy.exc import IntegrityError

    path = tmp_path / "m.db"
    config = alembic_config(f"sqlite+aiosqlite:///{path}")
    command.upgrade(config, "0001")
    msp = uuid.uuid4().hex
    with sqlite3.connect(path) as con:
        con.execute(
            "INSERT INTO msp (id, name, status, created_at) "
            "VALUES (?, 'm', 'active', '2026-01-01 00:00:00')",
            (msp,),
        )
        for name, when in (("second", "02"), ("first", "01"), ("third", "03")):
            con.execute(
                "INSERT INTO tenant (id, msp_id, name, status, consent_state, entra_tenant_id, "
                "consent_changed_at, wrapped_data_key, storage_prefix, created_at, updated_at) "
                "VALUES (?, ?, ?, 'active', 'granted', 'dir-1', ?, x'00', 'p', ?, ?)",
                (uuid.uuid4().hex, msp, name, *[f"2026-01-{when} 00:00:00"] * 3),
            )
    command.upgrade(config, "head")
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            rows = conn.exec_driver_sql(
                "SELECT name, consent_state, entra_tenant_id FROM tenant ORDER BY name"
            ).fetchall()
            unbound = conn.exec_driver_sql(
                "SELECT count(*) FROM audit_event WHERE action = 'tenant.consent_unbound'"
            ).scalar_one()
        assert [tuple(r) for r in rows] == [
            ("first", "granted", "dir-1"),
            ("second", "pending", None),
            ("third", "pending", None),
        ]
        assert unbound == 2
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.exec_driver_sql("UPDATE tenant SET entra_tenant_id = 'dir-1' WHERE name = 'third'")
        with engine.begin() as conn:  # a deleted tenant keeps its directory for the record
            conn.exec_driver_sql("UPDATE tenant SET status = 'deleted' WHERE name = 'first'")
            conn.exec_driver_sql("UPDATE tenant SET entra_tenant_id = 'dir-1' WHERE name = 'third'")
    finally:
        engine.dispose()


def test_columns_added_later_are_filled_from_the_rows_already_there(tmp_path: Any) -> None:
    """Usage reads a tenant's stored bytes from its accounts since 0008, and a portal an
    account's last backup since 0018: the migrations fill them from each account's existing
    snapshots (the last one finished, complete or partial; a running one has not). Since 0019
    a job, and since 0020 an account, names its tenant's MSP, filled from the tenant."""
    import sqlite3
    import uuid

    from alembic import command

    path = tmp_path / "m.db"
    config = alembic_config(f"sqlite+aiosqlite:///{path}")
    command.upgrade(config, "0007")
    msp, tenant = uuid.uuid4().hex, uuid.uuid4().hex
    accounts = [uuid.uuid4().hex for _ in range(3)]
    when = "2026-01-01 00:00:00"
    with sqlite3.connect(path) as con:
        con.execute(
            "INSERT INTO msp (id, name, status, created_at) VALUES (?, 'm', 'active', ?)",
            (msp, when),
        )
        con.execute(
            "INSERT INTO tenant (id, msp_id, name, status, consent_state, wrapped_data_key, "
            "storage_prefix, created_at, updated_at) "
            "VALUES (?, ?, 't', 'active', 'granted', x'00', 'p', ?, ?)",
            (tenant, msp, when, when),
        )
        for n, account in enumerate(accounts):
            con.execute(
                "INSERT INTO account (id, tenant_id, kind, graph_id, display_name, protected, "
                "state, licensed, account_enabled, sku_ids, services_found, created_at) "
                "VALUES (?, ?, 'user', ?, 'u', 1, 'active', 1, 1, '[]', '{}', ?)",
                (account, tenant, f"g{n}", when),
            )
        # three snapshots of the first account, one of the second (5 GiB), none of the third
        for account, seq, service, added, status, completed in (
            (accounts[0], 1, "mail", 1000, "complete", "2026-01-02 00:00:00.000000"),
            (accounts[0], 2, "mail", 234, "partial", "2026-01-03 00:00:00.000000"),
            (accounts[0], 3, "mail", 0, "running", None),
            (accounts[1], 1, "onedrive", 5 * 2**30, "complete", "2026-01-05 00:00:00.000000"),
        ):
            con.execute(
                "INSERT INTO snapshot (id, tenant_id, account_id, service, seq, status, "
                "started_at, completed_at, items_total, items_added, items_changed, "
                "items_removed, bytes_added, skipped) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, ?, 0)",
                (uuid.uuid4().hex, tenant, account, service, seq, status, when, completed, added),
            )
        other_msp, other_tenant = uuid.uuid4().hex, uuid.uuid4().hex
        con.execute(
            "INSERT INTO msp (id, name, status, created_at) VALUES (?, 'o', 'active', ?)",
            (other_msp, when),
        )
        con.execute(
            "INSERT INTO tenant (id, msp_id, name, status, consent_state, wrapped_data_key, "
            "storage_prefix, created_at, updated_at) "
            "VALUES (?, ?, 'o', 'active', 'granted', x'01', 'q', ?, ?)",
            (other_tenant, other_msp, when, when),
        )
        jobs = {uuid.uuid4().hex: msp, uuid.uuid4().hex: other_msp, uuid.uuid4().hex: msp}
        for job, (of, status) in zip(
            jobs,
            ((tenant, "running"), (other_tenant, "queued"), (tenant, "succeeded")),
            strict=True,
        ):
            con.execute(
                "INSERT INTO job (id, tenant_id, kind, trigger, status, params, result, "
                "created_at, updated_at) VALUES (?, ?, 'backup', 'manual', ?, '{}', '{}', ?, ?)",
                (job, of, status, when, when),
            )
    command.upgrade(config, "head")
    with sqlite3.connect(path) as con:
        assert dict(con.execute("SELECT id, msp_id FROM job").fetchall()) == jobs
        assert {m for (m,) in con.execute("SELECT msp_id FROM account")} == {msp}
        rows = con.execute("SELECT id, stored_bytes, last_backup_at FROM account").fetchall()
    found = {account: (stored, last) for account, stored, last in rows}
    assert [found[a] for a in accounts] == [
        (1234, "2026-01-03 00:00:00.000000"),
        (5 * 2**30, "2026-01-05 00:00:00.000000"),
        (0, None),
    ]


def _index_valid(url: str, name: str) -> bool | None:
    engine = create_engine(to_sync_url(url))
    try:
        with engine.connect() as conn:
            found = conn.execute(
                text(
                    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " WHERE c.relname = :name"
                ),
                {"name": name},
            ).scalar()
            return None if found is None else bool(found)
    finally:
        engine.dispose()


def rerun_index_migrations(config: Any) -> None:
    from alembic import command

    command.stamp(config, "0012")
    command.upgrade(config, "0014")
    command.stamp(config, "0015")
    command.upgrade(config, "0016")


def test_an_index_build_interrupted_on_postgresql_is_rebuilt_when_run_again(
    postgres_url: str,
) -> None:
    """Indexes on existing tables are built CONCURRENTLY (writers are not blocked); such a
    build that is interrupted leaves an INVALID index behind, which running the migration
    again replaces, and a run after a complete build keeps what is there."""
    from alembic import command

    config = alembic_config(postgres_url)
    name = "ix_item_version_children"  # migration 0013's
    assert _index_valid(postgres_url, name) is True
    engine = create_engine(to_sync_url(postgres_url))
    try:
        with engine.begin() as conn:  # what an interrupted CREATE INDEX CONCURRENTLY leaves
            conn.execute(
                text("UPDATE pg_index SET indisvalid = false WHERE indexrelid = :n ::regclass"),
                {"n": name},
            )
    finally:
        engine.dispose()
    assert _index_valid(postgres_url, name) is False
    # The index migrations (0013, 0014, 0016) run again; the others change columns (0015's
    # index 0019 replaced) and run once.
    rerun_index_migrations(config)
    assert _index_valid(postgres_url, name) is True
    rerun_index_migrations(config)  # and a rerun after a complete build
    command.stamp(config, "head")
    assert _index_valid(postgres_url, name) is True
    assert _index_valid(postgres_url, "ix_item_version_browse") is None
    assert _drift(postgres_url) == []


def _table(name: str, *columns: tuple[str, Any]) -> Any:
    import sqlalchemy as sa

    return sa.table(name, *(sa.column(c, t) for c, t in columns))


def _seed_accounts(conn: Any, at: Any, n: int) -> tuple[Any, Any, list[Any]]:
    """An MSP, a tenant and ``n`` accounts, written as rows of the tables (whatever revision
    the database is at); returns the MSP's id, the tenant's and the accounts'."""
    import uuid

    import sqlalchemy as sa

    when, key = sa.DateTime(timezone=True), sa.Uuid()
    msp_id, tenant_id = uuid.uuid4(), uuid.uuid4()
    accounts = [uuid.uuid4() for _ in range(n)]
    conn.execute(
        sa.insert(
            _table(
                "msp",
                ("id", key),
                ("name", sa.String),
                ("status", sa.String),
                ("created_at", when),
            )
        ),
        {"id": msp_id, "name": "m", "status": "active", "created_at": at},
    )
    conn.execute(
        sa.insert(
            _table(
                "tenant",
                ("id", key),
                ("msp_id", key),
                ("name", sa.String),
                ("status", sa.String),
                ("consent_state", sa.String),
                ("wrapped_data_key", sa.LargeBinary),
                ("storage_prefix", sa.String),
                ("created_at", when),
                ("updated_at", when),
            )
        ),
        {
            "id": tenant_id,
            "msp_id": msp_id,
            "name": "t",
            "status": "active",
            "consent_state": "granted",
            "wrapped_data_key": b"\0",
            "storage_prefix": "p",
            "created_at": at,
            "updated_at": at,
        },
    )
    account = _table(
        "account",
        ("id", key),
        ("tenant_id", key),
        ("msp_id", key),
        ("kind", sa.String),
        ("graph_id", sa.String),
        ("display_name", sa.String),
        ("protected", sa.Boolean),
        ("state", sa.String),
        ("licensed", sa.Boolean),
        ("account_enabled", sa.Boolean),
        ("sku_ids", sa.JSON),
        ("services_found", sa.JSON),
        ("created_at", when),
    )
    for n, account_id in enumerate(accounts):
        conn.execute(
            sa.insert(account),
            {
                "id": account_id,
                "tenant_id": tenant_id,
                "msp_id": msp_id,
                "kind": "user",
                "graph_id": f"g{n}",
                "display_name": "u",
                "protected": True,
                "state": "active",
                "licensed": True,
                "account_enabled": True,
                "sku_ids": [],
                "services_found": {},
                "created_at": at,
            },
        )
    return msp_id, tenant_id, accounts


def _insert_snapshot(conn: Any, tenant_id: Any, account_id: Any, **fields: Any) -> None:
    """A snapshot row: ``fields`` gives its service, seq, status, times (and its job)."""
    import uuid

    import sqlalchemy as sa

    when, key = sa.DateTime(timezone=True), sa.Uuid()
    snapshot = _table(
        "snapshot",
        ("id", key),
        ("tenant_id", key),
        ("account_id", key),
        ("job_id", key),
        ("service", sa.String),
        ("seq", sa.Integer),
        ("status", sa.String),
        ("started_at", when),
        ("completed_at", when),
        ("items_total", sa.Integer),
        ("items_added", sa.Integer),
        ("items_changed", sa.Integer),
        ("items_removed", sa.Integer),
        ("bytes_added", sa.BigInteger),
        ("skipped", sa.Integer),
    )
    counts = dict.fromkeys(
        ("items_total", "items_added", "items_changed", "items_removed", "bytes_added", "skipped"),
        0,
    )
    conn.execute(
        sa.insert(snapshot),
        {"id": uuid.uuid4(), "tenant_id": tenant_id, "account_id": account_id, "job_id": None}
        | counts
        | fields,
    )


def test_each_services_last_backup_is_filled_from_the_snapshots(database_url: str) -> None:
    """0021 fills ``account.last_backups`` (each service's newest finished snapshot, complete
    or partial) and ``least_recent_backup_at`` (the oldest of those) on both databases, as the
    application reads them: aware instants."""
    from datetime import UTC, datetime

    import sqlalchemy as sa
    from alembic import command

    from safekeep.tenants.models import Account

    config = alembic_config(database_url)
    command.downgrade(config, "0020")
    at = datetime(2026, 1, 1, tzinfo=UTC)

    def day(n: int, hour: int = 0) -> datetime:
        return at.replace(day=n, hour=hour, microsecond=250_000)

    engine = create_engine(to_sync_url(database_url))
    try:
        with engine.begin() as conn:
            _, tenant_id, accounts = _seed_accounts(conn, at, 3)
            # the first account: mail twice (the later partial), OneDrive once, mail running
            for account_id, seq, service, status, completed in (
                (accounts[0], 1, "mail", "complete", day(2)),
                (accounts[0], 2, "mail", "partial", day(4, 6)),
                (accounts[0], 3, "mail", "running", None),
                (accounts[0], 1, "onedrive", "complete", day(3)),
                (accounts[1], 1, "calendar", "running", None),
            ):
                _insert_snapshot(
                    conn,
                    tenant_id,
                    account_id,
                    service=service,
                    seq=seq,
                    status=status,
                    started_at=at,
                    completed_at=completed,
                )
        command.upgrade(config, "head")
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(Account.id, Account.last_backups, Account.least_recent_backup_at)
            ).all()
    finally:
        engine.dispose()
    found = {account_id: (last, least) for account_id, last, least in rows}
    assert [found[a] for a in accounts] == [
        ({"mail": day(4, 6), "onedrive": day(3)}, day(3)),
        ({}, None),
        ({}, None),
    ]


def test_snapshots_left_running_by_a_finished_job_are_interrupted(database_url: str) -> None:
    """0022 marks interrupted the snapshots a finished job (or one since deleted) left running;
    one its running job may still resume, and finished ones, stay as they are."""
    import uuid
    from datetime import UTC, datetime

    import sqlalchemy as sa
    from alembic import command

    config = alembic_config(database_url)
    command.downgrade(config, "0021")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    key = sa.Uuid()
    job = _table(
        "job",
        ("id", key),
        ("tenant_id", key),
        ("msp_id", key),
        ("kind", sa.String),
        ("trigger", sa.String),
        ("status", sa.String),
        ("params", sa.JSON),
        ("result", sa.JSON),
        ("created_at", sa.DateTime(timezone=True)),
        ("updated_at", sa.DateTime(timezone=True)),
    )
    engine = create_engine(to_sync_url(database_url))
    try:
        with engine.begin() as conn:
            msp_id, tenant_id, accounts = _seed_accounts(conn, at, 5)
            jobs = {status: uuid.uuid4() for status in ("failed", "cancelled", "running")}
            for status, job_id in jobs.items():
                conn.execute(
                    sa.insert(job),
                    {
                        "id": job_id,
                        "tenant_id": tenant_id,
                        "msp_id": msp_id,
                        "kind": "backup",
                        "trigger": "manual",
                        "status": status,
                        "params": {},
                        "result": {},
                        "created_at": at,
                        "updated_at": at,
                    },
                )
            seeded: list[tuple[Any, str, uuid.UUID | None]] = [
                (accounts[0], "running", jobs["failed"]),
                (accounts[1], "running", jobs["cancelled"]),
                (accounts[2], "running", None),
                (accounts[3], "running", jobs["running"]),
                (accounts[4], "complete", jobs["failed"]),
            ]
            for account_id, status, ran_in in seeded:
                _insert_snapshot(
                    conn,
                    tenant_id,
                    account_id,
                    job_id=ran_in,
                    service="mail",
                    seq=1,
                    status=status,
                    started_at=at,
                    completed_at=at if status == "complete" else None,
                )
        command.upgrade(config, "head")
        with engine.connect() as conn:
            snapshot = _table("snapshot", ("account_id", key), ("status", sa.String))
            found: dict[Any, str] = dict(
                conn.execute(sa.select(snapshot.c.account_id, snapshot.c.status)).all()
            )
    finally:
        engine.dispose()
    assert [found[a] for a in accounts] == [
        "interrupted",
        "interrupted",
        "interrupted",
        "running",
        "complete",
    ]
