"""Tortoise ORM configuration and the migration runner used by the CLI, the app and tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tortoise import Tortoise
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.connection import get_connection
from tortoise.migrations.api import migrate as tortoise_migrate
from tortoise.migrations.executor import MigrationExecutor

MODEL_MODULES = [
    "models.firms",
    "models.crm",
    "models.outbox",
    "models.access",
    "models.documents",
    "models.files",
    "models.mail",
    "models.webhooks",
    "models.security",
]
APP_LABEL = "portico"


# PostgreSQL without the operator's own: a connection is opened within 5 s and a statement
# answers within 60 s, so a database host that stops answering (no reset, no refusal) fails
# requests with 503 instead of holding them until TCP gives up (asyncpg's `timeout` and
# `command_timeout`, set in the URL's query to change them).
POSTGRES_TIMEOUTS = {"timeout": "5", "command_timeout": "60"}


# Tortoise's engines, and Portico's in their place.
OWN_ENGINES = {
    "tortoise.backends.sqlite": "portico.db_clients.sqlite",
    "tortoise.backends.asyncpg": "portico.db_clients.asyncpg",
}


def with_timeouts(database_url: str) -> str:
    """`database_url`, a PostgreSQL one given POSTGRES_TIMEOUTS where it names none."""
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgres", "postgresql", "asyncpg"):
        return database_url
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    missing = {key: value for key, value in POSTGRES_TIMEOUTS.items() if key not in query}
    return urlunsplit(parts._replace(query=urlencode({**query, **missing})))


def connection_config(database_url: str) -> dict[str, Any]:
    """Tortoise's reading of the URL, on Portico's clients (portico/db_clients)."""
    config = expand_db_url(with_timeouts(database_url))
    config["engine"] = OWN_ENGINES.get(config["engine"], config["engine"])
    return config


def apps_config() -> dict[str, Any]:
    return {
        APP_LABEL: {
            "models": MODEL_MODULES,
            "migrations": "models.migrations",
            "default_connection": "default",
        }
    }


def tortoise_config(database_url: str) -> dict[str, Any]:
    return {
        "connections": {"default": connection_config(database_url)},
        "apps": apps_config(),
        "use_tz": True,
        "timezone": "UTC",
    }


def _default_url() -> str:
    from portico.settings import Settings

    return Settings().resolved_database_url


# Read by `tortoise makemigrations` through [tool.tortoise] in pyproject.toml.
TORTOISE_ORM = tortoise_config(os.environ.get("PORTICO_DATABASE_URL") or _default_url())


def ensure_sqlite_folder(database_url: str) -> None:
    if database_url.startswith("sqlite://") and ":memory:" not in database_url:
        Path(database_url.removeprefix("sqlite://")).parent.mkdir(parents=True, exist_ok=True)


async def init_db(database_url: str) -> None:
    ensure_sqlite_folder(database_url)
    # Tortoise keeps each table's INSERT/DELETE text by connection name, not by backend: a
    # process that was on SQLite under "default" (a test of an app on its own database)
    # would send SQLite's "?" to PostgreSQL afterwards.
    EXECUTOR_CACHE.clear()
    await Tortoise.init(config=tortoise_config(database_url), _enable_global_fallback=True)
    connection = get_connection("default")
    if connection.capabilities.dialect == "sqlite":
        # Opened now, not by the process's first statement: Tortoise opens it holding the
        # connection's lock outside any `try`, then sets its PRAGMAs one by one, so that
        # statement cancelled kept the lock, or a connection without foreign keys, for good.
        # (PostgreSQL's pool stays lazy: a database down at start is a 503, not a crash.)
        await connection.create_connection(with_db=True)


async def close_db() -> None:
    await Tortoise.close_connections()


async def migrate(database_url: str) -> None:
    """Apply every pending migration (the only way Portico creates or changes tables)."""
    ensure_sqlite_folder(database_url)
    try:
        await tortoise_migrate(config=tortoise_config(database_url))
    finally:
        await Tortoise.close_connections()


async def ping() -> None:
    """One round trip to the database (raises when it cannot be reached)."""
    await get_connection("default").execute_query("SELECT 1")


async def pending_migrations() -> list[str]:
    """Names of migrations not yet applied on the initialised connection."""
    executor = MigrationExecutor(get_connection("default"), apps_config())
    plan = await executor.plan(None)
    return [f"{step.migration.app_label}.{step.migration.name}" for step in plan]
