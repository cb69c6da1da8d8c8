"""The WebSocket endpoint against a real server: the session is checked for every operation."""

from __future__ import annotations

import json

import httpx
import websockets

from tests.support import server
from tests.support.server import DEMO_FIRM, DEMO_OWNER_EMAIL, DEMO_PASSWORD

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
