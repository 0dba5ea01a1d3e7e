"""Migrations build the schema the models describe, on PostgreSQL and SQLite alike."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

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
