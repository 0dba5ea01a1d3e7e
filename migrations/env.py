"""Alembic environment: one set of migrations for SQLite and PostgreSQL.

The URL comes from ``config.attributes["url"]`` (set by safekeep.migrate) or from settings.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from safekeep.db import is_sqlite, to_sync_url
from safekeep.settings import get_settings
from safekeep.tenants.models import Base
from safekeep.tenants.models.base import EnumText

config = context.config
url = config.attributes.get("url") or get_settings().resolved_database_url
sync_url = to_sync_url(url)


def run_migrations_offline() -> None:
    context.configure(
        url=sync_url,
        target_metadata=Base.metadata,
        literal_binds=True,
        render_as_batch=is_sqlite(sync_url),
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(sync_url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    """Enum columns are plain VARCHARs in the schema: no dialect-specific enum types."""
    if type_ == "type" and isinstance(obj, EnumText):
        return "sa.String(length=20)"
    return False


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=Base.metadata,
        render_as_batch=is_sqlite(sync_url),
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
