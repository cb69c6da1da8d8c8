"""The committed migrations build exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from tortoise import Tortoise
from tortoise.migrations.autodetector import MigrationAutodetector

from portico import db


async def test_models_have_no_unmigrated_changes(database):
    """What `tortoise makemigrations` would write is nothing: migrations cover the models."""
    config = db.tortoise_config(database.url)
    autodetector = MigrationAutodetector(Tortoise.apps, config["apps"])
    writers = await autodetector.changes()
    assert writers == [], [w.name for w in writers]


async def _table_columns(backend: str, table: str) -> set[str]:
    conn = Tortoise.get_connection("default")
    if backend == "sqlite":
        _, rows = await conn.execute_query(f'PRAGMA table_info("{table}")')
        return {row["name"] for row in rows}
    _, rows = await conn.execute_query(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1", [table]
    )
    return {row["column_name"] for row in rows}


async def test_migrated_database_matches_the_models(database):
    """The database that `migrate` built (on an empty database) has every model's columns."""
    for model in Tortoise.apps[db.APP_LABEL].values():
        meta = model._meta
        expected = {meta.fields_db_projection[name] for name in meta.db_fields}
        assert await _table_columns(database.backend, meta.db_table) == expected, meta.db_table
    assert await db.pending_migrations() == []
