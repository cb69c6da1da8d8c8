"""The database out of reach (a restart, a failover, a cut network): a request that meets it
is answered 503 UNAVAILABLE with Retry-After at once, rather than a 500 or a masked INTERNAL
error; asyncpg's pool replaces closed connections itself, so the same process serves again
as soon as the database is back."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portico.refusals import TRY_AGAIN_LATER, BadRequest, send_retry_later
from services.shared.errors import ErrorCode
from services.shared.outage import MESSAGE, database_unreachable

RETRY_AFTER_SECONDS = 2


def unavailable() -> BadRequest:
    """The refusal a GraphQL request whose resolvers met the outage raises (the view answers
    its BadRequests)."""
    return BadRequest(
        MESSAGE,
        status=503,
        code=ErrorCode.UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


class DatabaseOutage:
    """Answers 503 for a request whose handling raised the outage before it answered (the
    session lookup, a download, a page), and for a WebSocket handshake that met it (where the
    server lets an app answer a handshake; else a close, 1013 Try Again Later). A WebSocket
    accepted before its session lookup met it is closed with 1013."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        sent: set[str] = set()

        async def send_wrapper(message: Message) -> None:
            sent.add(message["type"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if not database_unreachable(exc) or sent & _CLOSED:
                raise
            if "websocket.accept" in sent:
                close = {"type": "websocket.close", "code": TRY_AGAIN_LATER, "reason": CLOSE_REASON}
                await send(close)
                return
            await send_retry_later(
                scope, send, 503, MESSAGE, ErrorCode.UNAVAILABLE, RETRY_AFTER_SECONDS
            )


CLOSE_REASON = "Database unavailable"
# Sent already: no 503 (or close) can follow.
_CLOSED = frozenset({"http.response.start", "websocket.close", "websocket.http.response.start"})
