"""Python's gql 4 against Portico: a query over HTTP, a subscription over either WebSocket
protocol (tests/test_clients.py runs these; docs/clients.md shows them)."""

from __future__ import annotations

from typing import Any

from gql import Client, gql
from gql.transport.aiohttp import AIOHTTPTransport
from gql.transport.websockets import WebsocketsTransport

ACCOUNTS = gql("query { accounts(first: 5) { totalCount edges { node { id name } } } }")
SYNCED = gql("subscription { messageSynced { id subject accounts { name } } }")
VIEWER = gql("{ viewer { __typename ... on StaffMember { email } } }")


async def accounts(url: str, token: str) -> dict[str, Any]:
    """The firm's first accounts, over HTTP with a bearer token."""
    transport = AIOHTTPTransport(url=f"{url}/graphql", headers={"Authorization": f"Bearer {token}"})
    async with Client(transport=transport) as session:
        return await session.execute(ACCOUNTS)


def websocket(url: str, token: str, protocol: str) -> WebsocketsTransport:
    """`protocol` is "graphql-transport-ws" or the legacy "graphql-ws" (gql speaks both)."""
    return WebsocketsTransport(
        url=f"{url.replace('http', 'ws', 1)}/graphql",
        init_payload={"Authorization": f"Bearer {token}"},
        subprotocols=[protocol],
    )


async def viewer(url: str, token: str, protocol: str) -> dict[str, Any]:
    """Who is signed in, asked over the WebSocket (queries work on both protocols)."""
    async with Client(transport=websocket(url, token, protocol)) as session:
        return await session.execute(VIEWER)


async def first_synced_message(url: str, token: str, protocol: str) -> dict[str, Any]:
    """The next message a sync stores."""
    transport = websocket(url, token, protocol)
    async with Client(transport=transport) as session:
        async for result in session.subscribe(SYNCED):
            assert transport.subprotocol == protocol, transport.subprotocol
            return result["messageSynced"]
    raise AssertionError("the subscription ended without an event")
