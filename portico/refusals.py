"""How Portico refuses a request it cannot read: one error shape over HTTP and WebSocket."""

from __future__ import annotations

import orjson
from graphql import GraphQLError
from starlette.responses import Response

from services.shared.errors import ErrorCode


class BadRequest(Exception):
    """A request that is not a GraphQL request Portico can read: HTTP 400, or a WebSocket
    `error` message, both with BAD_REQUEST and `reason` as the message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def error_json(message: str, code: ErrorCode) -> bytes:
    """`{"errors": [...]}` with one error, as a GraphQL response carries it."""
    return orjson.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})


def bad_request_response(reason: str) -> Response:
    return Response(error_json(reason, ErrorCode.BAD_REQUEST), 400, media_type="application/json")


def bad_request_error(reason: str) -> GraphQLError:
    """The same refusal as a GraphQL error, for a WebSocket `error` message."""
    return GraphQLError(reason, extensions={"code": ErrorCode.BAD_REQUEST})
