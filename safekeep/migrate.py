"""Run Alembic from code: `safekeep migrate`, `make run` and the tests build schemas this way;
and the index operations migrations use on tables that already hold data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic import command, op
from alembic.config import Config
from sqlalchemy import TextClause, text

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    if url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


# -- index builds that do not stop writers ---------------------------------------------------
#
# A plain CREATE INDEX on PostgreSQL holds a lock that blocks every insert and update of the
# table while it builds: on a deployment's item_version, minutes in which backups cannot write.
# The migrations that index existing tables build with CONCURRENTLY instead, which must run
# outside a transaction (alembic's autocommit block: what the migration did before it is
# committed first). A concurrent build that is interrupted leaves an INVALID index of that name
# behind; building again drops it first, so a migration can simply be run again. SQLite builds
# as before (its write lock is the whole database's anyway, and the embedded column is one
# machine's).


def create_index(name: str, table: str, columns: Sequence[str | TextClause], **kwargs: Any) -> None:
    """``op.create_index``, built without blocking writes on PostgreSQL; an index of this name
    already there and valid is kept (a rerun of an interrupted migration)."""
    if op.get_context().dialect.name != "postgresql":
        op.create_index(name, table, list(columns), **kwargs)
        return
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        valid = bind.execute(_INDEX_VALID, {"name": name}).scalar()
        if valid is False:  # left by an interrupted concurrent build
            op.drop_index(name, table_name=table, postgresql_concurrently=True)
        op.create_index(
            name,
            table,
            list(columns),
            postgresql_concurrently=True,
            if_not_exists=True,
            **kwargs,
        )


def drop_index(name: str, table: str) -> None:
    """``op.drop_index``, without blocking reads or writes on PostgreSQL meanwhile."""
    if op.get_context().dialect.name != "postgresql":
        op.drop_index(name, table_name=table)
        return
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)


_INDEX_VALID = text(
    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "WHERE c.relname = :name AND pg_catalog.pg_table_is_visible(c.oid)"
)
