"""SQLite FTS5 search backend: the embedded default (one file, no server).

Layout (``{p}`` is the index prefix, so several logical indices can share one file):

- ``{p}_docs``: one row per (tenant, version) with the filter columns (integers for instants in
  microseconds, a normalised ``folder_key``), the title and the folder path. It holds no long
  text, so the rows that a full-text match must check against the filters are small and many
  fit a page: checking 100,000 matches reads a few MB, not the bodies;
- ``{p}_text``: the searched text columns, same ``id``;
- ``{p}_fts``: an FTS5 index over ``{p}_text`` as its external content (text stored once;
  ``snippet()`` reads it back), kept in step by triggers. The update trigger fires only when a
  text column really changes, so re-indexing an unchanged version costs no full-text work and
  ``close_versions`` none at all. Its ``scope`` column holds one token per tenant (a hash of
  the id): a search within a few tenants adds ``scope : (...)`` to the MATCH, so FTS5
  intersects posting lists instead of checking every match of a common word against the
  tenant filter. That is an optimisation only: isolation is the SQL filter in ``_scope()``.

No FTS5 prefix indexes (``prefix=``): they tripled the indexing cost, while a prefix query
(``rep*``) merges the few terms that share a prefix of three or more letters quickly anyway.

Tokenizer: ``unicode61 remove_diacritics 2``: splits on anything that is not a letter or a
digit, folds case and accents (é→e, ü→u; unlike OpenSearch's asciifolding, ß stays ß).
CJK: unicode61 keeps a run of ideographs as one token, so "日本語" inside "これは日本語です"
would never match. We therefore put a zero-width space around every Han and Hiragana
character, in documents and in queries, which makes each a token of its own, as OpenSearch's
standard tokenizer does: a CJK word is then found as a phrase of characters (substring match;
no dictionary segmentation in either backend). Katakana and Hangul runs stay whole tokens,
also as in OpenSearch. The marks are removed from titles and highlights on the way out.

Concurrency: sqlite3 is blocking, so every call runs in a thread: one writer thread owning the
only writing connection (WAL mode, so readers never wait for it) and a small pool of reader
threads, each with its own read-only connection. A whole operation (a batch of upserts, a
search with its count and highlights) is shipped to the thread as one function rather than
statement by statement, which is both faster and keeps each batch one transaction.
"""

# SQL here is built from fixed column names and a table prefix checked against
# [a-z][a-z0-9_]*; every value, and every piece of user text, is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from safekeep.search.documents import (
    DEFAULT_MAX_TEXT_CHARS,
    SearchDocument,
    bounded,
    folder_key,
    from_micros,
    to_micros,
)
from safekeep.search.errors import InvalidQuery, SearchUnavailable
from safekeep.search.query import (
    HIGHLIGHT_FIELDS,
    HIT_FIELDS,
    TOTAL_LIMIT,
    Plan,
    SearchHit,
    SearchPage,
    SearchQuery,
    plan,
    render_highlight,
)
from safekeep.search.syntax import Atom

T = TypeVar("T")

_TEXT_COLUMNS = HIGHLIGHT_FIELDS  # title, sender, recipients, people, location, body, ...
_FTS_COLUMNS = (*_TEXT_COLUMNS, "scope")
_SCOPED_TENANTS = 16  # up to this many tenants, narrow the MATCH itself by tenant
_WEIGHTS = {
    "title": 10.0,
    "sender": 4.0,
    "recipients": 2.0,
    "people": 2.0,
    "location": 2.0,
    "body": 1.0,
    "attachment_names": 4.0,
    "attachment_text": 1.0,
    "folder_path": 2.0,
}
_WHOLE_FIELD = frozenset({"title", "sender", "location", "folder_path"})  # highlight() them whole
_SNIPPET_TOKENS = 24
# Highlights for a page whose rowids lie within this span are read in one walk of the doclists.
_HIGHLIGHT_SPAN = 50_000
_BATCH = 500
_READERS = 4
# SQLite page cache per connection. Searches (the API's readers) gain from a large one. The
# worker's one writer appends segments and merges recent ones; the file's pages are in the
# operating system's cache anyway, and a 32 MB cache filled as the index outgrew it, a third of
# the worker's growth while it backed up a 20,000-message mailbox (issue 17's peak-RSS row).
_READER_CACHE_KIB = 32_000
_WRITER_CACHE_KIB = 4_000
_MARK_OPEN = "\ue000"
_MARK_CLOSE = "\ue001"
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

# Han (with extension A, compatibility and the supplementary planes) and Hiragana.
_CJK_RE = re.compile(
    "([\u3040-\u309f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f])"
)


def segment(text: str) -> str:
    """Make every Han/Hiragana character a token of its own (see the module docstring)."""
    return _CJK_RE.sub("\u200b\\1\u200b", text)


def _fts_atom(atom: Atom, column: str | None = None) -> str:
    """An atom as an FTS5 string: always quoted, quotes doubled, so no user input is syntax."""
    rendered = '"' + segment(atom.text).replace('"', '""') + '"'
    if atom.prefix:
        rendered += "*"
    return f"{column} : {rendered}" if column else rendered


def scope_token(tenant_id: str) -> str:
    """The ``scope`` column's token for a tenant: letters and digits only, so one token."""
    return "s" + hashlib.blake2b(tenant_id.encode(), digest_size=10).hexdigest()


def _match_expressions(p: Plan) -> tuple[str | None, str | None]:
    """(positive, negative) FTS5 expressions: text clauses (never matched against ``scope``)
    and the per-field filters; the positive one narrowed to the tenants when they are few."""
    clauses = [
        "(" + " OR ".join(_fts_atom(atom) for atom in clause.anyof) + ")" for clause in p.text.must
    ]
    positive = ["- scope : (" + " AND ".join(clauses) + ")"] if clauses else []
    if p.sender is not None:
        positive.append(_fts_atom(p.sender, "sender"))
    if p.recipient is not None:
        positive.append(_fts_atom(p.recipient, "recipients"))
    if positive and len(p.tenant_ids) <= _SCOPED_TENANTS:
        tokens = " OR ".join(f'"{scope_token(t)}"' for t in p.tenant_ids)
        positive.append(f"scope : ({tokens})")
    negatives = " OR ".join(_fts_atom(atom) for atom in p.text.must_not)
    negative = f"- scope : ({negatives})" if negatives else None
    return (" AND ".join(positive) or None), negative


class _Sql:
    """A WHERE clause under construction: fragments and their parameters, in order."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.params: list[Any] = []

    def add(self, fragment: str, *params: Any) -> None:
        self.parts.append(fragment)
        self.params.extend(params)

    @property
    def where(self) -> str:
        return " AND ".join(self.parts) if self.parts else "1"


class SqliteSearchBackend:
    """``SearchBackend`` on a SQLite file with FTS5."""

    def __init__(
        self,
        path: str | Path,
        *,
        index_prefix: str = "safekeep",
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
        readers: int = _READERS,
    ) -> None:
        prefix = index_prefix.replace("-", "_").lower()
        if not _PREFIX_RE.match(prefix):
            raise ValueError(f"index prefix {index_prefix!r} must be [a-z][a-z0-9_-]*")
        self.path = Path(path)
        self.max_text_chars = max_text_chars
        self._docs = f'"{prefix}_docs"'
        self._text = f'"{prefix}_text"'
        self._fts = f'"{prefix}_fts"'
        self._prefix = prefix
        self._readers = readers
        self._writer: ThreadPoolExecutor | None = None
        self._reader_pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    # -- threads and connections -------------------------------------------------------

    def _connect(self, readonly: bool) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA temp_store = MEMORY")
        if readonly:
            conn.execute(f"PRAGMA cache_size = -{_READER_CACHE_KIB}")
            conn.execute("PRAGMA query_only = 1")
        else:
            conn.execute(f"PRAGMA cache_size = -{_WRITER_CACHE_KIB}")
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)

    async def _run(
        self, pool: ThreadPoolExecutor | None, fn: Callable[[sqlite3.Connection], T]
    ) -> T:
        if pool is None:
            raise SearchUnavailable("the search backend is not open")

        def call() -> T:
            try:
                return fn(self._local.conn)
            except sqlite3.OperationalError as exc:
                if str(exc).startswith("fts5:"):
                    # Every user word is quoted before it reaches FTS5, so this is our bug;
                    # still, the caller gets a refusal of the query, not an outage.
                    raise InvalidQuery("the search text could not be interpreted") from exc
                raise SearchUnavailable(f"SQLite search store failed: {exc}") from exc
            except sqlite3.DatabaseError as exc:
                if type(exc) is not sqlite3.DatabaseError:  # integrity/programming: a bug
                    raise
                raise SearchUnavailable(f"SQLite search store is damaged: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(pool, call)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(self._writer, fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(self._reader_pool, fn)

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = ThreadPoolExecutor(
            1, thread_name_prefix="search-sqlite-w", initializer=self._connect, initargs=(False,)
        )
        await self._write(self._create_schema)
        self._reader_pool = ThreadPoolExecutor(
            self._readers,
            thread_name_prefix="search-sqlite-r",
            initializer=self._connect,
            initargs=(True,),
        )

    async def close(self) -> None:
        pools = [pool for pool in (self._writer, self._reader_pool) if pool is not None]
        self._writer = self._reader_pool = None
        for pool in pools:
            await asyncio.to_thread(pool.shutdown, wait=True)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    async def ping(self) -> None:
        def probe(conn: sqlite3.Connection) -> None:
            conn.execute(f"SELECT 1 FROM {self._docs} LIMIT 1").fetchall()

        try:
            await self._read(probe)
        except sqlite3.Error as exc:
            raise SearchUnavailable(f"SQLite search store failed: {exc}") from exc

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        cols = ", ".join(_FTS_COLUMNS)
        new = ", ".join(f"new.{c}" for c in _FTS_COLUMNS)
        old = ", ".join(f"old.{c}" for c in _FTS_COLUMNS)
        changed = " OR ".join(f"old.{c} IS NOT new.{c}" for c in _FTS_COLUMNS)
        p, docs, text, fts = self._prefix, self._docs, self._text, self._fts
        conn.executescript(
            f"""
            BEGIN;
            CREATE TABLE IF NOT EXISTS {docs} (
                id INTEGER PRIMARY KEY,
                doc_key TEXT NOT NULL UNIQUE,
                version_id TEXT NOT NULL,
                msp_id TEXT NOT NULL,
                tenant_id TEXT NOT NULL,
                account_id TEXT NOT NULL,
                service TEXT NOT NULL,
                item_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                folder_key TEXT NOT NULL,
                valid_from INTEGER NOT NULL,
                valid_to INTEGER,
                date INTEGER,
                sort_ts INTEGER NOT NULL,
                size INTEGER NOT NULL,
                has_attachments INTEGER NOT NULL,
                file_type TEXT,
                title TEXT NOT NULL,
                folder_path TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS "{p}_docs_tenant_time"
                ON {docs} (tenant_id, sort_ts, doc_key);
            CREATE INDEX IF NOT EXISTS "{p}_docs_tenant_account" ON {docs} (tenant_id, account_id);
            CREATE TABLE IF NOT EXISTS {text} (
                id INTEGER PRIMARY KEY,
                title TEXT, sender TEXT, recipients TEXT, people TEXT, location TEXT,
                body TEXT, attachment_names TEXT, attachment_text TEXT, folder_path TEXT,
                scope TEXT NOT NULL
            );
            CREATE VIRTUAL TABLE IF NOT EXISTS {fts} USING fts5(
                {cols}, content={text.replace('"', "'")}, content_rowid='id',
                tokenize='unicode61 remove_diacritics 2'
            );
            CREATE TRIGGER IF NOT EXISTS "{p}_text_ai" AFTER INSERT ON {text} BEGIN
                INSERT INTO {fts} (rowid, {cols}) VALUES (new.id, {new});
            END;
            CREATE TRIGGER IF NOT EXISTS "{p}_text_ad" AFTER DELETE ON {text} BEGIN
                INSERT INTO {fts} ({fts}, rowid, {cols}) VALUES ('delete', old.id, {old});
            END;
            CREATE TRIGGER IF NOT EXISTS "{p}_text_au" AFTER UPDATE ON {text}
            WHEN {changed} BEGIN
                INSERT INTO {fts} ({fts}, rowid, {cols}) VALUES ('delete', old.id, {old});
                INSERT INTO {fts} (rowid, {cols}) VALUES (new.id, {new});
            END;
            CREATE TRIGGER IF NOT EXISTS "{p}_docs_ad" AFTER DELETE ON {docs} BEGIN
                DELETE FROM {text} WHERE id = old.id;
            END;
            COMMIT;
            """
        )

    # -- writes ----------------------------------------------------------------------------

    _META_COLUMNS = (
        "doc_key",
        "version_id",
        "msp_id",
        "tenant_id",
        "account_id",
        "service",
        "item_id",
        "kind",
        "folder_key",
        "valid_from",
        "valid_to",
        "date",
        "sort_ts",
        "size",
        "has_attachments",
        "file_type",
        "title",
        "folder_path",
    )

    def _row(self, doc: SearchDocument) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        doc = bounded(doc, self.max_text_chars)
        meta = (
            f"{doc.tenant_id}/{doc.version_id}",
            doc.version_id,
            doc.msp_id,
            doc.tenant_id,
            doc.account_id,
            doc.service,
            doc.item_id,
            doc.kind,
            folder_key(doc.folder_path),
            to_micros(doc.valid_from),
            to_micros(doc.valid_to) if doc.valid_to else None,
            to_micros(doc.date) if doc.date else None,
            to_micros(doc.sort_time),
            doc.size,
            int(doc.has_attachments),
            doc.file_type,
            doc.title,
            doc.folder_path,
        )
        text = (
            segment(doc.title),
            segment(doc.sender or ""),
            segment("\n".join(doc.recipients)),
            segment("\n".join(doc.people)),
            segment(doc.location or ""),
            segment(doc.body),
            segment("\n".join(doc.attachment_names)),
            segment(doc.attachment_text),
            segment(doc.folder_path),
            scope_token(doc.tenant_id),
        )
        return meta, text

    async def index(self, docs: Sequence[SearchDocument]) -> None:
        for start in range(0, len(docs), _BATCH):
            rows = [self._row(doc) for doc in docs[start : start + _BATCH]]
            await self._write(lambda conn, rows=rows: self._upsert(conn, rows))  # type: ignore[misc]

    def _upsert(
        self, conn: sqlite3.Connection, rows: list[tuple[tuple[Any, ...], tuple[Any, ...]]]
    ) -> None:
        meta_names = self._META_COLUMNS
        meta_updates = ", ".join(f"{n} = excluded.{n}" for n in meta_names if n != "doc_key")
        meta_sql = (
            f"INSERT INTO {self._docs} ({', '.join(meta_names)}) "
            f"VALUES ({', '.join('?' for _ in meta_names)}) "
            f"ON CONFLICT (doc_key) DO UPDATE SET {meta_updates}"
        )
        text_updates = ", ".join(f"{n} = excluded.{n}" for n in _FTS_COLUMNS)
        text_sql = (
            f"INSERT INTO {self._text} (id, {', '.join(_FTS_COLUMNS)}) "
            f"VALUES (?, {', '.join('?' for _ in _FTS_COLUMNS)}) "
            f"ON CONFLICT (id) DO UPDATE SET {text_updates}"
        )
        with _transaction(conn):
            conn.executemany(meta_sql, [meta for meta, _ in rows])
            keys = json.dumps([meta[0] for meta, _ in rows])
            row_ids = dict(
                conn.execute(
                    f"SELECT doc_key, id FROM {self._docs} "
                    "WHERE doc_key IN (SELECT value FROM json_each(?))",
                    (keys,),
                ).fetchall()
            )
            conn.executemany(text_sql, [(row_ids[meta[0]], *text) for meta, text in rows])

    async def close_versions(
        self, tenant_id: str, version_ids: Sequence[str], valid_to: datetime
    ) -> None:
        await self._per_version(
            f"UPDATE {self._docs} SET valid_to = ?", tenant_id, version_ids, to_micros(valid_to)
        )

    async def delete_versions(self, tenant_id: str, version_ids: Sequence[str]) -> None:
        await self._per_version(f"DELETE FROM {self._docs}", tenant_id, version_ids)

    async def _per_version(
        self, statement: str, tenant_id: str, version_ids: Sequence[str], *params: Any
    ) -> None:
        """Run ``statement`` on the versions' rows, one bounded batch of keys per transaction."""
        sql = f"{statement} WHERE doc_key IN (SELECT value FROM json_each(?))"
        for keys in _key_batches(tenant_id, version_ids):

            def run(conn: sqlite3.Connection, keys: str = keys) -> None:
                with _transaction(conn):
                    conn.execute(sql, (*params, keys))

            await self._write(run)

    async def purge(self, *, tenant_id: str, account_id: str | None = None) -> None:
        """Delete in bounded transactions so that a large tenant does not hold the writer (and
        every backup's index writes) for minutes."""
        condition = "tenant_id = ?" + (" AND account_id = ?" if account_id is not None else "")
        params: tuple[str, ...] = (tenant_id,) if account_id is None else (tenant_id, account_id)

        def delete_some(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                cursor = conn.execute(
                    f"DELETE FROM {self._docs} WHERE id IN "
                    f"(SELECT id FROM {self._docs} WHERE {condition} LIMIT {_BATCH})",
                    params,
                )
                return cursor.rowcount

        while await self._write(delete_some) > 0:
            pass

    # -- search ------------------------------------------------------------------------------

    async def search(self, query: SearchQuery) -> SearchPage:
        p = plan(query)

        def read(conn: sqlite3.Connection) -> _Found:
            # One read transaction: the page, its count and its highlights see one snapshot.
            conn.execute("BEGIN")
            try:
                return self._read_page(conn, p)
            finally:
                conn.execute("COMMIT")

        return _page_of(p, await self._read(read))

    def _scope(self, p: Plan) -> _Sql:
        """The tenant filter, and every other filter: the single place a query is scoped."""
        sql = _Sql()
        sql.add("d.tenant_id IN (SELECT value FROM json_each(?))", json.dumps(p.tenant_ids))
        if p.account_ids:
            sql.add("d.account_id IN (SELECT value FROM json_each(?))", json.dumps(p.account_ids))
        if p.services:
            sql.add("d.service IN (SELECT value FROM json_each(?))", json.dumps(p.services))
        if p.folder_key:
            sql.add(
                "(d.folder_key = ? OR (d.folder_key >= ? AND d.folder_key < ?))",
                p.folder_key,
                p.folder_key + "/",
                p.folder_key + "0",  # "0" follows "/": the range is "every path below"
            )
        if p.date_from is not None:
            sql.add("d.date >= ?", p.date_from)
        if p.date_to is not None:
            sql.add("d.date <= ?", p.date_to)
        if p.size_min is not None:
            sql.add("d.size >= ?", p.size_min)
        if p.size_max is not None:
            sql.add("d.size <= ?", p.size_max)
        if p.has_attachments is not None:
            sql.add("d.has_attachments = ?", int(p.has_attachments))
        if p.file_types:
            sql.add("d.file_type IN (SELECT value FROM json_each(?))", json.dumps(p.file_types))
        if p.time.current_only:
            sql.add("d.valid_to IS NULL")
        elif p.time.at is not None:
            sql.add("d.valid_from <= ?", p.time.at)
            if not p.time.all_versions:
                sql.add("(d.valid_to IS NULL OR d.valid_to > ?)", p.time.at)
        return sql

    def _read_page(self, conn: sqlite3.Connection, p: Plan) -> _Found:
        """Two statements in one read transaction, each answering a single row: the page
        (the total, and the page's rows as one JSON array) and the page's highlights. The
        sqlite3 module lets go of the GIL for every step of a statement: a row at a time, a
        search and the API's event loop handed the GIL back and forth some eighty times, each
        time waiting for the other. Only the step that sorts the matches touches them all;
        the rows' columns and highlights are read for the page alone. The reader thread runs
        the statements and nothing else it can leave to the caller (``_page_of``): Python it
        runs competes for the GIL with the event loop's own SQLite reads."""
        positive, negative = _match_expressions(p)
        sql = self._scope(p)
        if positive is not None:
            match = positive if negative is None else f"({positive}) NOT ({negative})"
            source = f"{self._fts} JOIN {self._docs} AS d ON d.id = {self._fts}.rowid"
            sql.parts.insert(0, f"{self._fts} MATCH ?")
            sql.params.insert(0, match)
        else:
            source = f"{self._docs} AS d"
            match = None
            if negative is not None:
                sql.add(
                    f"d.id NOT IN (SELECT rowid FROM {self._fts} WHERE {self._fts} MATCH ?)",
                    negative,
                )
        statement, params = self._page(p, match, source, sql)
        count, page = conn.execute(statement, params).fetchone()
        rows = json.loads(page)
        # The row past the page (if any) is highlighted too: a few microseconds, no sort here.
        found = self._highlights(conn, match, [row[0] for row in rows]) if match else "[]"
        return _Found(count, rows, found, ranked=p.ranked and match is not None)

    def _page(self, p: Plan, match: str | None, source: str, sql: _Sql) -> tuple[str, list[Any]]:
        """One row: the number of matches, and a JSON array of the page's rows (id, doc_key,
        sort key, *``HIT_FIELDS``), one more than the page to tell whether another follows.
        FTS5's bm25() only runs in a query straight over the FTS table, so a ranked search
        scores its matches in a materialised step, joins the filters to that, and counts
        (all: the scoring read them anyway) and sorts what passes; a search by date counts to
        ``TOTAL_LIMIT`` + 1 and stops. A ranked key goes out as 17 significant digits (SQLite's
        JSON keeps 15, and a cursor needs the key exact)."""
        direction = "DESC" if p.order == "date_desc" else "ASC"
        hit_columns = ", ".join(f"d.{c}" for c in HIT_FIELDS)
        if p.ranked and match is not None:
            weights = ", ".join(str(_WEIGHTS.get(c, 0.0)) for c in _FTS_COLUMNS)
            # The MATCH is the CTE's; the rest of the filter applies to the joined rows.
            where = _Sql()
            where.parts, where.params = sql.parts[1:], sql.params[1:]
            head = (
                f"WITH m AS MATERIALIZED (SELECT rowid AS id, bm25({self._fts}, {weights}) AS s "
                f"FROM {self._fts} WHERE {self._fts} MATCH ?), "
                f"f AS (SELECT d.id, d.doc_key, m.s AS k "
                f"FROM m JOIN {self._docs} AS d ON d.id = m.id WHERE {where.where}) "
            )
            head_params: list[Any] = [match, *where.params]
            count, count_params = "SELECT count(*) FROM f", []
            candidates, key, shown_key = "f AS d", "d.k", "printf('%!.17g', page.k)"
            page_where = _Sql()
        else:
            head, head_params = "", []
            count = f"SELECT count(*) FROM (SELECT 1 FROM {source} WHERE {sql.where} LIMIT ?)"
            count_params = [*sql.params, TOTAL_LIMIT + 1]
            candidates, key, shown_key = source, "d.sort_ts", "page.k"
            page_where = _Sql()
            page_where.parts, page_where.params = list(sql.parts), list(sql.params)
        if p.after is not None:
            cmp = "<" if direction == "DESC" else ">"
            after_key, after_doc = p.after
            page_where.add(
                f"({key} {cmp} ? OR ({key} = ? AND d.doc_key > ?))", after_key, after_key, after_doc
            )
        statement = (
            f"{head}SELECT ({count}), (SELECT json_group_array(json_array(page.id, "
            f"page.doc_key, {shown_key}, {hit_columns})) "
            f"FROM (SELECT d.id AS id, d.doc_key AS doc_key, {key} AS k FROM {candidates} "
            f"WHERE {page_where.where} ORDER BY {key} {direction}, d.doc_key ASC LIMIT ?) AS page "
            f"JOIN {self._docs} AS d ON d.id = page.id)"
        )
        return statement, [*head_params, *count_params, *page_where.params, p.limit + 1]

    def _highlights(self, conn: sqlite3.Connection, match: str, ids: list[int]) -> str:
        """The highlights of these rows, ``[[rowid, fragment per text column], ...]`` as
        JSON: a second, small query over just the page's rows (snippet() in the page's query
        would run for every match before the sort, not only for the page)."""
        if not ids:
            return "[]"
        calls = []
        for i, column in enumerate(_TEXT_COLUMNS):
            if column in _WHOLE_FIELD:
                calls.append(f"highlight({self._fts}, {i}, ?, ?)")
            else:
                calls.append(f"snippet({self._fts}, {i}, ?, ?, '…', {_SNIPPET_TOKENS})")
        params: list[Any] = []
        for _ in _TEXT_COLUMNS:
            params += [_MARK_OPEN, _MARK_CLOSE]
        span: list[int] = []
        if max(ids) - min(ids) <= _HIGHLIGHT_SPAN:
            # FTS5 looks a MATCH up again for every rowid of an IN list (each term's place
            # in the index, a page read per segment); over a bounded span one walk of the
            # doclists is cheaper, and the unary + keeps the list a filter, not a lookup.
            where = "rowid BETWEEN ? AND ? AND +rowid"
            span = [min(ids), max(ids)]
        else:
            where = "rowid"
        # Auxiliary functions may not run inside an aggregate: the page's highlights are made
        # in a materialised step, then gathered into one row.
        named = ", ".join(f"{call} AS h{i}" for i, call in enumerate(calls))
        gathered = ", ".join(f"h{i}" for i in range(len(calls)))
        (found,) = conn.execute(
            f"WITH h AS MATERIALIZED (SELECT rowid AS id, {named} FROM {self._fts} "
            f"WHERE {self._fts} MATCH ? AND {where} IN (SELECT value FROM json_each(?))) "
            f"SELECT json_group_array(json_array(id, {gathered})) FROM h",
            [*params, match, *span, json.dumps(ids)],
        ).fetchone()
        return str(found)


@dataclass(frozen=True)
class _Found:
    """What a search read: the total, the page's rows (one past the page when another
    follows), and the highlights as SQLite gathered them."""

    count: int
    rows: list[list[Any]]
    highlights: str
    ranked: bool


def _page_of(p: Plan, found: _Found) -> SearchPage:
    """The page a search read, made into hits on the caller's thread."""
    rows = found.rows
    if found.ranked:
        for row in rows:
            row[2] = float(row[2])
    # json_group_array() keeps no promised order: the page's order, as the SQL sorted it.
    rows.sort(key=lambda row: row[1])
    rows.sort(key=lambda row: row[2], reverse=p.order == "date_desc")
    more = len(rows) > p.limit
    rows = rows[: p.limit]
    highlights: dict[int, dict[str, list[str]]] = {}
    for row in json.loads(found.highlights):
        marks: dict[str, list[str]] = {}
        for column, fragment in zip(_TEXT_COLUMNS, row[1:], strict=True):
            if fragment and _MARK_OPEN in fragment:
                marks[column] = [render_highlight(fragment, _MARK_OPEN, _MARK_CLOSE)]
        highlights[row[0]] = marks
    hits = []
    for doc_id, _, key, *stored in rows:
        fields = dict(zip(HIT_FIELDS, stored, strict=True))  # the order _page selected them in
        if fields["date"] is not None:
            fields["date"] = from_micros(fields["date"])
        score = -key if p.ranked else None
        hits.append(SearchHit(**fields, score=score, highlights=highlights.get(doc_id, {})))
    next_cursor = p.cursor_for(rows[-1][2], rows[-1][1]) if more and rows else None
    total = found.count if found.count <= TOTAL_LIMIT else None
    return SearchPage(hits=hits, next_cursor=next_cursor, total=total)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection: taking the
    write lock up front avoids SQLITE_BUSY upgrades half-way through a batch."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _key_batches(tenant_id: str, version_ids: Sequence[str]) -> Iterator[str]:
    """Document keys are (tenant, version): a caller's ids can only ever reach its tenant."""
    ids = list(dict.fromkeys(version_ids))
    for start in range(0, len(ids), _BATCH):
        yield json.dumps([f"{tenant_id}/{v}" for v in ids[start : start + _BATCH]])
