"""The statements a test makes the runtime send (``Recorder``, ``statements``), and what the
database means to do with one: its plan, on SQLite and PostgreSQL alike, for tests that hold a
read to an index (a page, a tenant's sweep) rather than to a timing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event

from safekeep.runtime import Runtime


@dataclass(frozen=True)
class Plan:
    steps: list[str]  # one per table read: SQLite's detail; PostgreSQL's node, index and condition
    sorts: list[str]  # steps that sort rows instead of reading them in order

    def seeks_row_value(self) -> bool:
        """Whether an index is entered at a row value, ``(a, b) < (?, ?)`` (a page cursor)."""
        return any("id)<(" in s or "ROW(" in s for s in self.steps)

    def reads_of(self, table: str) -> list[str]:
        """The steps that read ``table`` (not those that only compare with its columns)."""
        reads = rf"^(SCAN|SEARCH) {table}\b|^[\w ]+ on {table}\b"
        return [s for s in self.steps if re.search(reads, s)]

    def reads_by_index(self, table: str, column: str) -> bool:
        """No read of ``table`` scans it (each enters an index at some column), and one enters
        at ``column``."""
        reads = self.reads_of(table)
        sqlite = rf"^SEARCH {table} USING (COVERING )?INDEX \w+ \((?P<column>\w+)=\?"
        postgres = rf"\bon {table}\b[^:]*: \(*(?P<column>\w+) = "
        entered = [re.search(sqlite, s) or re.search(postgres, s) for s in reads]
        return all(entered) and any(m is not None and m["column"] == column for m in entered)


async def plan_of(runtime: Runtime, sql: str, params: Any, *, generic: bool = False) -> Plan:
    """The plan of a statement as SQLAlchemy sent it (its text and driver parameters). On
    PostgreSQL sorting and sequential scans are priced out first, so that an empty table
    cannot make either look cheap: what remains is what no index can do. ``generic``: on
    PostgreSQL, the plan of the statement prepared, made without its values, as the server
    uses for a statement the driver has prepared (psycopg does after five runs on a
    connection); SQLite plans each run alike."""
    async with runtime.db.engine.connect() as conn:
        if runtime.db.engine.dialect.name == "sqlite":
            rows = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)).all()
            details = [str(row[-1]) for row in rows]
            return Plan(details, [d for d in details if "TEMP B-TREE" in d])
        await conn.exec_driver_sql("SET enable_sort = off")
        await conn.exec_driver_sql("SET enable_seqscan = off")
        if generic:
            names: list[str] = []

            def placeholder(match: re.Match[str]) -> str:
                if match[1] not in names:
                    names.append(match[1])
                return f"${names.index(match[1]) + 1}"

            prepared = re.sub(r"%\((\w+)\)s", placeholder, sql).replace("%%", "%")
            await conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            await conn.exec_driver_sql(f"PREPARE planned AS {prepared}")
            values = ", ".join(_literal(params[name]) for name in names)
            found = (
                await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) EXECUTE planned({values})")
            ).scalar()
            await conn.exec_driver_sql("DEALLOCATE planned")  # not undone by a rollback
        else:
            found = (await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", params)).scalar()
        await conn.rollback()
    steps: list[str] = []
    sorts: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if "Sort" in node["Node Type"]:
            sorts.append(f"{node['Node Type']} on {node.get('Sort Key')}")
        if "Relation Name" in node:
            cond = node.get("Index Cond") or node.get("Recheck Cond") or ""
            index = node.get("Index Name", "")
            steps.append(f"{node['Node Type']} on {node['Relation Name']} {index}: {cond}")
        for child in node.get("Plans", []):
            walk(child)

    walk((found if isinstance(found, list) else json.loads(str(found)))[0]["Plan"])
    return Plan(steps, sorts)


def _literal(value: Any) -> str:
    """A parameter as SQL text, for a prepared statement's EXECUTE (its type is the
    statement's, inferred when it was prepared)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):  # an array (``= ANY(...)`` of an expanding IN)
        quoted = ('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in value)
        return _literal("{" + ",".join(quoted) + "}")
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return "'" + text.replace("'", "''") + "'"


async def plans_of(runtime: Runtime, sql: str, params: Any) -> list[Plan]:
    """The plans a statement may run with: as sent, and on PostgreSQL also as prepared
    (``plan_of``'s ``generic``), so that a read held to an index holds in both."""
    plans = [await plan_of(runtime, sql, params)]
    if runtime.db.engine.dialect.name == "postgresql":
        plans.append(await plan_of(runtime, sql, params, generic=True))
    return plans


class Recorder:
    """The statements (text and parameters) a runtime's engine sends while inside ``with``,
    those whose text contains ``keep``."""

    def __init__(self, runtime: Runtime, *, keep: str = "") -> None:
        self.engine = runtime.db.engine.sync_engine
        self.keep = keep
        self.sent: list[tuple[str, Any]] = []
        self.texts: list[str] = []

    def _record(self, _c: object, _cur: object, sql: str, params: Any, *_rest: object) -> None:
        if self.keep in sql:
            self.sent.append((sql, params))
            self.texts.append(sql)

    def __enter__(self) -> list[tuple[str, Any]]:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self.sent

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)


@contextmanager
def statements(runtime: Runtime) -> Iterator[list[str]]:
    """The SQL text the runtime's engine sends while inside."""
    recorder = Recorder(runtime)
    with recorder:
        yield recorder.texts
