"""The database layer's speed-ups keep their promises: on SQLite, reads run on the event
loop's thread yet never wait for a writer, a write waiting for the lock never blocks the
loop, and writers of one process queue on a gate (not in SQLite's sleeping busy handler)
that every way a transaction ends gives back; on PostgreSQL, a GET's session sends no
BEGIN/COMMIT for reads and still commits (or rolls back) its writes together."""

from __future__ import annotations

import asyncio
import copy
import enum
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg.pq import TransactionStatus
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    MetaData,
    String,
    Table,
    Uuid,
    bindparam,
    event,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from safekeep import db as db_module
from safekeep.db import Database, ReadsInline, read_rows
from safekeep.tenants.models.base import (
    EnumText,
    JSONType,
    UTCDateTime,
    UUIDType,
    _uuid_from_hex,
)
from safekeep.transient import is_transient


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    async with db.session() as session:
        await session.execute(text("CREATE TABLE t (x INTEGER)"))
        await session.execute(text("INSERT INTO t VALUES (1)"))
    yield db
    await db.dispose()


async def test_sqlite_reads_ignore_a_writer_and_waiting_writes_leave_the_loop_free(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """Another process holds the write lock for a while: a read answers at once with the
    last committed data, and a write waits for the lock off the loop (a ticker keeps
    ticking meanwhile), then commits."""
    other = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (99)")
    try:
        started = time.monotonic()
        async with sqlite_db.session() as session:
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
        assert time.monotonic() - started < 0.5

        ticks = 0
        gaps: list[float] = []

        async def ticker() -> None:
            nonlocal ticks
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now
                ticks += 1

        async def write() -> None:
            async with sqlite_db.session() as session:
                await session.execute(text("INSERT INTO t VALUES (3)"))

        tick = asyncio.create_task(ticker())
        writing = asyncio.create_task(write())
        await asyncio.sleep(1.5)
        assert not writing.done()  # waiting for the other's lock
        other.execute("COMMIT")
        await asyncio.wait_for(writing, 10)
        tick.cancel()
        # A loop blocked by the waiting write would show one gap of 1.5 s or more.
        assert ticks >= 10 and max(gaps) < 1.0
    finally:
        other.close()
    async with sqlite_db.session() as session:
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 3


async def driver_of(session: AsyncSession) -> ReadsInline:
    raw = await (await session.connection()).get_raw_connection()
    driver = raw.driver_connection
    assert isinstance(driver, ReadsInline)
    return driver


async def hold_a_write(db: Database, value: int, wrote: asyncio.Event, end: asyncio.Event) -> None:
    """Insert ``value``, say so, and keep the transaction open until ``end``; then commit."""
    async with db.session() as session:
        await session.execute(text("INSERT INTO t VALUES (:x)"), {"x": value})
        wrote.set()
        await end.wait()


async def test_sqlite_reads_and_an_unhindered_transaction_run_in_place(
    sqlite_db: Database,
) -> None:
    """Reads run on the loop's thread; so does a write transaction whose first write takes
    the lock at once (the gate is free and no other process writes), its later writes and
    its commit (which, in WAL mode, appends to the log and waits for no lock)."""
    statements: list[tuple[str, bool]] = []
    loop_thread = threading.current_thread().name

    def trace(sql: str) -> None:
        kind = sql.split()[0].upper()
        if kind != "PRAGMA":
            statements.append((kind, threading.current_thread().name == loop_thread))

    async with sqlite_db.session() as session:
        driver = await driver_of(session)
        gate = driver.gate
        assert gate is not None and driver.reads_inline
        driver._conn.set_trace_callback(trace)
        try:
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
            await session.execute(text("INSERT INTO t VALUES (2)"))
            assert gate.locked() and driver.holds_gate and driver.wrote
            await session.execute(text("UPDATE t SET x = x + 10 WHERE x = 2"))
            await session.execute(text("DELETE FROM t WHERE x = 1"))
            await session.commit()
            assert not gate.locked() and not driver.holds_gate and not driver.wrote
        finally:
            driver._conn.set_trace_callback(None)
    assert statements == [
        ("SELECT", True),
        ("BEGIN", True),  # the sqlite3 module's implicit BEGIN before the first write
        ("INSERT", True),
        ("UPDATE", True),
        ("DELETE", True),
        ("COMMIT", True),
    ]
    async with sqlite_db.session() as session:
        assert (await session.execute(text("SELECT x FROM t"))).scalars().all() == [12]


async def test_sqlite_a_commit_that_leaves_a_long_log_checkpoints_on_the_thread(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's automatic checkpoint (which syncs the database file) would run inside a
    commit, on the loop: it is off, and a commit that leaves the log past the bound runs a
    checkpoint on the connection's thread instead, after the gate is given back; a commit
    below the bound runs none."""
    monkeypatch.setattr(db_module, "CHECKPOINT_BYTES", 64 * 1024)
    loop_thread = threading.current_thread().name
    checkpoints: list[tuple[bool, bool]] = []  # (on the loop's thread, gate held)

    async with sqlite_db.session() as session:
        driver = await driver_of(session)
        assert driver.wal_path is not None
        raw = driver._conn
        assert raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        gate = driver.gate
        assert gate is not None

        def trace(sql: str) -> None:
            if "wal_checkpoint" in sql:
                on_loop = threading.current_thread().name == loop_thread
                checkpoints.append((on_loop, gate.locked()))

        raw.set_trace_callback(trace)
        try:
            await session.execute(text("INSERT INTO t VALUES (5)"))
            await session.commit()
            assert checkpoints == []  # a short log: no checkpoint
            await session.execute(
                text("INSERT INTO t SELECT value FROM json_each(:xs)"),
                {"xs": json.dumps(list(range(40_000)))},
            )
            await session.commit()
            assert Path(driver.wal_path).stat().st_size > db_module.CHECKPOINT_BYTES
            assert checkpoints == [(False, False)]
            busy, logged, copied = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            assert (busy, logged) == (0, copied)  # the log was already all in the database
        finally:
            raw.set_trace_callback(None)
    async with sqlite_db.session() as session:
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 40_002


class _FailingCheckpoints:
    """A sqlite3 connection whose checkpoints fail (a disk error, say)."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self._real = real

    def execute(self, sql: str, *args: Any) -> Any:
        if "wal_checkpoint" in sql:
            raise sqlite3.OperationalError("disk I/O error")
        return self._real.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


async def test_sqlite_a_failed_checkpoint_does_not_fail_the_commit_before_it(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit is durable before its checkpoint starts: a checkpoint that fails is
    logged, and the caller sees its commit succeed."""
    monkeypatch.setattr(db_module, "CHECKPOINT_BYTES", 0)
    async with sqlite_db.session() as session:
        driver = await driver_of(session)
        real = driver._connection
        assert real is not None
        driver._connection = _FailingCheckpoints(real)  # type: ignore[assignment]
        try:
            await session.execute(text("INSERT INTO t VALUES (7)"))
            await session.commit()
        finally:
            driver._connection = real
    async with sqlite_db.session() as session:
        assert (await session.execute(text("SELECT count(*) FROM t WHERE x = 7"))).scalar_one() == 1


async def test_sqlite_writers_of_one_process_queue_on_the_gate(sqlite_db: Database) -> None:
    """A second writer waits for the first's transaction to end, off the loop, then commits;
    the gate comes back after a rollback and after an opening write that failed."""
    first_wrote = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        await hold_a_write(sqlite_db, 10, first_wrote, release_first)

    async def second() -> None:
        async with sqlite_db.session() as session:
            await session.execute(text("INSERT INTO t VALUES (20)"))

    one = asyncio.create_task(first())
    await first_wrote.wait()
    two = asyncio.create_task(second())
    await asyncio.sleep(0.3)
    assert not two.done()  # queued behind the first's open transaction
    release_first.set()
    await asyncio.wait_for(asyncio.gather(one, two), 10)

    async def failing() -> None:
        async with sqlite_db.session() as session:
            await session.execute(text("INSERT INTO t VALUES (30)"))
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await failing()
    with pytest.raises(Exception, match="no such table"):
        async with sqlite_db.session() as session:
            await session.execute(text("INSERT INTO missing VALUES (1)"))
    async with sqlite_db.session() as session:
        driver = await driver_of(session)
        assert driver.gate is not None and not driver.gate.locked()
        values = (await session.execute(text("SELECT x FROM t ORDER BY x"))).scalars().all()
    assert values == [1, 10, 20]


async def test_sqlite_a_savepoint_first_does_not_count_as_holding_the_lock(
    sqlite_db: Database,
) -> None:
    """A SAVEPOINT opens a transaction without SQLite's write lock: the write after it may
    still wait for another process, so it goes through the connection's thread."""
    loop_thread = threading.current_thread().name
    inserts: list[bool] = []

    def trace(sql: str) -> None:
        if sql.startswith("INSERT"):
            inserts.append(threading.current_thread().name == loop_thread)

    async with sqlite_db.session() as session:
        driver = await driver_of(session)
        driver._conn.set_trace_callback(trace)
        try:
            async with session.begin_nested():  # its SAVEPOINT goes with the first statement
                await session.execute(text("INSERT INTO t VALUES (7)"))
                assert driver.holds_gate and driver.wrote
        finally:
            driver._conn.set_trace_callback(None)
    assert inserts == [False]
    async with sqlite_db.session() as session:
        assert (await session.execute(text("SELECT x FROM t ORDER BY x"))).scalars().all() == [
            1,
            7,
        ]


async def test_sqlite_a_writer_kept_waiting_too_long_is_told_the_database_is_locked(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_SECONDS", 0.2)
    holding = asyncio.Event()
    done = asyncio.Event()
    task = asyncio.create_task(hold_a_write(sqlite_db, 5, holding, done))
    await holding.wait()
    try:
        with pytest.raises(Exception, match="database is locked"):
            async with sqlite_db.session() as session:
                await session.execute(text("INSERT INTO t VALUES (6)"))
    finally:
        done.set()
        await task
    async with sqlite_db.session() as session:
        assert (await session.execute(text("SELECT x FROM t ORDER BY x"))).scalars().all() == [
            1,
            5,
        ]


@pytest.fixture
async def pg_db(postgres_url: str) -> AsyncIterator[Database]:
    db = Database(postgres_url)
    async with db.session() as session:
        await session.execute(text("CREATE TABLE t (x INTEGER)"))
    yield db
    await db.dispose()


async def transaction_status(session: AsyncSession) -> TransactionStatus:
    raw = await (await session.connection()).get_raw_connection()
    driver: Any = raw.driver_connection
    status: TransactionStatus = driver.info.transaction_status
    return status


async def test_postgres_reads_of_a_get_run_outside_a_transaction(pg_db: Database) -> None:
    async with pg_db.session(begin_on_write=True) as session:
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0
        assert await transaction_status(session) == TransactionStatus.IDLE
    # An ordinary session on the same pooled connection is in a transaction from its first
    # statement.
    async with pg_db.session() as session:
        await session.execute(text("SELECT 1"))
        assert await transaction_status(session) == TransactionStatus.INTRANS


async def test_postgres_sessions_read_instants_in_utc_whatever_the_servers_zone(
    pg_db: Database,
) -> None:
    """Each connection sets its TimeZone to UTC when it is made (the test server's own is
    Etc/UTC, as Debian's packages set it), so psycopg makes ``timezone.utc`` datetimes, which
    the UTC column type takes as they are; the setting survives the rollback a session that
    fails leaves, and a session begun on the connection afterwards."""
    for begin_on_write in (True, False, True):
        with suppress(RuntimeError):
            async with pg_db.session(begin_on_write=begin_on_write) as session:
                assert (await session.execute(text("SHOW TimeZone"))).scalar_one() == "UTC"
                now = (await session.execute(text("SELECT now()"))).scalar_one()
                assert now.tzinfo is UTC
                raise RuntimeError("rolled back")


async def test_postgres_ordinary_sessions_are_transactions_on_autocommit_connections(
    pg_db: Database,
) -> None:
    """Every connection is in autocommit at the driver (set once, not per checkout) and an
    ordinary session begins its transaction itself: its writes commit or roll back together,
    and savepoints nest inside it."""

    async def failing_job() -> None:
        async with pg_db.session() as session:
            await session.execute(text("INSERT INTO t VALUES (1)"))
            await session.execute(text("INSERT INTO t VALUES (2)"))
            raise RuntimeError("the job failed")

    with pytest.raises(RuntimeError):
        await failing_job()
    async with pg_db.session() as session:
        raw = await (await session.connection()).get_raw_connection()
        assert raw.driver_connection.autocommit  # type: ignore[union-attr]
        await session.execute(text("INSERT INTO t VALUES (3)"))
        nested = await session.begin_nested()
        await session.execute(text("INSERT INTO t VALUES (4)"))
        await nested.rollback()
        await session.execute(text("INSERT INTO t VALUES (5)"))
    async with pg_db.session() as session:
        values = (await session.execute(text("SELECT x FROM t ORDER BY x"))).scalars().all()
    assert values == [3, 5]


async def test_postgres_writes_and_locking_reads_of_a_get_are_one_transaction(
    pg_db: Database,
) -> None:
    async with pg_db.session(begin_on_write=True) as session:
        await session.execute(text("SELECT count(*) FROM t"))
        await session.execute(text("INSERT INTO t VALUES (1)"))
        assert await transaction_status(session) == TransactionStatus.INTRANS
        await session.execute(text("INSERT INTO t VALUES (2)"))

    async def failing_route() -> None:
        async with pg_db.session(begin_on_write=True) as session:
            await session.execute(text("INSERT INTO t VALUES (3)"))
            await session.execute(text("INSERT INTO t VALUES (4)"))
            raise RuntimeError("the route failed")

    with pytest.raises(RuntimeError):
        await failing_route()
    async with pg_db.session(begin_on_write=True) as session:
        values = (await session.execute(text("SELECT x FROM t ORDER BY x"))).scalars().all()
        assert values == [1, 2]  # both of the first, neither of the failed one
        await session.execute(text("SELECT x FROM t FOR UPDATE"))
        assert await transaction_status(session) == TransactionStatus.INTRANS


async def test_postgres_json_reads_as_the_standard_library_reads_it(pg_db: Database) -> None:
    """JSON columns are read by our loader (``load_json``) exactly as ``json.loads`` reads
    PostgreSQL's text of them: integers beyond 64 bits stay integers, text stays text."""
    value = {
        "n": 123456789012345678901234567890,
        "f": 0.1,
        "s": "é \u2028 🌍",
        "l": [None, True, -(2**63)],
        "o": {"": {}},
    }
    async with pg_db.session() as session:
        for doc in (value, {"k": value["s"], "m": [1.5e300, 2**64 - 1]}):
            read, as_text = (
                await session.execute(
                    text("SELECT CAST(:v AS JSONB), CAST(CAST(:v AS JSONB) AS TEXT)"),
                    {"v": json.dumps(doc)},
                )
            ).one()
            assert read == json.loads(as_text)
            assert read.get("s", read.get("k")) == value["s"]
    assert type(read["m"][1]) is int  # the last document's 2**64 - 1, not a float
    assert read["m"][1] == 2**64 - 1


async def test_postgres_stores_text_and_json_carrying_nul_with_the_replacement_character(
    pg_db: Database,
) -> None:
    """PostgreSQL's text and jsonb cannot hold U+0000, which text from Microsoft may carry (a
    mail's subject is whatever its sender wrote): written through our engine, it is stored as
    U+FFFD, in plain and in raw statements, in a value and in a key; a JSON string that only
    looks like the escape (a backslash, then "u0000") is kept as it was."""
    table = Table("nul_t", MetaData(), Column("s", String), Column("j", JSONType))
    written = {
        "subject": "Invoice\x00 paid",
        "from": ["Ev\x00e", "\\u0000 is how JSON writes it"],
        "k\x00": "\\\x00",
    }
    async with pg_db.session() as session:
        await session.run_sync(lambda s: table.create(s.connection()))
        await session.execute(table.insert().values(s="a\x00b\x00", j=written))
        await session.execute(text("INSERT INTO nul_t (s) VALUES (:s)"), {"s": "\x00"})
        rows = (await session.execute(select(table.c.s, table.c.j))).all()
    assert rows[0] == (
        "a\ufffdb\ufffd",
        {
            "subject": "Invoice\ufffd paid",
            "from": ["Ev\ufffde", "\\u0000 is how JSON writes it"],
            "k\ufffd": "\\\ufffd",
        },
    )
    assert rows[1] == ("\ufffd", None)


async def test_postgres_connections_opened_for_a_burst_are_kept_for_the_next(
    postgres_url: str,
) -> None:
    """Bursts of concurrent sessions open connections up to the ceiling and keep them: a
    second burst as wide as the first opens none (an overflow above a smaller pool was
    closed as it came back, so every burst paid for new server sessions again)."""
    db = Database(postgres_url, max_connections=6)
    opened = 0

    def on_connect(*_args: Any) -> None:
        nonlocal opened
        opened += 1

    event.listen(db.engine.sync_engine, "connect", on_connect)
    release = asyncio.Event()
    all_in = asyncio.Event()
    holding = 0

    async def hold() -> int:
        nonlocal holding
        async with db.session(begin_on_write=True) as session:
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            holding += 1
            if holding == 6:
                all_in.set()
            await release.wait()
            return int(pid)

    try:
        pids: list[set[int]] = []
        for _burst in range(2):
            release.clear()
            all_in.clear()
            holding = 0
            tasks = [asyncio.create_task(hold()) for _ in range(6)]
            await asyncio.wait_for(all_in.wait(), 10)  # six sessions at once
            release.set()
            pids.append(set(await asyncio.gather(*tasks)))
        assert len(pids[0]) == 6
        assert pids[1] == pids[0]  # the same six server sessions
        assert opened == 6
    finally:
        await db.dispose()


class Colour(enum.StrEnum):
    red = "red"
    blue = "blue"


_DRIVER_METADATA = MetaData()
_PAINT = Table(
    "paint",
    _DRIVER_METADATA,
    Column("id", Uuid, primary_key=True),
    Column("colour", EnumText(Colour)),
    Column("doc", JSONType),
    Column("at", UTCDateTime),
    Column("size", BigInteger),
    Column("wet", Boolean),
    Column("name", String(40)),
)


@asynccontextmanager
async def painted(url: str) -> AsyncIterator[Database]:
    db = Database(url)
    async with db.engine.begin() as connection:
        await connection.run_sync(_DRIVER_METADATA.create_all)
    async with db.session() as session:
        await session.execute(
            _PAINT.insert(),
            [
                {
                    "id": uuid.UUID(int=n + 1),
                    "colour": (Colour.red, Colour.blue, None, Colour.red, Colour.red, None)[n],
                    "doc": {"n": n, "big": 2**70, "s": "é"} if n % 2 else None,
                    "at": datetime(2026, 1, 1 + n, 12, tzinfo=UTC) if n != 3 else None,
                    "size": 2**40 + n,
                    "wet": bool(n % 2),
                    "name": f"tin {n}",
                }
                for n in range(6)
            ],
        )
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
async def paint_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'paint.sqlite'}"
    async with painted(url) as db:
        yield db


async def in_transaction(session: AsyncSession) -> bool:
    raw = await (await session.connection()).get_raw_connection()
    driver: Any = raw.driver_connection
    if isinstance(driver, ReadsInline):
        return bool(driver._connection is not None and driver._connection.in_transaction)
    return bool(driver.info.transaction_status != TransactionStatus.IDLE)


# Built once, as the repositories' statements are: one with a parameter that has a bind
# processor (UTCDateTime) and an enum parameter, and one with an expanding IN list.
_SINCE = (
    select(_PAINT, (_PAINT.c.size * 2).label("twice"))
    .where(
        _PAINT.c.at >= bindparam("since", type_=UTCDateTime),
        _PAINT.c.colour.is_distinct_from(bindparam("not_colour", type_=EnumText(Colour))),
    )
    .order_by(_PAINT.c.id)
)
_ALL_BUT_RED = {"since": datetime(2026, 1, 1, tzinfo=UTC), "not_colour": "red"}
_AMONG = select(_PAINT.c.id, _PAINT.c.name).where(_PAINT.c.id.in_(bindparam("ids", expanding=True)))


@pytest.fixture
def on_driver(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of each statement ``read_rows`` ran on the driver rather than SQLAlchemy."""
    ran: list[str] = []
    original_run = db_module._DriverRead.run

    async def counted(self: Any, connection: Any, sync: Any, values: Any) -> Any:
        rows = await original_run(self, connection, sync, values)
        if rows is not None:
            ran.append(self.sql)
        return rows

    monkeypatch.setattr(db_module._DriverRead, "run", counted)
    return ran


async def test_plain_reads_run_on_the_driver_with_sqlalchemys_rows(
    paint_db: Database, on_driver: list[str]
) -> None:
    """``read_rows`` of a statement built once runs it on the driver's connection (psycopg's,
    or SQLite's in place), and what comes back is what SQLAlchemy's execution gives: the same
    rows, keys and value types (enum members, aware UTC datetimes, JSON with big integers,
    UUIDs), with the parameters' processors applied; listeners see the statement and its
    parameters; no transaction is begun for a GET's read. A statement with an expanding
    parameter runs on psycopg (as an array) and is left to SQLAlchemy on SQLite."""
    seen: list[tuple[str, Any]] = []

    def on_execute(_c: object, _cur: object, sql: str, params: Any, *_rest: object) -> None:
        seen.append((sql, params))

    event.listen(paint_db.engine.sync_engine, "before_cursor_execute", on_execute)
    values = {
        "since": datetime(2026, 1, 2, 13, 0, tzinfo=timezone(timedelta(hours=2))),
        "not_colour": "blue",
    }
    async with paint_db.session(begin_on_write=True) as session:
        driven = await read_rows(session, _SINCE, values)
        assert not await in_transaction(session)
        among = await read_rows(session, _AMONG, {"ids": [uuid.UUID(int=2), uuid.UUID(int=5)]})
        expected = (await session.execute(_SINCE, values)).all()
        expected_among = (
            await session.execute(_AMONG, {"ids": [uuid.UUID(int=2), uuid.UUID(int=5)]})
        ).all()
    event.remove(paint_db.engine.sync_engine, "before_cursor_execute", on_execute)

    # SQLAlchemy's own executions (the expected rows) come after the two reads.
    assert on_driver == [seen[0][0]] if paint_db.is_sqlite else [seen[0][0], seen[1][0]]
    processed = seen[0][1]  # as SQLAlchemy hands them to the driver
    if paint_db.is_sqlite:
        assert processed == (2, "2026-01-02 11:00:00.000000", "blue")  # 2 of size * 2
    else:
        assert processed["since"] == datetime(2026, 1, 2, 11, tzinfo=UTC)
        assert processed["not_colour"] == "blue"
    assert [r.name for r in driven] == ["tin 2", "tin 4", "tin 5"]  # 0 too old, 1 blue, 3 undated
    assert driven == expected
    for got, want in zip(driven, expected, strict=True):
        assert got._fields == want._fields
        assert [type(v) for v in got] == [type(v) for v in want]
        assert got._mapping == want._mapping
    assert driven[0].colour is None and driven[1].colour is Colour.red
    assert driven[0].at.tzinfo is UTC
    assert driven[1].doc is None  # tin 4
    assert driven[2].doc == {"n": 5, "big": 2**70, "s": "é"}
    assert driven[2].twice == 2 * (2**40 + 5)
    assert among == expected_among and len(among) == 2


async def test_a_statement_asks_its_cursor_for_columns_at_its_first_run_only(
    paint_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The columns' processors come from the cursor's description once per statement; later
    runs of it do not read the description (psycopg builds an object per column on every
    read of it), and their rows are the first run's in every type."""
    statement = select(_PAINT).where(_PAINT.c.size > bindparam("size")).order_by(_PAINT.c.id)
    read: list[str] = []
    cursor_types = (sqlite3.Cursor,) if paint_db.is_sqlite else (psycopg.AsyncCursor,)

    class Counting:
        def __init__(self, cursor: Any) -> None:
            self._cursor = cursor

        def __getattr__(self, name: str) -> Any:
            if name == "description":
                read.append(name)
            return getattr(self._cursor, name)

    original = db_module._DriverRead._description

    def counted(self: Any, cursor: Any) -> Any:
        assert isinstance(cursor, cursor_types)
        return original(self, Counting(cursor))

    monkeypatch.setattr(db_module._DriverRead, "_description", counted)
    async with paint_db.session(begin_on_write=True) as session:
        runs = [await read_rows(session, statement, {"size": n}) for n in (0, 0, 2**40 + 2)]
    assert read == ["description"]
    assert runs[0] == runs[1] and len(runs[0]) > len(runs[2]) > 0
    for got, want in zip(runs[1], runs[0], strict=True):
        assert [type(v) for v in got] == [type(v) for v in want]


_STAMP = Table(
    "stamp",
    _DRIVER_METADATA,
    Column("n", BigInteger, primary_key=True),
    Column("id", UUIDType),
    Column("at", UTCDateTime),
)
_STAMPS = select(_STAMP.c.id, _STAMP.c.at).order_by(_STAMP.c.n)


async def test_uuids_and_timestamps_read_as_the_standard_parsers_read_them(
    paint_db: Database, on_driver: list[str]
) -> None:
    """The models' UUID and timestamp columns read back what ``uuid.UUID(text)`` and an aware
    UTC ``datetime`` of the stored text are, whoever wrote the text (on SQLite the readers are
    ours, made for speed: ``_uuid_from_hex`` and ``_utc_from_sqlite``): through SQLAlchemy's
    execution and through the driver read alike."""
    ids = [uuid.uuid4().hex, str(uuid.uuid4()), uuid.UUID(int=0).hex, "F" * 32, uuid.uuid4().hex]
    stamps = [
        ("2026-01-02 11:00:00.123456", datetime(2026, 1, 2, 11, 0, 0, 123456, tzinfo=UTC)),
        ("2026-01-02 11:00:00", datetime(2026, 1, 2, 11, tzinfo=UTC)),
        ("2026-01-02T13:00:00+02:00", datetime(2026, 1, 2, 11, tzinfo=UTC)),
        ("2026-01-02", datetime(2026, 1, 2, tzinfo=UTC)),
        (None, None),
    ]
    insert = text(
        "INSERT INTO stamp (n, id, at) VALUES (:n, :id, :at)"
        if paint_db.is_sqlite
        else "INSERT INTO stamp (n, id, at) "
        "VALUES (:n, CAST(:id AS UUID), CAST(:at AS TIMESTAMPTZ))"
    )
    async with paint_db.session() as session:
        await session.execute(
            insert,
            [
                {"n": n, "id": i, "at": at}
                for n, (i, (at, _)) in enumerate(zip(ids, stamps, strict=True))
            ],
        )
    async with paint_db.session(begin_on_write=True) as session:
        driven = await read_rows(session, _STAMPS, {})
        executed = (await session.execute(_STAMPS)).all()
    assert on_driver  # the first read ran on the driver
    for rows in (driven, executed):
        for (got_id, got_at), text_id, (_, want_at) in zip(rows, ids, stamps, strict=True):
            want_id = uuid.UUID(text_id)
            assert type(got_id) is uuid.UUID
            assert got_id == want_id and got_id.int == want_id.int
            assert str(got_id) == str(want_id) and hash(got_id) == hash(want_id)
            assert got_id.is_safe is want_id.is_safe and got_id.version == want_id.version
            assert copy.deepcopy(got_id) == want_id  # as pickle copies it
            assert got_at == want_at
            assert got_at is None or got_at.tzinfo is UTC


@pytest.mark.parametrize(
    "text_",
    [
        uuid.uuid4().hex,
        "F" * 32,
        str(uuid.uuid4()),
        "{" + uuid.uuid4().hex + "}",
        "urn:uuid:" + str(uuid.uuid4()),
        "-" + "a" * 31,  # 32 characters, a sign: int() would take it, uuid.UUID does not
        "+" + "a" * 31,
        "0x" + "a" * 30,
        "_".join(["a" * 8] * 3) + "a" * 6,
        " " + "a" * 31,
        "g" * 32,
        "a" * 31,
    ],
)
def test_the_sqlite_uuid_reader_answers_as_uuid_parses(text_: str) -> None:
    """Whatever the stored text, ``_uuid_from_hex`` answers as ``uuid.UUID(text)`` does: the
    same UUID, or a ValueError."""
    try:
        want: uuid.UUID | None = uuid.UUID(text_)
    except ValueError:
        want = None
    if want is None:
        with pytest.raises(ValueError, match=r"badly formed|invalid literal"):
            _uuid_from_hex(text_)
    else:
        got = _uuid_from_hex(text_)
        assert got == want and got is not None and got.int == want.int


_CHOSEN = (
    select(_PAINT.c.name)
    .where(
        _PAINT.c.id.in_(bindparam("ids", expanding=True)),
        _PAINT.c.colour.not_in(bindparam("colours", expanding=True)),
    )
    .order_by(_PAINT.c.name)
)


async def test_in_lists_answer_as_sqlalchemy_expands_them(
    paint_db: Database, on_driver: list[str]
) -> None:
    """``IN`` and ``NOT IN`` lists (sent as arrays on PostgreSQL) answer what SQLAlchemy's
    expansion answers: enum members processed one by one, an empty list, a NULL in the list."""
    every = [uuid.UUID(int=n + 1) for n in range(6)]
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"ids": every, "colours": [Colour.red]}, ["tin 1"]),  # NULL colours are not "not red"
        ({"ids": every, "colours": ["blue"]}, ["tin 0", "tin 3", "tin 4"]),
        ({"ids": every[:2], "colours": []}, ["tin 0", "tin 1"]),  # nothing excluded
        ({"ids": [], "colours": [Colour.blue]}, []),
        ({"ids": every, "colours": [Colour.blue, None]}, []),  # NOT IN a list with NULL
    ]
    async with paint_db.session(begin_on_write=True) as session:
        for values, names in cases:
            driven = await read_rows(session, _CHOSEN, values)
            expected = (await session.execute(_CHOSEN, values)).all()
            assert [r.name for r in driven] == names
            assert driven == expected
    if paint_db.is_sqlite:
        assert on_driver == []
    else:
        assert len(on_driver) == len(cases)
        assert "= ANY(CAST(%(ids)s AS UUID[]))" in on_driver[0]
        assert "<> ALL(CAST(%(colours)s AS VARCHAR(20)[]))" in on_driver[0]


async def test_a_driver_read_in_an_ordinary_session_is_in_its_transaction(
    paint_db: Database,
) -> None:
    """Outside a GET, a PostgreSQL session's first statement begins its transaction: such a
    read is left to SQLAlchemy (whose hook sends the BEGIN). Once a transaction has written,
    reads see its writes (on PostgreSQL on the driver, inside it; on SQLite through
    SQLAlchemy, as the connection holds the write gate), and nothing of it outlives its
    rollback."""
    async with paint_db.session() as session:
        first = await read_rows(session, _SINCE, _ALL_BUT_RED)
        assert await in_transaction(session) is not paint_db.is_sqlite
        await session.execute(
            _PAINT.update().where(_PAINT.c.id == uuid.UUID(int=2)).values(name="moved")
        )
        again = await read_rows(session, _SINCE, _ALL_BUT_RED)
        assert [r.name for r in again] == [
            "moved" if r.id == uuid.UUID(int=2) else r.name for r in first
        ]
        await session.rollback()
    async with paint_db.session(begin_on_write=True) as session:
        rows = await read_rows(session, _AMONG, {"ids": [uuid.UUID(int=2)]})
    assert [r.name for r in rows] == ["tin 1"]  # rolled back with its transaction


async def test_postgres_driver_errors_arrive_as_sqlalchemys_and_a_lost_connection_heals(
    postgres_url: str,
) -> None:
    """A driver read's failure is SQLAlchemy's ``DBAPIError`` (callers and
    ``safekeep.transient`` see what they would through SQLAlchemy); a connection the server
    dropped is invalidated, so the error counts as transient and the next session gets a
    live connection."""
    async with painted(postgres_url) as paint_db:
        failing = select((_PAINT.c.size / bindparam("d", type_=BigInteger)).label("q"))
        with pytest.raises(sa_exc.DBAPIError) as raised:
            async with paint_db.session(begin_on_write=True) as session:
                await read_rows(session, failing, {"d": 0})
        assert isinstance(raised.value.orig, psycopg.errors.DivisionByZero)
        assert not is_transient(raised.value)

        async def read_after_the_server_dropped_the_connection() -> None:
            async with paint_db.session(begin_on_write=True) as session:
                pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                async with paint_db.session() as other:
                    await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                await read_rows(session, _SINCE, _ALL_BUT_RED)

        with pytest.raises(sa_exc.DBAPIError) as lost:
            await read_after_the_server_dropped_the_connection()
        assert lost.value.connection_invalidated and is_transient(lost.value)
        assert "FROM paint" in str(lost.value.statement)  # the read's own error, not a rollback's
        async with paint_db.session(begin_on_write=True) as session:
            assert len(await read_rows(session, _SINCE, _ALL_BUT_RED)) == 3


async def test_sqlite_driver_errors_arrive_as_sqlalchemys(tmp_path: Path) -> None:
    async with painted(f"sqlite+aiosqlite:///{tmp_path / 'paint.sqlite'}") as paint_db:
        async with paint_db.session(begin_on_write=True) as session:
            await session.execute(text("DROP TABLE paint"))
        with pytest.raises(sa_exc.OperationalError) as raised:
            async with paint_db.session(begin_on_write=True) as session:
                await read_rows(session, _SINCE, _ALL_BUT_RED)
    assert isinstance(raised.value.orig, sqlite3.OperationalError)
    assert "no such table" in str(raised.value.orig)
    assert "FROM paint" in str(raised.value.statement)


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
async def test_pool_use_and_full_checkouts_are_counted(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """What a process's /metrics reports of its connections: in use, idle, the ceiling, and a
    count of the checkouts that took the last free one (the next session then waits)."""
    url = request.getfixturevalue("postgres_url" if kind == "postgres" else "sqlite_url")
    before = db_module.pool_use()
    full_before = full_checkouts()
    db = Database(url, max_connections=2)
    limit = 2 if kind == "postgres" else db_module.SQLITE_POOL_SIZE + db_module.SQLITE_POOL_OVERFLOW
    assert db.connection_limit == limit
    try:
        async with AsyncExitStack() as stack:
            for n in range(1, limit + 1):
                session = await stack.enter_async_context(db.session())
                await session.execute(text("SELECT 1"))  # checks a connection out
                use = db_module.pool_use()
                assert use.in_use - before.in_use == n
                assert use.limit - before.limit == limit
                # Only the checkout that leaves the pool with none free is counted.
                assert full_checkouts() - full_before == (1 if n == limit else 0)
        use = db_module.pool_use()
        assert use.in_use == before.in_use
        assert use.idle - before.idle == min(limit, db_module.SQLITE_POOL_SIZE)
    finally:
        await db.dispose()
    assert db_module.pool_use().limit == before.limit  # a disposed database is not reported


def full_checkouts() -> float:
    return REGISTRY.get_sample_value("safekeep_db_pool_full_total") or 0.0
