"""A PostgreSQL restart under a running `portico serve`: while the database is out of reach
every request is answered 503 UNAVAILABLE with Retry-After at once (the session lookup, a
resolver's query, a download, readiness), and the same process serves again once it is back."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from graphql import GraphQLError
from strawberry.types import ExecutionResult
from tortoise.exceptions import DBConnectionError

from portico.graphql_view import _nothing_done_for_outage
from portico.settings import Settings
from services.firm import firms
from services.shared import sessions
from services.shared.errors import ErrorCode
from services.shared.outage import connection_lost, database_unreachable
from tests.support.api import PASSWORD, eventually
from tests.support.databases import Database
from tests.support.server import start_server
from tests.support.tcp_proxy import tcp_proxy
from tests.support.websocket import LEGACY_WS, TRANSPORT_WS, connection

FIRM = {"query": "{ firm { slug } }"}
SIGN_IN = {
    "query": 'mutation { signIn(firm: "acme", email: "nobody@acme.example", '
    'password: "not-the-password") { errors { code } } }'
}


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "2"
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "UNAVAILABLE"
    assert "data" not in response.json()


async def test_a_database_restart_is_answered_503_then_served_again(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    if database.backend != "postgres":
        pytest.skip("a database server that restarts: PostgreSQL's suite")
    _, owner = await firms.create_firm("Acme LLP", "acme", "owner@acme.example", "O", PASSWORD)
    token, _ = await sessions.start_staff_session(owner, timedelta(hours=1))
    staff = {"Authorization": f"Bearer {token}"}
    url = urlsplit(database.url)
    with tcp_proxy(url.hostname or "127.0.0.1", url.port or 5432) as proxy:
        address = url.netloc.rsplit("@", 1)[-1]
        proxied = database.url.replace(address, f"127.0.0.1:{proxy.port}", 1)
        server = start_server(
            tmp_path, {"PORTICO_DATABASE_URL": proxied, "PORTICO_INPROCESS_WORKER": "false"}
        )
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
                served = await http.post("/graphql", json=FIRM, headers=staff)
                assert served.json() == {"data": {"firm": {"slug": "acme"}}}

                proxy.down()  # every connection cut, new ones refused
                # The session lookup (before any resolver), a resolver's own query (signIn
                # has no session to look up), a download's lookup.
                assert_unavailable(await http.post("/graphql", json=FIRM, headers=staff))
                assert_unavailable(await http.post("/graphql", json=SIGN_IN))
                assert_unavailable(await http.get("/documents/RG9jdW1lbnQ6MQ==", headers=staff))
                ready = await http.get("/readyz")
                assert (ready.status_code, ready.json().get("failed")) == (503, "database"), (
                    ready.text
                )
                assert (await http.get("/healthz")).status_code == 200  # the process is fine
                await _websockets_told(server.url, token)

                proxy.up()

                async def serves_again() -> bool:
                    response = await http.post("/graphql", json=FIRM, headers=staff)
                    return response.status_code == 200

                await eventually(serves_again, "the same process serving once the database is back")
                assert (
                    await http.post("/graphql", json=FIRM, headers=staff)
                ).json() == served.json()
                signed_in = await http.post("/graphql", json=SIGN_IN)
                [error] = signed_in.json()["data"]["signIn"]["errors"]
                assert error["code"] == "INVALID_CREDENTIALS"
                assert (await http.get("/readyz")).status_code == 200
        finally:
            server.stop()


async def _websockets_told(url: str, token: str) -> None:
    """A socket whose session is looked up when it opens (a token on the handshake) or at
    connection_init is told to come back: 1013 (Try Again Later), or graphql-ws's
    connection_error UNAVAILABLE."""
    bearer = {"Authorization": f"Bearer {token}"}
    async with connection(url, TRANSPORT_WS, bearer) as sock:
        assert (await sock.closed())[0] == 1013
    async with connection(url, TRANSPORT_WS) as sock:
        await sock.send({"type": "connection_init", "payload": {"token": token}})
        assert await sock.closed() == (1013, "Database unavailable")
    async with connection(url, LEGACY_WS) as sock:
        await sock.send({"type": "connection_init", "payload": {"token": token}})
        refused = await sock.receive()
        assert refused["type"] == "connection_error"
        assert refused["payload"]["extensions"]["code"] == "UNAVAILABLE"


def test_a_partly_done_request_keeps_what_was_done() -> None:
    """503 only when no top-level field got through; a mutation whose first field committed
    before the outage answers that field, and UNAVAILABLE on the rest."""
    lost = GraphQLError("x", extensions={"code": ErrorCode.UNAVAILABLE})
    other = GraphQLError("x", extensions={"code": ErrorCode.INTERNAL})
    nothing = ExecutionResult(data={"a": None, "b": None}, errors=[lost, lost])
    assert _nothing_done_for_outage(nothing)
    assert _nothing_done_for_outage(ExecutionResult(data=None, errors=[lost]))
    assert not _nothing_done_for_outage(
        ExecutionResult(data={"a": {"id": 1}, "b": None}, errors=[lost])
    )
    assert not _nothing_done_for_outage(ExecutionResult(data={"a": None}, errors=[other]))


def test_only_the_database_drivers_oserrors_are_an_outage() -> None:
    """A full disk or an unreachable mail host inside a request is that request's failure
    (INTERNAL or its own code), not 503 UNAVAILABLE; the driver's refusal is."""
    try:
        raise OSError(28, "No space left on device")
    except OSError as exc:
        assert not database_unreachable(exc)
        assert connection_lost(exc)  # the mail store still fails its pass on it
    try:
        raise DBConnectionError("gone")
    except DBConnectionError as exc:
        assert database_unreachable(exc)
    # A statement cancelled (statement_timeout, pg_cancel_backend) is that request's failure.
    cancelled = asyncpg.exceptions.QueryCanceledError("canceling statement due to timeout")
    assert not database_unreachable(cancelled)
    assert database_unreachable(asyncpg.exceptions.AdminShutdownError("terminating"))
    # Met at the release of a connection the server left mid-operation (bench.load --restarts).
    stuck = asyncpg.exceptions.InternalClientError("cannot switch to state 15")
    assert database_unreachable(stuck)
