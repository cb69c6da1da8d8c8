"""Operations: the committed SDL, health and readiness, the structured access log."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from portico import db
from portico.app import create_app
from portico.settings import Settings
from services.shared.crypto import MissingSecretKey

ROOT = Path(__file__).resolve().parent.parent


def test_committed_schema_equals_export():
    exported = subprocess.run(
        [sys.executable, "-m", "portico", "export-schema"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert (ROOT / "schema.graphql").read_text() == exported, "run `make schema`"


async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_readyz_reports_pending_migrations(database, tmp_path):
    url = f"sqlite://{tmp_path / 'empty.sqlite3'}"
    settings = Settings(database_url=url, var_dir=tmp_path, _env_file=None)
    app = create_app(settings)
    try:
        await _check_readyz_during_migration(app, url)
    finally:
        await db.init_db(database.url)  # the lifespan replaced the suite's connection


async def _check_readyz_during_migration(app: Starlette, url: str) -> None:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as http,
    ):
        response = await http.get("/readyz")
        assert response.status_code == 503
        assert response.json()["status"] == "migrations pending"
        await db.migrate(url)
        await db.init_db(url)
        assert (await http.get("/readyz")).status_code == 200


async def test_one_access_log_line_per_request(acme, caplog):
    with caplog.at_level(logging.INFO, logger="portico.access"):
        await acme.api.data("query ListAccounts { accounts { totalCount } }")
    [record] = [r for r in caplog.records if r.name == "portico.access"]
    line = orjson.loads(record.getMessage())
    assert line["operation"] == "ListAccounts"
    assert (line["method"], line["path"], line["status"]) == ("POST", "/graphql", 200)
    assert line["duration_ms"] >= 0


def test_misconfiguration_stops_the_start(tmp_path):
    with pytest.raises(ValueError):
        create_app(Settings(smtp_url="ftp://nowhere", var_dir=tmp_path, _env_file=None))
    with pytest.raises(MissingSecretKey):
        create_app(Settings(env="production", var_dir=tmp_path, _env_file=None))
