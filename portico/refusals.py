"""How Portico refuses a request it cannot read or run: one error shape (a JSON body with
`errors` and no `data`) over HTTP and WebSocket."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from graphql import GraphQLError
from starlette.responses import Response

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


def bad_request_error(reason: str, code: ErrorCode = ErrorCode.BAD_REQUEST) -> GraphQLError:
    """The same refusal as a GraphQL error, for a WebSocket `error` message."""
    return GraphQLError(reason, extensions={"code": code})
