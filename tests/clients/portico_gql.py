"""Python's gql 4 against Portico: a query over HTTP, a subscription over either WebSocket
protocol (tests/test_clients.py runs these; docs/clients.md shows them)."""

from __future__ import annotations

from typing import Any

from gql import Client, gql
from gql.transport.aiohttp import AIOHTTPTransport
from gql.transport.websockets import WebsocketsTransport

ACCOUNTS = gql("query { accounts(first: 5) { totalCount edges { node { id name } } } }")
SYNCED = gql("subscription { messageSynced { id subject accounts { name } } }")


async def accounts(url: str, token: str) -> dict[str, Any]:
    """The firm's first accounts, over HTTP with a bearer token."""
    transport = AIOHTTPTransport(url=f"{url}/graphql", headers={"Authorization": f"Bearer {token}"})
    async with Client(transport=transport) as session:
        return await session.execute(ACCOUNTS)


async def first_synced_message(url: str, token: str, protocol: str) -> dict[str, Any]:
    """The next message a sync stores. `protocol` is "graphql-transport-ws" or the legacy
    "graphql-ws" (gql's WebsocketsTransport speaks both)."""
    transport = WebsocketsTransport(
        url=f"{url.replace('http', 'ws', 1)}/graphql",
        init_payload={"Authorization": f"Bearer {token}"},
        subprotocols=[protocol],
    )
    async with Client(transport=transport) as session:
        async for result in session.subscribe(SYNCED):
            assert transport.subprotocol == protocol, transport.subprotocol
            return result["messageSynced"]
    raise AssertionError("the subscription ended without an event")
