"""The client address from a proxy's own header (PORTICO_CLIENT_ADDRESS_HEADER): written into
the request's `client`, so the rate limits, the sign-in budget and the sign-in notices all see
the same address. X-Forwarded-For needs none of this: uvicorn reads it from the proxies
PORTICO_FORWARDED_ALLOW_IPS trusts."""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send


class ClientAddressHeader:
    def __init__(self, app: ASGIApp, header: str) -> None:
        self.app = app
        self.header = header.strip().lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            address = header_address(scope, self.header)
            if address is not None:
                client = scope.get("client")
                scope["client"] = (address, client[1] if client else 0)
        await self.app(scope, receive, send)


def header_address(scope: Scope, header: bytes) -> str | None:
    """The header's address when its last copy (the one the proxy added, should it add rather
    than replace) holds one valid IP address; else None (the connection's own stands)."""
    values = [value for name, value in scope["headers"] if name == header]
    if not values:
        return None
    try:
        return str(ipaddress.ip_address(values[-1].decode("latin-1").strip()))
    except ValueError:
        return None
