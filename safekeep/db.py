"""Database engine and sessions, one code path for SQLite (embedded) and PostgreSQL.

The edge (a request, an actor) owns the unit of work: it opens a session from
``Database.session()``, services only ``flush()``, and the edge commits or rolls back.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import aiosqlite
import psycopg
import structlog
from prometheus_client import Counter
from psycopg.abc import Buffer
from psycopg.pq import TransactionStatus
from psycopg.types.string import StrDumperUnknown
from sqlalchemy import event
from sqlalchemy import exc as exc_module
from sqlalchemy.engine import Row, make_url
from sqlalchemy.engine.result import result_tuple
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql.expression import ClauseElement, Executable

from safekeep.text import storable_text

log = structlog.get_logger(__name__)


def to_async_url(url: str) -> str:
    """Accept the URLs operators write and pick the async driver we ship."""
    parsed = make_url(url)
    driver = parsed.drivername
    if driver in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif driver in ("sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


def to_sync_url(url: str) -> str:
    """Alembic and the CLI's one-shot tasks use the synchronous drivers."""
    parsed = make_url(to_async_url(url))
    if parsed.drivername == "sqlite+aiosqlite":
        parsed = parsed.set(drivername="sqlite+pysqlite")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


CONNECT_TIMEOUT_SECONDS = 5
CHECKOUT_TIMEOUT_SECONDS = 30
# How long a SQLite write waits for the database's write lock before "database is locked".
SQLITE_BUSY_TIMEOUT_SECONDS = 30
# A commit that leaves SQLite's write-ahead log longer than this checkpoints (SQLite's own
# automatic checkpoint comes at 1,000 pages, 4 MiB at the default page size); a checkpoint
# that has caught up lets the log be cut back to ``WAL_KEPT_BYTES``.
CHECKPOINT_BYTES = 4 * 1024 * 1024
WAL_KEPT_BYTES = 1024 * 1024


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    wal = str(cursor.fetchone()[0]).lower() == "wal"
    driver = getattr(dbapi_connection, "_connection", None)
    if isinstance(driver, ReadsInline):
        # Only a WAL database lets readers ignore writers (not, e.g., an in-memory one).
        driver.reads_inline = wal
        if wal:
            # Commits run on the loop: the checkpoints they would run go to the thread.
            cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.execute(f"PRAGMA journal_size_limit={WAL_KEPT_BYTES}")
            cursor.execute("PRAGMA database_list")
            main = next((row[2] for row in cursor.fetchall() if row[1] == "main"), "")
            driver.wal_path = f"{main}-wal" if main else None
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
    cursor.close()


_READ_PREFIX = "SELECT"
_ROW_CALLS = frozenset({"fetchall", "fetchone", "fetchmany", "close"})


class ReadsInline(aiosqlite.Connection):
    """An aiosqlite connection that runs on the calling (event loop) thread whatever cannot
    wait for SQLite's write lock, and only what may wait on its own thread.

    aiosqlite hands every call (cursor, execute, each fetch, close, commit) to the
    connection's thread and back: a dozen thread switches per API request, which profiled as
    the largest single cost of the embedded API. A ``SELECT`` on a WAL database never waits
    for a writer (readers see the last committed snapshot), so it takes microseconds and is
    cheaper done in place. The statement that opens a write transaction may have to wait
    for another connection's transaction: it runs in place only when it cannot (the gate is
    free and SQLite grants the lock at once, see ``_open_in_place``), and otherwise waits on
    the thread, so the event loop never blocks on a lock. Once that first write has taken
    the lock, the transaction's further statements cannot wait for anyone and run in place,
    and so does the commit: in WAL mode at ``synchronous=NORMAL`` it appends to the log
    without syncing and waits for no lock. What may take long at a commit is the checkpoint
    that copies the log into the database and syncs it; SQLite's automatic one is off for
    these connections, and a commit that leaves the log past ``CHECKPOINT_BYTES`` runs one
    on the thread instead, after the gate is given back. (On the thread, a commit held the
    gate across two thread switches, each waiting for the interpreter while the loop ran
    other tasks: a backup's writers spent more time queued on the gate than writing.) The
    connection is never used by both threads at once: the loop awaits each call, inline or
    not, before the next.

    Writers within one process queue on the database's write gate (``write_gate``) rather
    than in SQLite's busy handler, and hold it for their whole transaction."""

    # Set once the connection is known to be in WAL mode (see _sqlite_pragmas).
    reads_inline = False
    # The process's write gate for this database (None: no gate, see write_gate); whether
    # this connection's open transaction holds it, and whether a write of that transaction
    # has succeeded (so it holds SQLite's write lock too).
    gate: threading.Lock | None = None
    holds_gate = False
    wrote = False
    # The write-ahead log's file, whose size says when a commit should checkpoint (None:
    # SQLite checkpoints by itself, as for any connection not in WAL mode).
    wal_path: str | None = None

    def reading_in_place(self) -> sqlite3.Connection | None:
        """The sqlite3 connection, when a read may run on it from the loop's thread now: the
        database reads inline (WAL) and this connection holds no write transaction (whose
        statements go through the gate)."""
        if not self.reads_inline or self.wrote or self.holds_gate:
            return None
        return self._connection

    def _inline(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> bool:
        if not self.reads_inline:
            return False
        owner = getattr(fn, "__self__", None)
        name = getattr(fn, "__name__", "")
        if isinstance(owner, sqlite3.Cursor):
            if name in _ROW_CALLS:
                return True
            if name == "execute" and bool(args) and _is_read(args[0]):  # the SQL text
                return True
            return self.wrote and name in ("execute", "executemany")
        if isinstance(owner, sqlite3.Connection):
            return name in ("cursor", "commit", "rollback")
        return False

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._running and self._connection is not None:
            if self._inline(fn, args):
                if not (self.wrote or self.holds_gate):
                    return fn(*args, **kwargs)
                result = self._gated(fn, args, kwargs)
                if getattr(fn, "__name__", "") == "commit" and self._log_is_long():
                    await super()._execute(self._checkpoint)
                return result
            opened = self._open_in_place(fn, args, kwargs)
            if opened is not _WAIT:
                return opened
        if self.gate is None:
            return await super()._execute(fn, *args, **kwargs)
        return await super()._execute(self._gated, fn, args, kwargs)

    def _open_in_place(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Open a write transaction on the loop's thread when nothing stands in the way: the
        gate is free and SQLite's lock is taken at once (the busy handler is off for this one
        statement). Otherwise ``_WAIT``, with nothing changed: the statement then waits on the
        connection's thread. In place, the transaction holds the lock from its first write
        without waiting for the loop to come back to it."""
        if not (self.reads_inline and self.gate is not None and not self.holds_gate):
            return _WAIT
        if not _may_write(fn, args) or not self.gate.acquire(blocking=False):
            return _WAIT
        connection = self._connection
        assert connection is not None
        try:
            connection.execute("PRAGMA busy_timeout=0")
            try:
                result = fn(*args, **kwargs)
            finally:
                connection.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY:
                self._end_if_closed(release=True)
                raise
            # Another process holds the lock: undo the sqlite3 module's implicit BEGIN (the
            # transaction has nothing in it) and wait on the thread like any other writer.
            connection.rollback()
            self.gate.release()
            return _WAIT
        except BaseException:
            self._end_if_closed(release=True)
            raise
        self.holds_gate = True
        self.wrote = _takes_write_lock(args) and _in_transaction(connection)
        self._end_if_closed(release=False)
        return result

    def _log_is_long(self) -> bool:
        if self.wal_path is None:
            return False
        try:
            return os.stat(self.wal_path).st_size > CHECKPOINT_BYTES
        except FileNotFoundError:
            return False

    def _checkpoint(self) -> None:
        """Copy the log into the database as far as no reader still needs it, without
        waiting for anyone (another connection's checkpoint, or one a reader stops, leaves
        the rest for the next commit). The commit before it is durable whatever happens
        here, so a failure is logged, not raised: its caller would take it for the
        commit's, and the next commit past the bound tries again."""
        assert self._connection is not None
        try:
            self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY:
                log.warning("sqlite_checkpoint_failed", error=str(exc)[:200])

    def _end_if_closed(self, *, release: bool) -> None:
        """After a statement that held the gate: give it back unless a transaction is open
        (``release``: the gate was taken for that statement alone)."""
        if _in_transaction(self._connection):
            if release:
                self.holds_gate = True
            return
        self.wrote = False
        if self.holds_gate or release:
            self.holds_gate = False
            assert self.gate is not None
            self.gate.release()

    def _gated(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run ``fn`` holding the process's write gate from the statement that opens a write
        transaction until the transaction ends (commit, rollback, close, or the opening
        statement failing)."""
        writes = _may_write(fn, args)
        if self.gate is not None and not self.holds_gate and writes:
            if not self.gate.acquire(timeout=SQLITE_BUSY_TIMEOUT_SECONDS):
                raise sqlite3.OperationalError("database is locked")
            self.holds_gate = True
        try:
            result = fn(*args, **kwargs)
            if _takes_write_lock(args) and _in_transaction(self._connection):
                self.wrote = True
            return result
        finally:
            self._end_if_closed(release=False)


_WAIT = object()  # _open_in_place: the statement must wait on the connection's thread


def _is_read(sql: object) -> bool:
    return isinstance(sql, str) and sql.lstrip()[:6].upper() == _READ_PREFIX


def _may_write(fn: Callable[..., Any], args: tuple[Any, ...]) -> bool:
    """A statement that may open a write transaction (anything executed but a SELECT)."""
    owner = getattr(fn, "__self__", None)
    name = getattr(fn, "__name__", "")
    return (
        isinstance(owner, sqlite3.Cursor | sqlite3.Connection)
        and name in ("execute", "executemany", "executescript")
        and not _is_read(args[0] if args else None)
    )


# Statements that take SQLite's write lock when they run, whether or not they change a row
# (a SAVEPOINT or a deferred BEGIN opens a transaction without it).
_LOCKING_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _takes_write_lock(args: tuple[Any, ...]) -> bool:
    sql = args[0] if args else None
    return isinstance(sql, str) and sql.lstrip()[:7].upper().startswith(_LOCKING_WRITES)


def _in_transaction(connection: sqlite3.Connection | None) -> bool:
    try:
        return connection is not None and connection.in_transaction
    except sqlite3.ProgrammingError:  # closed
        return False


# SQLite lets one connection write at a time; the others wait in its busy handler, which
# polls by sleeping 1, 2, 5, 10, 15, 20, 25 ... ms whatever the lock's holder is doing. With
# a worker's eight backup tasks each committing small transactions on their own connections,
# an strace of one incremental showed 378 of those sleeps, 1-25 ms each. Within a process,
# writers queue on a lock instead and take the database's write lock the moment the previous
# transaction ends; the busy handler remains for writers in other processes (the API and the
# worker of ``safekeep serve``).
_WRITE_GATES: dict[str, threading.Lock] = {}
_WRITE_GATES_LOCK = threading.Lock()
# A forked child starts without connections: it must not inherit a gate some thread of the
# parent held at the fork (``safekeep serve`` spawns its worker, but a host process may fork).
os.register_at_fork(after_in_child=_WRITE_GATES.clear)


def write_gate(database: str) -> threading.Lock | None:
    """The process's write gate for a database file (None for a private in-memory one)."""
    if database in ("", ":memory:") or "mode=memory" in database:
        return None
    key = database if database.startswith("file:") else os.path.realpath(database)
    with _WRITE_GATES_LOCK:
        return _WRITE_GATES.setdefault(key, threading.Lock())


def _connect_reads_inline(database: str, **kwargs: Any) -> ReadsInline:
    """What ``aiosqlite.connect`` does, with ``ReadsInline``. The sqlite3 connection is made
    usable from the loop's thread as well as its own (one at a time, see above)."""
    kwargs["check_same_thread"] = False
    iter_chunk_size = kwargs.pop("iter_chunk_size", 64)
    connection = ReadsInline(lambda: sqlite3.connect(database, **kwargs), iter_chunk_size)
    connection._thread.daemon = True
    connection.gate = write_gate(database)
    return connection


_JSON_DECODE = json.JSONDecoder().decode


def load_json(data: str | bytes) -> Any:
    """A JSON value as SQLite or PostgreSQL returns it (text; UTF-8 bytes), read by the standard
    library's decoder without ``json.loads``'s encoding detection and wrapper: a third of the
    time for the small values of a row (a page of 50 accounts reads 50 of them). Not orjson:
    it reads an integer beyond 64 bits, which JSONB keeps, as a float."""
    return _JSON_DECODE(data.decode() if isinstance(data, bytes) else data)


# ---- text PostgreSQL cannot hold ------------------------------------------------------------
#
# PostgreSQL's text and jsonb hold UTF-8 without U+0000, and text from Microsoft may be neither
# (safekeep.text). Whatever a process writes to PostgreSQL is made storable on the way; the
# catalog also stores an item's name that way on SQLite, so the two compare alike. The API
# refuses U+0000 in what clients send (safekeep.api.schemas.RequestSchema, safekeep.api.limits).

# JSON's escape of U+0000 (preceded by an even run of backslashes, so not an escaped backslash
# followed by "u0000").
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def dump_json(value: Any) -> str:
    """JSON for a PostgreSQL jsonb column, its strings as ``storable_text`` makes them (jsonb
    refuses the escape ``\\u0000`` and lone surrogates). Written without ASCII escapes, so that
    a character outside the basic plane is one character, never a pair of escapes, and any
    surrogate left in the text is a lone one."""
    text = json.dumps(value, ensure_ascii=False)
    if "\\u0000" in text:
        text = _JSON_NUL.sub(r"\1\\ufffd", text)
    return storable_text(text)


class _StorableText(StrDumperUnknown):
    """psycopg's dumper of ``str`` parameters (sent untyped, so the server infers each one's
    type as before); a string psycopg refuses (U+0000, a lone surrogate) is sent as
    ``storable_text`` makes it."""

    def dump(self, obj: str) -> Buffer | None:
        try:
            return super().dump(obj)
        except (psycopg.DataError, UnicodeEncodeError):
            return super().dump(storable_text(obj))


def _pg_connection(dbapi_connection: Any, _record: Any) -> None:
    """Each new PostgreSQL connection writes text storable (``_StorableText``) and reads
    instants in UTC: psycopg then makes them with ``timezone.utc``, which every reader here
    takes as it is, where a server's own zone (``Etc/UTC`` on Debian's packages) made each
    timestamp of a row one more conversion on reading. Committed at once, so that the pool's
    rollback on a connection's return cannot undo it."""
    dbapi_connection.driver_connection.adapters.register_dumper(str, _StorableText)
    cursor = dbapi_connection.cursor()
    cursor.execute("SET TIME ZONE 'UTC'")
    cursor.close()
    if not dbapi_connection.autocommit:
        dbapi_connection.commit()


# Connections a process's engine (the API's, a worker's, the scheduler's) opens at most: each
# opened when load first needs it, then kept (see create_engine).
MAX_CONNECTIONS = 20
# SQLite's engine keeps SQLAlchemy's default pool, named here so that its ceiling is known.
SQLITE_POOL_SIZE = 5
SQLITE_POOL_OVERFLOW = 10

# When every connection of a pool is checked out, the next session to need one waits for one
# to come back (up to CHECKOUT_TIMEOUT_SECONDS), however little it has to do: under load, a
# slow event loop holds each connection longer and requests queue for the pool (seen in the
# API's benchmark as every route late at once). Counted at the checkout that takes the last
# free connection, so that a burst shows in a counter whatever the scrape interval.
POOL_FULL = Counter(
    "safekeep_db_pool_full_total",
    "Database connections handed out that left none free in the process's pool (the next "
    "session to need one waits for one to come back)",
)


def create_engine(url: str, *, max_connections: int = MAX_CONNECTIONS) -> AsyncEngine:
    url = to_async_url(url)
    if is_sqlite(url):
        engine = create_async_engine(
            url,
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=SQLITE_POOL_OVERFLOW,
            connect_args={
                "timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
                "async_creator_fn": _connect_reads_inline,
            },
            json_deserializer=load_json,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # Healing after a database restart: a pooled connection that sat idle is pinged before it
    # is handed out (see _ping_if_idle) and replaced if the server dropped it, and SQLAlchemy
    # invalidates the whole pool on the first disconnect it sees, so only the statement that
    # was in flight fails (as a transient error, see safekeep.transient). Connecting fails
    # fast while the server is down, and keepalives notice a peer that vanished without
    # closing its sockets.
    #
    # No overflow: SQLAlchemy closes an overflow connection as soon as it comes back while the
    # pool is full, so every burst past the pool's size opened connections that were closed a
    # moment later (the API bench's read mix at 200/s opened about 130 PostgreSQL sessions in
    # 30 s, each a server process forked, authenticated and its prepared statements lost).
    # The same ceiling as a pool: connections are opened as they are needed, then kept.
    engine = create_async_engine(
        url,
        isolation_level="AUTOCOMMIT",  # transactions are begun by _begin_transaction
        pool_size=max_connections,
        max_overflow=0,
        pool_timeout=CHECKOUT_TIMEOUT_SECONDS,
        json_deserializer=load_json,
        json_serializer=dump_json,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
    )
    sync_engine = engine.sync_engine
    event.listen(sync_engine, "connect", _pg_connection)
    event.listen(sync_engine, "checkin", _note_checkin)
    event.listen(sync_engine, "checkout", partial(_ping_if_idle, sync_engine.dialect))
    event.listen(sync_engine, "before_cursor_execute", _begin_transaction)
    return engine


def _count_full_checkouts(engine: AsyncEngine, limit: int) -> None:
    sync_engine = engine.sync_engine

    def checked_out(*_: Any) -> None:
        # The engine's pool is looked up each time: ``dispose`` replaces it.
        if sync_engine.pool.checkedout() >= limit:  # type: ignore[attr-defined]
            POOL_FULL.inc()

    event.listen(sync_engine, "checkout", checked_out)


# A connection used this recently is not pinged again at checkout. Under load connections go
# back and forth every few milliseconds, and a ping per checkout was one extra round trip per
# request (SQLAlchemy's pool_pre_ping); a connection idle for longer is pinged as before.
PING_AFTER_IDLE_SECONDS = 1.0


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    if record is not None:
        record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(dialect: Any, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    idle_since = record.info.get("checked_in_at")
    if idle_since is not None and time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
        return
    try:
        alive = dialect.do_ping(dbapi_connection)
    except Exception as exc:
        if dialect.is_disconnect(exc, dbapi_connection, None):
            raise exc_module.DisconnectionError() from exc
        raise
    if not alive:
        raise exc_module.DisconnectionError()


# Every PostgreSQL connection is in autocommit at the driver, and the transactions SQLAlchemy
# thinks it runs are begun here, before the statement that needs one: in an ordinary session,
# its first statement (what psycopg itself would do outside autocommit); in one opened with
# ``begin_on_write`` (the API's GET requests), its first statement that writes or locks rows,
# so a poll's SELECTs run without BEGIN and COMMIT round trips. Everything from the BEGIN on
# commits or rolls back together (psycopg sends COMMIT or ROLLBACK whenever a transaction is
# open, autocommit or not). At READ COMMITTED (the default) each statement sees the latest
# committed data either way; only row locks and transaction-time functions differ, and
# locking reads are treated as writes. The mode is set once, when a connection is made:
# switching a pooled connection to autocommit for a GET and back when it returned cost more
# CPU than the GET's statement (two driver calls and SQLAlchemy's bookkeeping per checkout).
BEGIN_ON_WRITE = "safekeep_begin_on_write"
_LOCKING = re.compile(r"\bFOR\s+(NO\s+KEY\s+UPDATE|UPDATE|SHARE|KEY\s+SHARE)\b", re.IGNORECASE)


@lru_cache(maxsize=2048)
def _plain_read(statement: str) -> bool:
    """A SELECT that locks no rows. Remembered by text: hot statements are built once, and
    scanning a long one for ``FOR UPDATE`` cost a few percent of a poll's CPU."""
    return _is_read(statement) and not _LOCKING.search(statement)


def _needs_begin(conn: Any, statement: str) -> bool:
    """Whether ``statement`` must be preceded by ``BEGIN`` on this (SQLAlchemy, PostgreSQL)
    connection: no transaction is open, and it is not a plain read of a ``begin_on_write``
    session."""
    if conn.get_execution_options().get(BEGIN_ON_WRITE) and _plain_read(statement):
        return False
    driver = conn.connection.dbapi_connection.driver_connection
    return bool(driver.info.transaction_status == TransactionStatus.IDLE)


def _begin_transaction(
    conn: Any, _cursor: Any, statement: str, _parameters: Any, _context: Any, _many: bool
) -> None:
    if _needs_begin(conn, statement):
        dbapi_connection = conn.connection.dbapi_connection
        # A cursor of its own: the statement's may be a named (server-side) one.
        begin = dbapi_connection.cursor()
        try:
            begin.execute("BEGIN")
        finally:
            begin.close()


class Database:
    """An engine and its session factory; one per event loop (API, worker loop, CLI)."""

    def __init__(self, url: str, *, max_connections: int = MAX_CONNECTIONS) -> None:
        self.url = to_async_url(url)
        self.engine = create_engine(self.url, max_connections=max_connections)
        # The most connections the engine's pool holds at once (see create_engine).
        self.connection_limit = (
            SQLITE_POOL_SIZE + SQLITE_POOL_OVERFLOW if self.is_sqlite else max_connections
        )
        _count_full_checkouts(self.engine, self.connection_limit)
        _OPEN.add(self)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        # SQLite already begins a transaction only at the first write (the sqlite3 module's
        # default), and on PostgreSQL this engine does the same (see _begin_transaction).
        self.begin_on_write_sessionmaker = (
            self.sessionmaker
            if self.is_sqlite
            else async_sessionmaker(
                self.engine.execution_options(**{BEGIN_ON_WRITE: True}),
                expire_on_commit=False,
                autoflush=False,
            )
        )

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    @asynccontextmanager
    async def session(self, *, begin_on_write: bool = False) -> AsyncIterator[AsyncSession]:
        """A session that commits when the block ends cleanly and rolls back otherwise.

        ``begin_on_write``: reads before the first write run outside a transaction (see
        ``_begin_transaction``), for request paths that mostly read."""
        factory = self.begin_on_write_sessionmaker if begin_on_write else self.sessionmaker
        async with factory() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def dispose(self) -> None:
        _OPEN.discard(self)
        await self.engine.dispose()


_OPEN: weakref.WeakSet[Database] = weakref.WeakSet()


@dataclass(frozen=True, slots=True)
class PoolUse:
    in_use: int  # checked out by a session now
    idle: int  # open and waiting in the pool
    limit: int  # the most the pools may hold


def pool_use() -> PoolUse:
    """This process's database connections now, over every ``Database`` not disposed (what
    its ``/metrics`` reports: a process usually has one)."""
    in_use = idle = limit = 0
    for db in list(_OPEN):
        pool: Any = db.engine.pool
        in_use += pool.checkedout()
        idle += pool.checkedin()
        limit += db.connection_limit
    return PoolUse(in_use, idle, limit)


async def read_rows(
    session: AsyncSession, stmt: Executable, values: Mapping[str, Any]
) -> Sequence[Row[Any]]:
    """The rows of a select of plain columns, run on the session's connection (Core). Through
    ``session.execute`` the ORM's result machinery handles each row as if it could hold
    entities: for a page of 50 rows that cost more CPU than the query itself.

    ``stmt`` is built once per shape (the repositories' cached builders): it is compiled
    once and run on the driver's connection directly where it can be (see ``_DriverRead``),
    without SQLAlchemy's execution machinery around each call."""
    connection = await session.connection()
    sync = connection.sync_connection
    if sync is not None and isinstance(stmt, ClauseElement):
        read = _driver_read(stmt, sync.dialect)
        if read is not None:
            rows = await read.run(connection, sync, values)
            if rows is not None:
                return rows
    return (await connection.execute(stmt, dict(values))).all()


class _DriverRead:
    """A select of plain columns compiled once and run on the driver's connection: psycopg's,
    or SQLite's on the event loop's thread as ``ReadsInline`` runs a read.

    Through SQLAlchemy each execution looked the compiled form up by the statement's cache
    key, built an execution context and a result, and crossed into a greenlet and back: on
    PostgreSQL about 0.2 ms of CPU per statement, more than psycopg's own work on a one-row
    read (0.12-0.2 ms). What SQLAlchemy does that matters is done here once or kept: the SQL
    text and the type processors of parameters and columns are the compiled statement's; the
    rows are SQLAlchemy ``Row``s with the same keys and values; listeners of
    ``before_cursor_execute`` (statement counters, plan tests) see each statement and its
    parameters; a driver error arrives as SQLAlchemy's ``DBAPIError``, and a PostgreSQL
    connection found broken is invalidated as SQLAlchemy would. A statement runs here only
    when it needs nothing else of the connection (``run`` answers None otherwise, and
    SQLAlchemy runs it): on PostgreSQL no ``BEGIN`` first (a plain read of a
    ``begin_on_write`` session, or any statement once a transaction is open); on SQLite a
    plain read on a connection that reads in place and holds no write transaction."""

    def __init__(self, compiled: Any, sql: str, arrays: frozenset[str] = frozenset()) -> None:
        self.compiled = compiled
        self.sql = sql
        # Expanding parameters sent as one array each (PostgreSQL's ``= ANY``, see
        # ``_driver_read``): their processors apply to each element.
        self.arrays = arrays
        self.plain = _plain_read(self.sql)
        self.bind_processors: Mapping[str, Callable[[Any], Any]] = compiled._bind_processors
        self.order: tuple[str, ...] | None = (
            tuple(compiled.positiontup) if compiled.positional else None
        )
        columns = compiled._result_columns
        self.types = tuple(column.type for column in columns)
        self.make_row = result_tuple([column.keyname for column in columns])
        # The columns' result processors, worked out at the first execution from the
        # driver's type codes (as SQLAlchemy does): None for a column read as the driver
        # gives it.
        self.processors: tuple[Callable[[Any], Any] | None, ...] | None = None
        self.converted: tuple[tuple[int, Callable[[Any], Any]], ...] = ()

    def _params(self, values: Mapping[str, Any]) -> Any:
        params: dict[str, Any] = self.compiled.construct_params(dict(values))
        for name, process in self.bind_processors.items():
            if name in params:
                value = params[name]
                params[name] = (
                    [process(v) for v in value] if name in self.arrays else process(value)
                )
        for name in self.arrays:
            params[name] = list(params[name])
        return params if self.order is None else tuple(params[name] for name in self.order)

    async def run(
        self, connection: Any, sync: Any, values: Mapping[str, Any]
    ) -> list[Row[Any]] | None:
        driver = sync.connection.dbapi_connection.driver_connection
        if isinstance(driver, ReadsInline):
            in_place = driver.reading_in_place()
            if in_place is None or not self.plain:
                return None
            params = self._params(values)
            self._announce(sync, params)
            try:
                cursor = in_place.execute(self.sql, params)
                try:
                    data, description = cursor.fetchall(), self._description(cursor)
                finally:
                    cursor.close()
            except sqlite3.Error as exc:
                raise exc_module.DBAPIError.instance(self.sql, params, exc, sqlite3.Error) from exc
            return self._rows(sync.dialect, data, description)
        if _needs_begin(sync, self.sql):
            return None
        params = self._params(values)
        self._announce(sync, params)
        try:
            async with driver.cursor() as cursor:
                await cursor.execute(self.sql, params)
                data, description = await cursor.fetchall(), self._description(cursor)
        except psycopg.Error as exc:
            broken = driver.broken or driver.closed
            if broken:
                await connection.invalidate(exc)
            raise exc_module.DBAPIError.instance(
                self.sql, params, exc, psycopg.Error, connection_invalidated=bool(broken)
            ) from exc
        return self._rows(sync.dialect, data, description)

    def _announce(self, sync: Any, params: Any) -> None:
        listeners = sync.dispatch.before_cursor_execute
        if listeners:
            listeners(sync, None, self.sql, params, None, False)

    def _description(self, cursor: Any) -> Any:
        """The cursor's description while the columns' processors are still to be worked out
        from it (the first execution), else None: psycopg builds a ``Column`` object per
        column on every read of it, about 2.5% of a job poll's CPU."""
        return cursor.description if self.processors is None else None

    def _rows(self, dialect: Any, data: list[Any], description: Any) -> list[Row[Any]]:
        if self.processors is None:
            if len(description) != len(self.types):
                raise exc_module.InvalidRequestError(
                    f"{len(description)} columns came back for {len(self.types)} selected"
                )
            self.processors = tuple(
                type_._cached_result_processor(dialect, column[1])  # the driver's type code
                for type_, column in zip(self.types, description, strict=True)
            )
            self.converted = tuple((i, p) for i, p in enumerate(self.processors) if p)
        make_row, converted = self.make_row, self.converted
        if not converted:
            return [make_row(row) for row in data]
        rows = []
        for row in data:  # the row copied in C, then only the columns that have a processor
            values = list(row)
            for i, convert in converted:
                values[i] = convert(values[i])
            rows.append(make_row(values))
        return rows


@lru_cache(maxsize=512)
def _driver_read(stmt: ClauseElement, dialect: Any) -> _DriverRead | None:
    """``stmt`` compiled for the driver, or None when only SQLAlchemy can run it: parameters
    renamed for the driver or rendered into the SQL, no plain columns, or (on SQLite) an
    ``IN`` list expanded at execution. On PostgreSQL an expanding ``IN`` (a key's tenants, a
    page's job ids) is sent as one array: ``x IN (a, b)`` is ``x = ANY('{a,b}')`` and
    ``x NOT IN (a, b)`` is ``x <> ALL('{a,b}')``, NULLs and empty lists alike, so its text
    does not change with the list's length."""
    if dialect.name not in ("postgresql", "sqlite"):
        return None
    compiled: Any = stmt.compile(dialect=dialect)
    binds = list(compiled.binds.values())
    if (
        compiled.escaped_bind_names
        or any(b.literal_execute for b in binds)
        or not compiled._result_columns
        or compiled.has_out_parameters
    ):
        return None
    sql: str = compiled.string
    expanding = [b for b in binds if b.expanding]
    if expanding and (dialect.name != "postgresql" or any(b.type._isnull for b in expanding)):
        return None  # SQLite has no arrays; an untyped list has no array type to cast to
    for bind in expanding:
        # Cast to the column's type, as SQLAlchemy casts each element it renders.
        array = f"CAST(%({bind.key})s AS {dialect.type_compiler_instance.process(bind.type)}[])"
        placeholder = f"(__[POSTCOMPILE_{bind.key}])"
        sql = sql.replace(f" NOT IN {placeholder}", f" <> ALL({array})")
        sql = sql.replace(f" IN {placeholder}", f" = ANY({array})")
    if "__[POSTCOMPILE_" in sql:
        return None  # an expansion written some other way: SQLAlchemy renders it
    return _DriverRead(compiled, sql, frozenset(b.key for b in expanding))
