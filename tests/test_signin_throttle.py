"""The per-address sign-in budget behind a reverse proxy, against a real `portico serve`:
the proxies of PORTICO_FORWARDED_ALLOW_IPS name the client (X-Forwarded-For), nobody else does.

The proxy stands on "another host": 127.0.0.2, a loopback address that is not uvicorn's
default trusted 127.0.0.1 (Linux routes all of 127.0.0.0/8 to the loopback interface).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support import server

PROXY = "127.0.0.2"
BUDGET = 3
SIGN_IN = """mutation($firm: String!, $email: String!, $password: String!) {
  staffSignIn(firm: $firm, email: $email, password: $password) { errors { code } token } }"""


@contextmanager
def peer(live: server.LiveServer, source: str) -> Iterator[httpx.Client]:
    """A client whose connections come from the local address `source`."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=live.url, transport=transport, timeout=30) as http:
        yield http


def sign_in(http: httpx.Client, client_address: str, password: str, email: str) -> str | None:
    """The error code of a sign-in to the demo firm said to come from `client_address`; None
    when it signed in."""
    variables = {"firm": server.DEMO_FIRM, "email": email, "password": password}
    response = http.post(
        "/graphql",
        json={"query": SIGN_IN, "variables": variables},
        headers={"X-Forwarded-For": client_address},
    )
    payload = response.json()["data"]["staffSignIn"]
    http.cookies.clear()
    if payload["token"]:
        return None
    return payload["errors"][0]["code"]


def spend_budget(http: httpx.Client, client_addresses: list[str]) -> None:
    for i, address in enumerate(client_addresses):  # no account reaches its own limit
        code = sign_in(http, address, "wrong-password-1", f"guess{i}@demo.example")
        assert code == "INVALID_CREDENTIALS"


def test_behind_a_trusted_proxy_each_client_has_its_own_budget(tmp_path: Path) -> None:
    live = server.start_server(
        tmp_path,
        {
            "PORTICO_FORWARDED_ALLOW_IPS": PROXY,
            "PORTICO_SIGNIN_MAX_FAILURES_PER_ADDRESS": str(BUDGET),
        },
    )
    right, owner = server.DEMO_PASSWORD, server.DEMO_OWNER_EMAIL
    try:
        with peer(live, PROXY) as proxy:
            # One stranger spends their budget; a colleague behind the same proxy signs in.
            spend_budget(proxy, ["198.51.100.7"] * BUDGET)
            assert sign_in(proxy, "198.51.100.7", right, owner) == "TOO_MANY_ATTEMPTS"
            assert sign_in(proxy, "203.0.113.9", right, owner) is None
        with peer(live, "127.0.0.1") as direct:
            # A peer that is no trusted proxy (here: even uvicorn's default one) cannot name
            # itself: the header is ignored and its own address spends the budget.
            spend_budget(direct, [f"192.0.2.{i}" for i in range(BUDGET)])
            assert sign_in(direct, "192.0.2.99", right, owner) == "TOO_MANY_ATTEMPTS"
    finally:
        live.stop()
