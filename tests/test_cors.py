"""Browser apps on other origins (issue 12, items 1 and 7): CORS preflights and answers for the
origins the operator allows (and, in development, any dev server on localhost), the same rule
for WebSocket handshakes, and Apollo's upload headers passing the CSRF guard."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import websockets

from portico.app import create_app
from portico.settings import Settings
from resolvers.context import SESSION_COOKIE
from tests.support.crm_ops import new_account
from tests.support.websocket import TRANSPORT_WS, serving

VITE = "http://localhost:5173"
APP = "https://app.example.com"
EVIL = "https://evil.example"
QUERY = {"query": "{ __typename }"}
CLIENT_HEADERS = (
    "content-type, authorization, apollo-require-preflight, x-apollo-operation-name, "
    "graphql-require-preflight, apollographql-client-name"
)


def production(settings: Settings, origins: list[str]) -> Settings:
    return settings.model_copy(
        update={"env": "production", "secret_key": "test-secret-key", "cors_origins": origins}
    )


@contextlib.asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(settings, manage_db=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://portico.test") as http:
        yield http


async def preflight(http: httpx.AsyncClient, origin: str) -> httpx.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": CLIENT_HEADERS,
    }
    return await http.options("/graphql", headers=headers)


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def allowed_to(response: httpx.Response, origin: str) -> bool:
    """The answer lets `origin`'s script read it, with credentials."""
    headers = response.headers
    return (
        headers.get("access-control-allow-origin") == origin
        and headers.get("access-control-allow-credentials") == "true"
    )


async def test_a_dev_server_on_localhost_passes_the_preflight(client):
    for origin in (VITE, "http://127.0.0.1:3000", "http://localhost"):
        response = await preflight(client, origin)
        assert response.status_code == 200, (origin, response.text)
        assert allowed_to(response, origin)
        methods = response.headers["access-control-allow-methods"].split(", ")
        assert {"GET", "POST"} <= set(methods)
        allowed = response.headers["access-control-allow-headers"].lower().split(", ")
        assert {h.strip() for h in CLIENT_HEADERS.split(",")} <= set(allowed)


async def test_answers_to_an_allowed_origin_are_readable_errors_included(client, settings):
    ok = await client.post("/graphql", json=QUERY, headers={"Origin": VITE})
    assert ok.json() == {"data": {"__typename": "Query"}}
    assert allowed_to(ok, VITE)
    get = await client.get("/graphql", params=QUERY, headers={"Origin": VITE})
    assert get.status_code == 200 and allowed_to(get, VITE)
    bad = await client.post(
        "/graphql", content=b"{", headers={"Origin": VITE, "Content-Type": "application/json"}
    )
    assert bad.status_code == 400 and allowed_to(bad, VITE)
    # BodyLimit answers 413 itself: CORS wraps it, or the browser could not read why.
    pad = "x" * (settings.max_body_bytes + 1)
    big = await client.post("/graphql", json={**QUERY, "pad": pad}, headers={"Origin": VITE})
    assert big.status_code == 413 and allowed_to(big, VITE)


async def test_an_origin_not_allowed_gets_no_cors_headers(client):
    # https, another host, a look-alike: only http://localhost:* and http://127.0.0.1:*.
    for origin in (EVIL, "https://localhost:5173", "http://localhost.evil.example:5173"):
        refused = await preflight(client, origin)
        assert refused.status_code == 400
        assert cors_headers(refused) == {}, origin
        answer = await client.post("/graphql", json=QUERY, headers={"Origin": origin})
        assert answer.status_code == 200 and cors_headers(answer) == {}, origin
        assert "Origin" in answer.headers["vary"]  # caches keep answers per origin


async def test_production_allows_only_the_listed_origins(settings):
    async with app_client(production(settings, [])) as http:
        assert cors_headers(await preflight(http, VITE)) == {}
        answer = await http.post("/graphql", json=QUERY, headers={"Origin": VITE})
        assert cors_headers(answer) == {}
    async with app_client(production(settings, [APP, "https://Admin.Example.com:443/"])) as http:
        for origin in (APP, "https://admin.example.com"):  # listed as browsers send them
            assert (await preflight(http, origin)).status_code == 200
            answer = await http.post("/graphql", json=QUERY, headers={"Origin": origin})
            assert allowed_to(answer, origin)
        for origin in (VITE, EVIL):
            assert cors_headers(await preflight(http, origin)) == {}


@pytest.mark.parametrize(
    "origins", [["*"], ["https://app.example.com/graphql"], ["app.example.com"]]
)
async def test_a_bad_origin_list_stops_the_start(settings, origins):
    with pytest.raises(ValueError, match="origin"):
        create_app(settings.model_copy(update={"cors_origins": origins}), manage_db=False)


async def handshake(url: str, origin: str) -> int:
    """The HTTP status of a WebSocket handshake from a page on `origin` (101: accepted)."""
    ws_url = url.replace("http://", "ws://") + "/graphql"
    headers = {"Origin": origin}
    try:
        async with websockets.connect(
            ws_url, subprotocols=[TRANSPORT_WS], additional_headers=headers
        ):
            return 101
    except websockets.InvalidStatus as refused:
        return refused.response.status_code


async def test_websockets_follow_the_same_origins(settings):
    async with serving(settings) as live:
        assert await handshake(live.url, VITE) == 101
        assert await handshake(live.url, "http://127.0.0.1:3000") == 101
        assert await handshake(live.url, EVIL) == 403
    async with serving(production(settings, [])) as live:
        assert await handshake(live.url, VITE) == 403
    async with serving(production(settings, [APP])) as live:
        assert await handshake(live.url, APP) == 101
        assert await handshake(live.url, VITE) == 403
        assert await handshake(live.url, EVIL) == 403


def upload_parts(account_id: str) -> dict:
    query = """mutation($a: ID!, $f: Upload!) { uploadDocument(accountId: $a, file: $f) {
      errors { code } document { filename } } }"""
    operations = {"query": query, "variables": {"a": account_id, "f": None}}
    return {
        "data": {"operations": json.dumps(operations), "map": json.dumps({"0": ["variables.f"]})},
        "files": {"0": ("return.pdf", b"%PDF-1.4\n", "application/pdf")},
    }


async def test_apollo_upload_headers_pass_the_csrf_guard(acme, client):
    account = await new_account(acme.api, "Miller Family")
    client.cookies.set(SESSION_COOKIE, acme.api.token)  # cookie auth, no Authorization
    refused = await client.post("/graphql", **upload_parts(account["id"]))
    assert refused.status_code == 400
    assert "Apollo-Require-Preflight" in refused.json()["errors"][0]["message"]
    for header in ("Apollo-Require-Preflight", "X-Apollo-Operation-Name"):
        response = await client.post(
            "/graphql", headers={header: "uploadDocument"}, **upload_parts(account["id"])
        )
        payload = response.json()["data"]["uploadDocument"]
        assert payload == {"errors": [], "document": {"filename": "return.pdf"}}, header
