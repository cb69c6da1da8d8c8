"""A web app on another origin calls Portico from headless Chromium: CORS as a browser
enforces it, against a production-mode `portico serve` whose PORTICO_CORS_ORIGINS lists the
app's origin.

Two tiny HTTP servers serve the same page on two ports: one origin is listed, the other is
not. The page signs in and queries with `Authorization: Bearer` (the way a cross-site app
authenticates: the session cookie is SameSite=Lax, docs/clients.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext

from tests.support import browser, server
from tests.support.databases import Database, create_postgres_database, drop_postgres_database
from tests.support.server import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

chromium = browser.chromium
context = browser.context

FIRM, EMAIL, PASSWORD = "crossorigin", "owner@crossorigin.example", "cross-origin-secret-2026"

# The app: sign in, then ask who is signed in, both with fetch from this page's origin.
PAGE = """<!doctype html>
<title>An app on another origin</title>
<script>
async function graphql(api, query, variables, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(`${api}/graphql`, {
    method: "POST", headers, body: JSON.stringify({ query, variables }),
  });
  return response.json();
}
async function signInAndAsk(api, firm, email, password) {
  try {
    const signIn = await graphql(api,
      `mutation($f: String!, $e: String!, $p: String!) {
         staffSignIn(firm: $f, email: $e, password: $p) { token } }`,
      { f: firm, e: email, p: password });
    const token = signIn.data.staffSignIn.token;
    const viewer = await graphql(api, "{ viewer { ... on StaffMember { email } } }", {}, token);
    return { data: viewer.data };
  } catch (error) {
    return { failed: String(error) };
  }
}
</script>
"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@contextmanager
def app_origin() -> Iterator[str]:
    """The page, served on a free loopback port: its origin."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def portico(folder: Path, env: dict[str, str], *args: str) -> None:
    """Runs a `portico` operator command with these settings only."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PORTICO_")}
    subprocess.run(
        [*server.portico_command(), *args], env={**environ, **env}, cwd=folder, check=True
    )


@pytest.fixture(scope="module")
def origins() -> Iterator[tuple[str, str]]:
    """(listed, not listed): two origins serving the app's page."""
    with app_origin() as listed, app_origin() as unlisted:
        yield listed, unlisted


@pytest.fixture(scope="module")
async def production(
    chromium: str,
    database: Database,
    origins: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[LiveServer]:
    """A production `portico serve` (migrated, one firm) listing only the first origin."""
    folder = tmp_path_factory.mktemp("portico-production")
    name = None
    if database.backend == "postgres":
        name, url = await create_postgres_database()
    else:
        url = f"sqlite://{folder / 'portico.sqlite3'}"
    env = {
        "PORTICO_ENV": "production",
        "PORTICO_SECRET_KEY": secrets.token_hex(32),
        "PORTICO_DATABASE_URL": url,
        "PORTICO_CORS_ORIGINS": json.dumps([origins[0]]),
    }
    try:
        await asyncio.to_thread(portico, folder, env, "migrate")
        firm = ("--name", "Cross Origin", "--slug", FIRM, "--owner-email", EMAIL)
        await asyncio.to_thread(
            portico, folder, env, "create-firm", *firm, "--owner-password", PASSWORD
        )
        live = await asyncio.to_thread(server.start_server, folder, env)
        yield live
        live.stop()
    finally:
        if name is not None:
            await drop_postgres_database(name)


async def call_from(context: BrowserContext, origin: str, api: str) -> dict[str, Any]:
    page = await context.new_page()
    await page.goto(f"{origin}/")
    return await page.evaluate(
        "([api, f, e, p]) => signInAndAsk(api, f, e, p)", [api, FIRM, EMAIL, PASSWORD]
    )


async def test_a_listed_origin_signs_in_and_reads_with_a_bearer_token(
    production: LiveServer, origins: tuple[str, str], context: BrowserContext
) -> None:
    result = await call_from(context, origins[0], production.url)
    assert result == {"data": {"viewer": {"email": EMAIL}}}


async def test_the_browser_blocks_an_origin_not_listed(
    production: LiveServer, origins: tuple[str, str], context: BrowserContext
) -> None:
    result = await call_from(context, origins[1], production.url)
    assert result == {"failed": "TypeError: Failed to fetch"}
