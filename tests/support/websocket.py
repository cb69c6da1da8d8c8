"""WebSockets against Portico: a client of either protocol (graphql-transport-ws, graphql-ws),
a refused connection, and the app served by a real uvicorn in this process."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
import websockets
from starlette.applications import Starlette

from portico.app import create_app
from portico.settings import Settings
from services.shared.pubsub import firm_channel
from tests.support import server
from tests.support.api import Api, eventually

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
TIMEOUT = 10.0

SYNCED = """subscription($account: ID) { messageSynced(accountId: $account) {
  id subject from direction accounts { name } } }"""
SYNC = "mutation($id: ID!) { syncMailbox(id: $id) { errors { code } } }"
SIGN_IN = """mutation($f: String!, $e: String!, $p: String!) {
  staffSignIn(firm: $f, email: $e, password: $p) { token } }"""


# A WebSocket client for both protocols -----------------------------------------------------


class Socket:
    """One graphql-transport-ws or legacy graphql-ws connection."""

    def __init__(self, ws: websockets.ClientConnection, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def receive(self) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            while True:
                message = json.loads(await self.ws.recv())
                if message["type"] not in ("ka", "ping"):  # keep-alives say nothing
                    return message

    async def subscribe(self, op_id: str, query: str, variables: dict | None = None) -> None:
        await self.start(op_id, {"query": query, "variables": variables or {}})

    async def start(self, op_id: str, payload: object) -> None:
        """Starts an operation with any payload (`subscribe`, or `start` in graphql-ws)."""
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        await self.send({"id": op_id, "type": kind, "payload": payload})

    async def refused(self, op_id: str) -> list[dict[str, Any]]:
        """The errors of the `error` message that ends the operation at once, always as a
        list (graphql-ws sends one error object), asserting nothing else came before."""
        message = await self.receive()
        assert message["type"] == "error" and message["id"] == op_id, message
        payload = message["payload"]
        return payload if self.protocol == TRANSPORT_WS else [payload]

    async def closed(self) -> tuple[int, str]:
        """The code and reason of the server's close, asserting no message came before."""
        async with asyncio.timeout(TIMEOUT):
            try:
                message = await self.ws.recv()
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd is not None, "the server closed without a close frame"
                return closed.rcvd.code, closed.rcvd.reason
        raise AssertionError(f"a message, not a close: {message!r}")

    async def answer(self, op_id: str, query: str) -> dict[str, Any]:
        """A query's one result (its data and errors), then its `complete`."""
        await self.subscribe(op_id, query)
        message = await self.receive()
        assert message.get("id") == op_id and message["type"] in ("next", "data"), message
        assert await self.receive() == {"type": "complete", "id": op_id}
        return message["payload"]

    async def event(self, op_id: str) -> dict[str, Any]:
        """The operation's next result: its data, asserting it carries no errors."""
        message = await self.receive()
        assert message.get("id") == op_id, message
        assert message["type"] == ("next" if self.protocol == TRANSPORT_WS else "data"), message
        assert "errors" not in message["payload"], message
        return message["payload"]["data"]["messageSynced"]

    async def ended_by(self, op_id: str) -> str:
        """The code of the error that ended the operation's stream (graphql-transport-ws)."""
        ended = await self.receive()
        assert ended["type"] == "next" and ended["id"] == op_id, ended
        assert ended["payload"]["data"] is None and "errors" in ended["payload"], ended
        assert await self.receive() == {"type": "complete", "id": op_id}
        return ended["payload"]["errors"][0]["extensions"]["code"]

    async def nothing_pending(self) -> None:
        """Proves no message was waiting: the server answers a ping before anything else
        (graphql-transport-ws; the legacy protocol has no ping)."""
        assert self.protocol == TRANSPORT_WS
        await self.send({"type": "ping"})
        assert await self.receive() == {"type": "pong"}


@contextlib.asynccontextmanager
async def connection(
    base_url: str, protocol: str = TRANSPORT_WS, headers: dict[str, str] | None = None
) -> AsyncIterator[Socket]:
    """An open connection, no message sent yet."""
    url = base_url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(
        url, subprotocols=[protocol], additional_headers=headers or {}
    ) as ws:
        yield Socket(ws, protocol)


@contextlib.asynccontextmanager
async def socket(
    base_url: str,
    token: str | None = None,
    protocol: str = TRANSPORT_WS,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
) -> AsyncIterator[Socket]:
    """A connection whose connection_init carries `params`, else `token` (if any),
    acknowledged."""
    async with connection(base_url, protocol, headers) as sock:
        payload = params if params is not None else {"token": token} if token else {}
        await sock.send({"type": "connection_init", "payload": payload})
        assert (await sock.receive())["type"] == "connection_ack"
        yield sock


async def refusal(
    sock: Socket, variables: dict | None = None, document: str = SYNCED
) -> dict[str, Any]:
    """Subscribes, expecting the one error message that ends the operation at once."""
    await sock.subscribe("1", document, variables)
    message = await sock.receive()
    assert message["type"] == "error" and message["id"] == "1", message
    payload = message["payload"]
    return payload[0] if isinstance(payload, list) else payload  # legacy: a single error


# A real uvicorn in this process --------------------------------------------------------------


class _Uvicorn(uvicorn.Server):
    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # Ctrl-C stays pytest's


@dataclass
class Served:
    url: str
    app: Starlette
    http: httpx.AsyncClient

    def api(self, token: str | None) -> Api:
        return Api(self.http, token)

    async def subscribed(self, firm_id: int, count: int = 1) -> None:
        """Wait until `count` subscribers listen on the firm's channel."""
        channel = firm_channel(firm_id)
        await eventually(lambda: self.app.state.bus.subscriber_count(channel) >= count)


@contextlib.asynccontextmanager
async def serving(settings: Settings, lifespan: str = "on") -> AsyncIterator[Served]:
    """The app under uvicorn on a free port, sharing this process's database connection."""
    app = create_app(settings, manage_db=False)
    port = server.free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan=lifespan,
        log_level="warning",
        log_config=None,  # uvicorn's own records (an app's crash) reach caplog too
    )
    runner = _Uvicorn(config)
    task = asyncio.create_task(runner.serve())
    try:
        async with asyncio.timeout(TIMEOUT):
            while not runner.started:
                if task.done():
                    task.result()  # raises what stopped it
                await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url) as http:
            yield Served(url, app, http)
    finally:
        runner.should_exit = True
        await task
