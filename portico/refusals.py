"""How Portico refuses a request it cannot read or run: one error shape (a JSON body with
`errors` and no `data`) over HTTP and WebSocket."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from graphql import GraphQLError
from starlette.responses import Response
from starlette.types import Scope, Send

from services.shared.errors import ErrorCode


class BadRequest(Exception):
    """A request that is not a GraphQL request Portico can run: over HTTP `status` (400
    unless said otherwise: 405, 406, 415) with `code` and `reason` as the message, and any
    `headers` (Allow for a 405); over a WebSocket an `error` message with the same."""

    def __init__(
        self,
        reason: str,
        *,
        status: int = 400,
        code: ErrorCode = ErrorCode.BAD_REQUEST,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.code = code
        self.headers = dict(headers or {})


def error_json(message: str, code: ErrorCode) -> bytes:
    """`{"errors": [...]}` with one error, as a GraphQL response carries it."""
    return orjson.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})


def bad_request_response(
    refusal: BadRequest | str, content_type: str = "application/json"
) -> Response:
    """The HTTP answer to a refusal, in the media type the client accepts."""
    if isinstance(refusal, str):
        refusal = BadRequest(refusal)
    return Response(
        error_json(refusal.reason, refusal.code),
        refusal.status,
        headers=refusal.headers,
        media_type=content_type,
    )


TRY_AGAIN_LATER = 1013  # RFC 6455's close code for "try again later"


async def send_retry_later(
    scope: Scope, send: Send, status: int, message: str, code: ErrorCode, seconds: int
) -> None:
    """A refusal to come back in `seconds`: over HTTP `status` with the error and
    Retry-After; to a WebSocket handshake the same where the server lets an app answer a
    handshake (uvicorn does), else a close with 1013 (Try Again Later)."""
    body = error_json(message, code)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"retry-after", b"%d" % seconds),
    ]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": TRY_AGAIN_LATER})


def bad_request_error(reason: str, code: ErrorCode = ErrorCode.BAD_REQUEST) -> GraphQLError:
    """The same refusal as a GraphQL error, for a WebSocket `error` message."""
    return GraphQLError(reason, extensions={"code": code})
