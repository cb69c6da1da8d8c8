"""Fixtures: a migrated database per backend (SQLite and PostgreSQL), the ASGI app over
httpx, and helpers to make firms and sign in through the API."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from tortoise import Tortoise

from compiled import executor as compiled_executor
from portico import db
from portico.app import create_app
from portico.settings import Settings
from tests.support.api import PASSWORD, Api, Firm, make_firm  # noqa: F401
from tests.support.databases import Database, create_postgres_database, drop_postgres_database
from tests.support.services import need_postgres

BACKEND = os.environ.get("PORTICO_TEST_DATABASE", "sqlite")


def pytest_report_header() -> str:
    return f"portico test database: {BACKEND}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The PostgreSQL run repeats only the tests that use the database."""
    if BACKEND == "sqlite":
        return
    keep = [item for item in items if "database" in getattr(item, "fixturenames", ())]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


@pytest.fixture(autouse=True)
def compiled_matches_stock() -> Iterator[None]:
    """Every query the compiled path answers during a test is answered again by the stock
    executor (compiled/executor.py's shadow check); any difference fails the test. So every
    query document of the suite, on the suite's own data and viewers, is a differential
    test of the compiled path. The rerun shares the request's loaders (already filled), so
    a batched field's per-object resolver is compared cold only by
    tests/test_compiled_execution.py; statements counted by count_sql are not rerun."""
    assert not compiled_executor.MISMATCHES, "a difference recorded outside any test"
    compiled_executor.SHADOW["on"] = True
    yield
    compiled_executor.SHADOW["on"] = False
    found = list(compiled_executor.MISMATCHES)
    compiled_executor.MISMATCHES.clear()
    assert not found, f"the compiled path answered differently: {found[:3]}"


@pytest.fixture(autouse=True)
def log_levels_restored() -> Iterator[None]:
    """A test leaves the root and Tortoise loggers' levels as it found them. One left at
    DEBUG made every later statement log its parameters (a mass mailing's, 1.2 GB a
    statement, kept by pytest's log capture) and the suite slow and huge."""
    names = ("", "tortoise", "tortoise.db_client")
    before = {name: logging.getLogger(name or None).level for name in names}
    yield
    after = {name: logging.getLogger(name or None).level for name in names}
    assert after == before, f"log levels changed by the test: {before} -> {after}"


@pytest.fixture(scope="session")
async def database() -> AsyncIterator[Database]:
    """A freshly migrated database of the run's backend (PORTICO_TEST_DATABASE).

    `make test` runs the suite on SQLite, then the database tests again on PostgreSQL.
    """
    if BACKEND == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite://{Path(folder) / 'test.sqlite3'}"
            await db.migrate(url)
            await db.init_db(url)
            yield Database("sqlite", url)
            await db.close_db()
        return
    need_postgres()
    name, url = await create_postgres_database()
    try:
        await db.migrate(url)
        await db.init_db(url)
        yield Database("postgres", url)
        await db.close_db()
    finally:
        await drop_postgres_database(name)


TABLES = [
    "recovery_code",
    "authenticator",
    "second_factor_challenge",
    "known_device",
    "webhook_delivery",
    "webhook_endpoint",
    "file_chunk",
    "stored_file",
    "client_mail_notice",
    "history_import",
    "document",
    "attachment",
    "outbound_email",
    "message_account",
    "message",
    "mailbox_folder",
    "mailbox",
    "audit_entry",
    "invitation",
    "portal_access",
    "account_email",
    "account_contact",
    "email_address",
    "contact",
    "account",
    "session",
    "password_link",
    "portal_user",
    "staff_member",
    "signin_throttle",
    "firm",
]


@pytest.fixture
async def clean_db(database: Database) -> Database:
    """The test database, emptied of rows (the schema stays)."""
    conn = Tortoise.get_connection("default")
    if database.backend == "postgres":
        quoted = ", ".join(f'"{t}"' for t in TABLES)
        await conn.execute_script(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")
    else:
        for table in TABLES:
            await conn.execute_script(f'DELETE FROM "{table}"')
    return database


@pytest.fixture
def settings(clean_db: Database, tmp_path: Path) -> Settings:
    return Settings(database_url=clean_db.url, var_dir=tmp_path / "var", _env_file=None)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, manage_db=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://portico.test") as http:
        yield http


@pytest.fixture
async def acme(client: httpx.AsyncClient) -> Firm:
    return await make_firm(client, "acme")


@pytest.fixture
async def globex(client: httpx.AsyncClient) -> Firm:
    return await make_firm(client, "globex")


@pytest.fixture
def anon(client: httpx.AsyncClient) -> Api:
    return Api(client)
