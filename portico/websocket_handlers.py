"""The two WebSocket protocols as Portico speaks them: every refused operation answers an
`error` message with the errors (messages, codes) HTTP would answer, and no message a
client can send reaches an internal error. Credentials given at `connection_init` (or on the
upgrade's Authorization header) that name no live session refuse the connection before any
ack; none given is an anonymous connection.

Strawberry as it stands lets a parse error (the token limit included) escape its stream,
closes graphql-transport-ws on a syntax error with a reason too long for a close frame, and
crashes on messages that are JSON but not objects; the legacy graphql-ws ran subscriptions
only, answering a query INTERNAL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, cast

from graphql import GraphQLError
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.schema import BaseSchema
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    Message,
    SubscribeMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionInitMessage as LegacyInitMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.types import OperationMessage, StartMessage
from strawberry.types.execution import PreExecutionError

from portico.outage import CLOSE_REASON
from portico.rate_limit import refusal_message, retry_seconds
from portico.refusals import TRY_AGAIN_LATER, BadRequest, bad_request_error
from portico.request_parsing import check_request
from resolvers import fanout
from resolvers.context import Context
from services.shared.errors import ErrorCode
from services.shared.outage import MESSAGE, database_unreachable
from services.shared.persisted_queries import AllowList, not_allowed

StreamResult = AsyncGenerator[Any, None]

# Credentials given at connection_init that name no live session: refused before any ack, so
# a client's reconnect logic sees it in the close (graphql-transport-ws: graphql-ws's 4403).
FORBIDDEN = 4403
REFUSED_CREDENTIALS = {
    "message": "The session token is invalid or expired: sign in again.",
    "extensions": {"code": ErrorCode.UNAUTHENTICATED.value},
}

# Messages that name an operation: its id must be a string to be answered (or stopped).
_WITH_ID = {"subscribe", "complete", "start", "stop"}


def readable(message: object) -> bool:
    """A protocol message: an object with a `type`, and a string `id` where one belongs."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return False
    return message["type"] not in _WITH_ID or isinstance(message.get("id"), str)


# The database out of reach at connection_init: graphql-transport-ws closes with 1013 (Try
# Again Later); graphql-ws answers a connection_error with UNAVAILABLE, then closes.


class _Unavailable(Exception):
    """connection_init met the database out of reach: the socket is answered and closed."""


async def _opened(handler: TransportWSHandler | LegacyWSHandler, params: dict[str, Any]) -> bool:
    """open_socket (the session looked up); the database out of reach is answered as the
    protocol allows, and raises _Unavailable."""
    try:
        return await handler.context.open_socket(params)
    except Exception as exc:
        if not database_unreachable(exc):
            raise
    if isinstance(handler, LegacyWSHandler):
        error = bad_request_error(MESSAGE, ErrorCode.UNAVAILABLE).formatted
        await handler.send_message({"type": "connection_error", "payload": error})
        await handler.websocket.close(code=TRY_AGAIN_LATER, reason="")
        raise _Unavailable
    handler.connection_init_received = True
    if handler.connection_init_timeout_task:
        handler.connection_init_timeout_task.cancel()
    await handler.websocket.close(code=TRY_AGAIN_LATER, reason=CLOSE_REASON)
    raise _Unavailable


async def check_rate(handler: TransportWSHandler | LegacyWSHandler) -> None:
    """An operation over a WebSocket takes a token as an HTTP request would: from the
    socket's session, else from the client address (one socket is no way around the limit)."""
    limiter = getattr(handler.view, "limiter", None)
    if limiter is None:
        return
    socket: WebSocket = handler.websocket.ws  # type: ignore[attr-defined]
    wait = await limiter.session_wait(handler.context.session, socket.scope)
    if wait > 0:
        raise BadRequest(refusal_message(retry_seconds(wait)), code=ErrorCode.RATE_LIMITED)


def check_payload(payload: object, allow_list: AllowList | None = None) -> None:
    """A subscribe/start payload holds one GraphQL request, typed as over HTTP; in allow-list
    mode its document (sent in full: Apollo's persisted queries are HTTP only) is listed."""
    if not isinstance(payload, dict):
        raise BadRequest("The operation's payload must be an object")
    query = payload.get("query")
    check_request(
        query, payload.get("variables"), payload.get("operationName"), payload.get("extensions")
    )
    if allow_list is not None and query not in allow_list:
        refusal = not_allowed()
        raise BadRequest(refusal.message, status=403, code=refusal.code)


class _Operations:
    """The schema as both handlers call it: any operation type (the legacy handler's
    `subscribe` included, as queries over WebSocket work as over HTTP), each stream's
    escaping refusal answered as a result."""

    def __init__(self, schema: BaseSchema) -> None:
        self.schema = schema

    async def stream(self, *args: Any, **kwargs: Any) -> StreamResult:
        return _refusals_answered(self.schema, await self.schema.stream(*args, **kwargs))

    async def subscribe(self, *args: Any, **kwargs: Any) -> StreamResult:
        return await self.stream(*args, **kwargs)


async def _refusals_answered(schema: BaseSchema, results: StreamResult) -> StreamResult:
    """`results`, with an error raised before the first result (ParserCache parses in an
    extension hook, so a syntax error or the token limit escapes strawberry's stream, and so
    may an extension's refusal) turned into the PreExecutionError HTTP's execute makes of it:
    shaped (codes, masking, logging of the unexpected) by the schema's process_errors."""
    async with aclosing(results):
        try:
            first = await anext(results)
        except StopAsyncIteration:
            return
        except Exception as exc:  # answered as HTTP answers it
            error = (
                exc if isinstance(exc, GraphQLError) else GraphQLError(str(exc), original_error=exc)
            )
            errors = [error]
            schema._process_errors(errors)
            yield PreExecutionError(data=None, errors=errors)
            return
        yield first
        async for result in results:
            yield result


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws: `{"type": "error", "id", "payload": [errors]}` for a refusal."""

    def __init__(self, *, schema: BaseSchema, **kwargs: Any) -> None:
        super().__init__(schema=cast(BaseSchema, _Operations(schema)), **kwargs)

    async def handle_message(self, message: Message) -> None:
        if not readable(message):
            await self.handle_invalid_message("Invalid message")  # the protocol's 4400
            return
        await super().handle_message(message)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        payload = message.get("payload", {})
        # Strawberry's own refusals first: a payload not an object (4400), a second init (4429).
        fresh = not (self.connection_init_received or self.connection_timed_out)
        try:
            refused = fresh and isinstance(payload, dict) and not await _opened(self, payload)
        except _Unavailable:
            return
        if refused:
            self.connection_init_received = True
            if self.connection_init_timeout_task:
                self.connection_init_timeout_task.cancel()
            await self.websocket.close(code=FORBIDDEN, reason="Forbidden")
            return
        await super().handle_connection_init(message)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        # Strawberry's own refusals first: unacknowledged (4401), a duplicate id (4409).
        if self.connection_acknowledged and message["id"] not in self.operations:
            try:
                check_payload(message.get("payload"), getattr(self.view, "allow_list", None))
                await check_rate(self)
            except BadRequest as exc:
                error = bad_request_error(exc.reason, exc.code).formatted
                await self.send_message({"id": message["id"], "type": "error", "payload": [error]})
                return
        await super().handle_subscribe(message)

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        # In the operation's own task: where a multiplexed subscription writes its results.
        message = {"id": operation.id, "type": "next"}
        fanout.current_sink.set(
            _sink(self, message, operation.query, operation.variables, operation.operation_name)
        )
        await super().run_operation(operation)

    async def _handle_pre_execution_error(
        self, operation: Operation[Context, None], result: PreExecutionError
    ) -> None:
        # Every refusal is an `error` for its operation: never a close, which would end
        # the socket's other operations too.
        assert result.errors
        await operation.send_initial_errors(result.errors)


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """graphql-ws (subscriptions-transport-ws): `{"type": "error", "id", "payload": error}`,
    the protocol's one error object, for a refusal."""

    def __init__(self, *, schema: BaseSchema, **kwargs: Any) -> None:
        super().__init__(schema=cast(BaseSchema, _Operations(schema)), **kwargs)

    async def handle_message(self, message: OperationMessage) -> None:
        if readable(message):  # the protocol ignores what it cannot read (bad JSON too)
            await super().handle_message(message)

    async def handle_connection_init(self, message: LegacyInitMessage) -> None:
        if self.connection_acknowledged:  # each init again looks the session up: a request
            try:
                await check_rate(self)
            except BadRequest as exc:
                error = bad_request_error(exc.reason, exc.code).formatted
                await self.send_message({"type": "connection_error", "payload": error})
                return
        payload = message.get("payload")
        params = {} if payload is None else payload  # else strawberry's connection_error
        try:
            refused = isinstance(params, dict) and not await _opened(self, params)
        except _Unavailable:
            return
        if refused:
            # The protocol's refusal: connection_error, then a close (1011, as its reference
            # server and strawberry close a rejected connection).
            await self.send_message({"type": "connection_error", "payload": REFUSED_CREDENTIALS})
            await self.websocket.close(code=1011, reason="")
            return
        await super().handle_connection_init(message)

    async def handle_start(self, message: StartMessage) -> None:
        if self.connection_acknowledged:  # else strawberry closes with 4401
            try:
                check_payload(message.get("payload"), getattr(self.view, "allow_list", None))
                await check_rate(self)
            except BadRequest as exc:
                error = bad_request_error(exc.reason, exc.code).formatted
                await self.send_message({"type": "error", "id": message["id"], "payload": error})
                return
        await super().handle_start(message)

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        # In the operation's own task: where a multiplexed subscription writes its results.
        message = {"type": "data", "id": operation_id}
        fanout.current_sink.set(_sink(self, message, query, variables, operation_name))
        await super().handle_async_results(operation_id, query, operation_name, variables)


def _sink(
    handler: TransportWSHandler | LegacyWSHandler,
    message: dict[str, Any],
    query: str,
    variables: dict[str, object] | None,
    operation_name: str | None,
) -> fanout.Sink:
    """Where a multiplexed subscription writes this operation's results: `message` (with its
    payload) encoded as the view encodes every message, sent as strawberry sends it."""
    encode = handler.view.encode_json
    prefix, suffix = fanout.framing(encode, message)
    socket: WebSocket = handler.websocket.ws  # type: ignore[attr-defined]

    async def send(data: str | bytes) -> None:
        # A client gone meanwhile is not an error: the handler's read loop sees the close
        # and ends the operations (RuntimeError: the socket is already closed). try/except,
        # not contextlib.suppress: no object made per write (10,000 writes an event).
        try:
            if isinstance(data, bytes):
                await socket.send_bytes(data)
            else:
                await socket.send_text(data)
        except (WebSocketDisconnect, RuntimeError):
            pass

    task = asyncio.current_task()  # the operation's (the handlers call this in it)
    return fanout.Sink(send, encode, prefix, suffix, query, variables, operation_name, task)
