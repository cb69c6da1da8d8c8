"""End to end over real HTTP: `portico serve` as a process, the demo firm, and GraphiQL's page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from portico.graphiql import NODE_MODULES, graphiql_page, graphiql_routes
from tests.support import server
from tests.support.server import (
    DEMO_ACCOUNTS,
    DEMO_FIRM,
    DEMO_OWNER_EMAIL,
    DEMO_OWNER_NAME,
    DEMO_PASSWORD,
)

# conftest.py does not provide these: the module gets its own server.
live_server = server.live_server
live_server_process = server.live_server_process

pytestmark = pytest.mark.e2e

SIGN_IN = """
mutation SignIn($firm: String!, $email: String!, $password: String!) {
  staffSignIn(firm: $firm, email: $email, password: $password) {
    errors { code message }
    token
    viewer { ... on StaffMember { name } }
  }
}
"""
SIGN_IN_VARIABLES = {"firm": DEMO_FIRM, "email": DEMO_OWNER_EMAIL, "password": DEMO_PASSWORD}


def graphql(
    base: str, query: str, variables: dict[str, Any] | None = None, token: str | None = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(
        f"{base}/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_health_and_readiness(live_server: str) -> None:
    assert httpx.get(f"{live_server}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{live_server}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready"}


def test_sign_in_then_bearer_query(live_server: str) -> None:
    body = graphql(live_server, SIGN_IN, SIGN_IN_VARIABLES)
    payload = body["data"]["staffSignIn"]
    assert payload["errors"] == []
    assert payload["viewer"] == {"name": DEMO_OWNER_NAME}
    token = payload["token"]
    assert token

    body = graphql(live_server, "{ accounts { totalCount } }", token=token)
    assert body == {"data": {"accounts": {"totalCount": DEMO_ACCOUNTS}}}


def test_graphiql_page_names_no_outside_host(live_server: str) -> None:
    response = httpx.get(f"{live_server}/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "GraphiQL" in page
    assert "make install" not in page  # the scripts are installed (npm ci)
    assert "unpkg" not in page
    assert "https://" not in page
    assert "http://" not in page


def test_graphiql_assets_are_served(live_server: str) -> None:
    page = httpx.get(f"{live_server}/graphql", headers={"Accept": "text/html"}).text
    scripts = re.findall(r'<script src="([^"]+)"', page)
    styles = re.findall(r'<link rel="stylesheet" href="([^"]+)"', page)
    assert len(scripts) == 5 and len(styles) == 2, (scripts, styles)
    for url in scripts + styles:
        assert url.startswith("/static/graphiql/"), url
        response = httpx.get(f"{live_server}{url}")
        assert response.status_code == 200, url
        kind = "text/javascript" if url.endswith(".js") else "text/css"
        assert response.headers["content-type"].startswith(kind), url
        assert "immutable" in response.headers["cache-control"], url
        # Byte for byte the file npm installed (the ones strawberry's page pins by hash).
        package, file = re.fullmatch(r"/static/graphiql/(.+)@[^/]+/(.+)", url).groups()
        assert response.content == (NODE_MODULES / package / file).read_bytes(), url


def test_only_the_vendored_files_are_served(live_server: str) -> None:
    # Another version's URL, another file of the same package, and the package manifest.
    for path in (
        "/static/graphiql/graphiql@0.0.1/graphiql.min.js",
        "/static/graphiql/graphiql@3.8.3/graphiql.js",
        "/static/graphiql/graphiql@3.8.3/package.json",
        "/static/graphiql/graphiql@3.8.3/../../package.json",
    ):
        assert httpx.get(f"{live_server}{path}").status_code == 404, path


def test_query_link_opens_graphiql(live_server: str) -> None:
    # What a browser sends when someone follows a link like /graphql?query=...
    response = httpx.get(
        f"{live_server}/graphql",
        params={"query": "{ accounts { totalCount } }"},
        headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
    )
    assert response.headers["content-type"].startswith("text/html")


async def test_without_node_modules_the_page_says_run_make_install(tmp_path: Path) -> None:
    page = graphiql_page(tmp_path)
    assert "run make install" in page
    assert "<script" not in page
    app = Starlette(routes=graphiql_routes(tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://portico.test") as http:
        response = await http.get("/static/graphiql/graphiql@3.8.3/graphiql.min.js")
    assert response.status_code == 404
    assert "run make install" in response.text
