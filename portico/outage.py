"""The database out of reach (a restart, a failover, a cut network): every HTTP request that
meets it is answered 503 UNAVAILABLE with Retry-After at once, rather than a 500 or a masked
INTERNAL error, and the pool's connections are renewed, so the same process serves again as
soon as the database is back."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portico.refusals import BadRequest, error_json
from services.shared.errors import ErrorCode
from services.shared.outage import MESSAGE, database_unreachable, renew_connections

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
    session lookup, a download, a page)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if started or not database_unreachable(exc):
                raise
            await renew_connections()
            await _answer(send)


async def _answer(send: Send) -> None:
    body = error_json(MESSAGE, ErrorCode.UNAVAILABLE)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"retry-after", b"%d" % RETRY_AFTER_SECONDS),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
