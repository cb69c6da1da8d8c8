"""The WebSocket endpoint against a real server: the session is checked for every operation;
every refused operation answers an `error` message with the errors HTTP answers; messages are
capped at the HTTP body limit, and nothing a client sends leaves a traceback (issue 10,
finding 9)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import httpx
import pytest
import websockets

from portico.settings import Settings
from services.shared import sessions
from tests.support import server
from tests.support.api import Firm, chained_document
from tests.support.server import DEMO_FIRM, DEMO_OWNER_EMAIL, DEMO_PASSWORD
from tests.support.websocket import (
    LEGACY_WS,
    TRANSPORT_WS,
    Served,
    Socket,
    connection,
    serving,
    socket,
)

live_server = server.live_server
live_server_process = server.live_server_process

SIGN_IN = """mutation($f: String!, $e: String!, $p: String!) {
  staffSignIn(firm: $f, email: $e, password: $p) { token } }"""


async def _operation(ws: websockets.ClientConnection, op_id: str, query: str) -> dict:
    await ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": query}}))
    while True:
        message = json.loads(await ws.recv())
        if message.get("id") == op_id and message["type"] in ("next", "error"):
            return message


async def test_signing_out_ends_an_open_websocket_at_once(live_server: str) -> None:
    async with httpx.AsyncClient(base_url=live_server) as http:
        variables = {"f": DEMO_FIRM, "e": DEMO_OWNER_EMAIL, "p": DEMO_PASSWORD}
        response = await http.post("/graphql", json={"query": SIGN_IN, "variables": variables})
        token = response.json()["data"]["staffSignIn"]["token"]

        url = live_server.replace("http://", "ws://") + "/graphql"
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            first = await _operation(ws, "1", "{ viewer { __typename } }")
            assert first["payload"]["data"] == {"viewer": {"__typename": "StaffMember"}}

            await http.post(
                "/graphql",
                json={"query": "mutation { signOut }"},
                headers={"Authorization": f"Bearer {token}"},
            )
            after = await _operation(ws, "2", "{ viewer { __typename } }")
            assert after["payload"]["data"] == {"viewer": None}
            refused = await _operation(ws, "3", "{ accounts { totalCount } }")
            assert refused["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


# Refusals answered as over HTTP, both protocols; uvicorn in this process, both backends ------


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[Served]:
    async with serving(settings) as served:
        yield served


@pytest.fixture(autouse=True)
def no_error_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    with caplog.at_level(logging.INFO):
        yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert [r.getMessage() for r in errors] == []


REFUSED = {
    "syntax": "{ viewer ",
    "tokens": "{ " + " ".join(["__typename"] * 2000) + " }",
    "unknown field": "{ accountz { totalCount } }",
    "depth": chained_document(11),
    "unknown operation": "query A { __typename }",
}


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
@pytest.mark.parametrize("kind", list(REFUSED))
async def test_a_refused_operation_answers_an_error_as_http_does(live, settings, protocol, kind):
    document = REFUSED[kind]
    request = {"query": document, "operationName": "B" if kind == "unknown operation" else None}
    over_http = await live.http.post("/graphql", json=request)
    expected = over_http.json()["errors"]
    assert over_http.status_code == (400 if kind == "unknown operation" else 200)
    if kind == "depth":
        at_limit = await live.api(None).post(chained_document(10))
        assert "depth" not in json.dumps(at_limit)
        assert "exceeds maximum operation depth" in expected[0]["message"]
    async with socket(live.url, protocol=protocol) as sock:
        await sock.start("1", request)
        assert await sock.refused("1") == expected[: 1 if protocol == LEGACY_WS else None]
        # The socket serves on: the next operation is answered.
        await sock.subscribe("2", "{ __typename }")
        answer = await sock.receive()
        assert answer["id"] == "2" and answer["payload"] == {"data": {"__typename": "Query"}}


PAYLOADS = [
    {},
    {"query": ""},
    {"query": 5},
    {"query": "{ __typename }", "variables": [1]},
    {"query": "{ __typename }", "operationName": 5},
    {"query": "{ __typename }", "extensions": "x"},
]


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_payload_http_would_refuse_answers_bad_request(live, protocol):
    async with socket(live.url, protocol=protocol) as sock:
        for number, payload in enumerate([*PAYLOADS, "{ __typename }", None]):
            if isinstance(payload, dict):
                over_http = await live.http.post("/graphql", json=payload)
                assert over_http.status_code == 400
                expected = over_http.json()["errors"]
            else:
                expected = [
                    {
                        "message": "The operation's payload must be an object",
                        "extensions": {"code": "BAD_REQUEST"},
                    }
                ]
            await sock.start(str(number), payload)
            assert await sock.refused(str(number)) == expected


UNREADABLE = [
    "5",
    "[]",
    "null",
    '{"type": 5}',
    '{"id": "1"}',
    '{"type": "subscribe", "id": {}, "payload": {"query": "{ __typename }"}}',
    '{"type": "subscribe", "payload": {"query": "{ __typename }"}}',
    '{"type": "complete", "id": []}',
    "[" * 100_000,
    '{"type": "subscribe", "id": "1", "payload": ' + "[" * 2000 + "]" * 2000 + "}",
]


@pytest.mark.parametrize("message", UNREADABLE)
async def test_graphql_transport_ws_closes_on_a_message_it_cannot_read(live, message):
    async with socket(live.url) as sock:
        await sock.ws.send(message)
        code, _ = await sock.closed()
        assert code == 4400


async def test_graphql_ws_ignores_messages_it_cannot_read(live):
    async with socket(live.url, protocol=LEGACY_WS) as sock:
        for message in UNREADABLE:
            await sock.ws.send(message.replace("subscribe", "start").replace("complete", "stop"))
        await sock.subscribe("2", "{ __typename }")
        assert await sock.receive() == {
            "type": "data",
            "id": "2",
            "payload": {"data": {"__typename": "Query"}},
        }


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_messages_are_capped_at_the_http_body_limit(live, settings, protocol):
    """The app's own cap (uvicorn here keeps its default of 16 MiB): 1009, Message Too Big."""
    envelope = {"id": "1", "type": "subscribe" if protocol == TRANSPORT_WS else "start"}
    query = "{ __typename }"

    def message(size: int) -> str:
        payload = {"query": query, "variables": {"pad": ""}}
        empty = len(json.dumps({**envelope, "payload": payload}))
        payload["variables"]["pad"] = "x" * (size - empty)
        text = json.dumps({**envelope, "payload": payload})
        assert len(text) == size
        return text

    async with socket(live.url, protocol=protocol) as sock:
        await sock.ws.send(message(settings.max_body_bytes))
        answer = await sock.receive()
        assert answer["payload"] == {"data": {"__typename": "Query"}}, answer
        assert (await sock.receive())["type"] == "complete"
        await sock.ws.send(message(settings.max_body_bytes + 1))
        assert await sock.closed() == (1009, f"Message over {settings.max_body_bytes} bytes")
    async with socket(live.url, protocol=protocol) as sock:  # the server serves on
        await sock.subscribe("1", "{ __typename }")
        assert (await sock.receive())["payload"] == {"data": {"__typename": "Query"}}


# Credentials at connection_init (issue 12, item 6) ---------------------------------------------

STAFF_ONLY = "{ accounts { totalCount } }"

# The spellings stock clients use for the token in connection_init's payload.
SPELLINGS = {
    "token": lambda token: {"token": token},
    "Authorization": lambda token: {"Authorization": f"Bearer {token}"},
    "authorization, no scheme": lambda token: {"authorization": token},
    "AUTHORIZATION, bearer": lambda token: {"AUTHORIZATION": f"bearer {token}"},
    "authToken": lambda token: {"authToken": token},
}


async def _fresh_token(firm: Firm) -> str:
    token, _ = await sessions.start_staff_session(firm.owner, timedelta(hours=1))
    return token


async def _refused_at_connect(sock: Socket, payload: object) -> None:
    """connection_init refused before any ack: graphql-transport-ws closes with 4403;
    graphql-ws sends its connection_error, then closes."""
    await sock.send({"type": "connection_init", "payload": payload})
    if sock.protocol == TRANSPORT_WS:
        assert await sock.closed() == (4403, "Forbidden")
        return
    assert await sock.receive() == {
        "type": "connection_error",
        "payload": {
            "message": "The session token is invalid or expired: sign in again.",
            "extensions": {"code": "UNAUTHENTICATED"},
        },
    }
    assert await sock.closed() == (1011, "")


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
@pytest.mark.parametrize("spelling", list(SPELLINGS))
async def test_each_spelling_of_the_token_signs_the_socket_in(acme, live, protocol, spelling):
    params = SPELLINGS[spelling](acme.api.token)
    async with socket(live.url, protocol=protocol, params=params) as sock:
        answer = await sock.answer("1", STAFF_ONLY)
        assert "errors" not in answer and answer["data"]["accounts"]["totalCount"] >= 0


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_an_invalid_token_is_refused_before_any_ack(acme, live, protocol):
    signed_out = await _fresh_token(acme)
    await live.api(signed_out).data("mutation { signOut }")
    payloads = [
        *(spell("not-a-session") for spell in SPELLINGS.values()),
        {"token": signed_out},  # a session that was, signed out since
        {"Authorization": "Bearer"},  # a scheme, no token
        {"authToken": 42},  # no string can name a session
        {"token": "x" * 10_000},
        # The params speak first: a valid handshake cookie does not rescue a bad token.
    ]
    cookie = {"Cookie": f"portico_session={acme.api.token}", "Origin": live.url}
    for payload in payloads:
        async with connection(live.url, protocol, headers=cookie) as sock:
            await _refused_at_connect(sock, payload)
    # A bad `Authorization` header on the upgrade itself, no token in the params.
    bearer = {"Authorization": "Bearer not-a-session"}
    async with connection(live.url, protocol, headers=bearer) as sock:
        await _refused_at_connect(sock, {})


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_no_token_is_anonymous_not_refused(live, protocol):
    stale_cookie = {"Cookie": "portico_session=long-expired", "Origin": live.url}
    cases = [({}, None), ({"token": None, "authToken": ""}, None), ({}, stale_cookie)]
    for params, headers in cases:
        async with socket(live.url, protocol=protocol, params=params, headers=headers) as sock:
            assert await sock.answer("1", "{ __typename }") == {"data": {"__typename": "Query"}}
            refused = await sock.answer("2", STAFF_ONLY)
            assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_signing_out_ends_access_per_operation_whatever_the_spelling(acme, live, protocol):
    for spell in SPELLINGS.values():
        token = await _fresh_token(acme)
        async with socket(live.url, protocol=protocol, params=spell(token)) as sock:
            assert "errors" not in await sock.answer("1", STAFF_ONLY)
            await live.api(token).data("mutation { signOut }")
            refused = await sock.answer("2", STAFF_ONLY)
            assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


# portico serve: uvicorn itself refuses an oversized frame ---------------------------------------


async def test_portico_serve_refuses_a_frame_over_the_limit_from_its_header(live_server: str):
    """`portico serve` gives uvicorn ws_max_size: a frame announcing more than the body limit
    is refused (1009) from its header, before its payload is read or even sent."""
    limit = Settings(_env_file=None).max_body_bytes
    url = live_server.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=[TRANSPORT_WS]) as ws:
        # A masked text frame's header announcing limit + 1 bytes, and no payload.
        header = bytes([0x81, 0x80 | 127]) + (limit + 1).to_bytes(8, "big") + os.urandom(4)
        ws.transport.write(header)
        async with asyncio.timeout(10):
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
