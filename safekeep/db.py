"""Database engine and sessions, one code path for SQLite (embedded) and PostgreSQL.

The edge (a request, an actor) owns the unit of work: it opens a session from
``Database.session()``, services only ``flush()``, and the edge commits or rolls back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


_READ_PREFIX = "SELECT"
_ROW_CALLS = frozenset({"fetchall", "fetchone", "fetchmany", "close"})


class ReadsInline(aiosqlite.Connection):
    """An aiosqlite connection that runs reads on the calling (event loop) thread and only
    what may wait for SQLite's write lock on its own thread.

    aiosqlite hands every call (cursor, execute, each fetch, close, commit) to the
    connection's thread and back: a dozen thread switches per API request, which profiled as
    the largest single cost of the embedded API. A ``SELECT`` on a WAL database never waits
    for a writer (readers see the last committed snapshot), so it takes microseconds and is
    cheaper done in place. Statements that may wait up to ``busy_timeout`` for the worker
    process's write transaction (INSERT, UPDATE, DELETE, DDL, PRAGMA, a COMMIT that has
    writes to make durable) still go through the thread, so the event loop never blocks on
    a lock. The connection is never used by both threads at once: the loop awaits each
    call, inline or not, before the next."""

    def _inline(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> bool:
        owner = getattr(fn, "__self__", None)
        name = getattr(fn, "__name__", "")
        if isinstance(owner, sqlite3.Cursor):
            if name in _ROW_CALLS:
                return True
            return (
                name == "execute" and bool(args) and _is_read(args[0])  # the SQL text
            )
        if isinstance(owner, sqlite3.Connection):
            if name == "cursor":
                return True
            # Nothing written since the last commit: committing or rolling back is a no-op.
            return name in ("commit", "rollback") and not owner.in_transaction
        return False

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._running and self._connection is not None and self._inline(fn, args):
            return fn(*args, **kwargs)
        return await super()._execute(fn, *args, **kwargs)


def _is_read(sql: object) -> bool:
    return isinstance(sql, str) and sql.lstrip()[:6].upper() == _READ_PREFIX


def _connect_reads_inline(database: str, **kwargs: Any) -> ReadsInline:
    """What ``aiosqlite.connect`` does, with ``ReadsInline``. The sqlite3 connection is made
    usable from the loop's thread as well as its own (one at a time, see above)."""
    kwargs["check_same_thread"] = False
    iter_chunk_size = kwargs.pop("iter_chunk_size", 64)
    connection = ReadsInline(lambda: sqlite3.connect(database, **kwargs), iter_chunk_size)
    connection._thread.daemon = True
    return connection


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    url = to_async_url(url)
    if is_sqlite(url):
        engine = create_async_engine(
            url, connect_args={"timeout": 30, "async_creator_fn": _connect_reads_inline}
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # Healing after a database restart: pool_pre_ping replaces a pooled connection the server
    # dropped before it is handed out, and SQLAlchemy invalidates the whole pool on the first
    # disconnect it sees, so only the statement that was in flight fails (as a transient
    # error, see safekeep.transient). Connecting fails fast while the server is down, and
    # keepalives notice a peer that vanished without closing its sockets.
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=CHECKOUT_TIMEOUT_SECONDS,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
    )


class Database:
    """An engine and its session factory; one per event loop (API, worker loop, CLI)."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = to_async_url(url)
        self.engine = create_engine(self.url, pool_size=pool_size)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session that commits when the block ends cleanly and rolls back otherwise."""
        async with self.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def dispose(self) -> None:
        await self.engine.dispose()
