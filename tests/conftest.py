"""Fixtures: a migrated database per backend (SQLite and PostgreSQL), the ASGI app over
httpx, and helpers to make firms and sign in through the API."""

from __future__ import annotations

import asyncio
import inspect
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from argon2 import PasswordHasher
from tortoise import Tortoise

from models import StaffMember, StaffRole
from portico import db
from portico.app import create_app
from portico.settings import Settings
from services import firms, sessions
from tests.services import POSTGRES_URL, need_postgres

PASSWORD = "correct-horse-battery"
_PASSWORD_HASH = PasswordHasher().hash(PASSWORD)


@dataclass
class Database:
    backend: str
    url: str


async def _create_postgres_database() -> tuple[str, str]:
    name = f"portico_test_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"


async def _drop_postgres_database(name: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


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
    name, url = await _create_postgres_database()
    try:
        await db.migrate(url)
        await db.init_db(url)
        yield Database("postgres", url)
        await db.close_db()
    finally:
        await _drop_postgres_database(name)


TABLES = [
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


class Api:
    """GraphQL over HTTP against the ASGI app, as one signed-in (or anonymous) client."""

    def __init__(self, http: httpx.AsyncClient, token: str | None = None) -> None:
        self.http = http
        self.token = token

    async def post(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers=headers,
        )
        # Each call stands alone: a cookie set by one response is not sent with the next.
        self.http.cookies.clear()
        assert response.status_code == 200, response.text
        return response.json()

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The result's data, asserting there were no top-level errors."""
        body = await self.post(query, variables)
        assert "errors" not in body, body["errors"]
        return body["data"]

    async def ok(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The single mutation payload, asserting its `errors` is empty."""
        data = await self.data(query, variables)
        [payload] = data.values()
        assert payload["errors"] == [], payload["errors"]
        return payload


@dataclass
class Firm:
    slug: str
    owner: StaffMember
    api: Api


async def make_firm(http: httpx.AsyncClient, slug: str) -> Firm:
    _, owner = await firms.create_firm(
        f"{slug.title()} LLP", slug, f"owner@{slug}.example", "Owner", PASSWORD
    )
    return Firm(slug, owner, await api_for(http, owner))


async def api_for(http: httpx.AsyncClient, staff: StaffMember) -> Api:
    """An Api signed in as `staff` (session made directly: sign-in has its own tests)."""
    token, _ = await sessions.start_staff_session(staff, timedelta(hours=1))
    return Api(http, token)


async def add_staff(
    firm: Firm, email: str, role: StaffRole = StaffRole.EMPLOYEE, **rights: bool
) -> StaffMember:
    return await StaffMember.create(
        firm_id=firm.owner.firm_id,
        email=email,
        email_normalized=email.lower(),
        name=email.split("@")[0].title(),
        role=role,
        password_hash=_PASSWORD_HASH,
        **rights,
    )


@pytest.fixture
async def acme(client: httpx.AsyncClient) -> Firm:
    return await make_firm(client, "acme")


@pytest.fixture
async def globex(client: httpx.AsyncClient) -> Firm:
    return await make_firm(client, "globex")


@pytest.fixture
def anon(client: httpx.AsyncClient) -> Api:
    return Api(client)


async def eventually(
    check: Callable[[], Any], what: str = "the condition holds", seconds: float = 10.0
) -> None:
    """Waits until `check()` (plain or async) is truthy; fails after `seconds`, naming `what`."""
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            while True:
                result = check()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        if not deadline.expired():
            raise  # from `check` itself
        pytest.fail(f"not within {seconds:g} s: {what}")
