"""The strawberry ASGI view: builds each request's Context, serves Portico's GraphiQL, and
answers a request it cannot read with 400 and BAD_REQUEST (portico/request_parsing.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.http import GraphQLRequestData
from strawberry.http.base import BaseRequestProtocol
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET

from portico.cors import PREFLIGHT_HEADERS, OriginPolicy
from portico.graphiql import graphiql_page
from portico.refusals import BadRequest, bad_request_response
from portico.request_parsing import (
    NO_QUERY,
    check_request,
    decode_json,
    parse_json_object,
    place_files,
    text_field,
)
from portico.settings import Settings
from portico.websocket_handlers import LegacyWSHandler, TransportWSHandler
from resolvers.context import Context, token_from_request
from services.shared.sessions import resolve_session


class PorticoGraphQL(GraphQL):
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(self, schema: object, settings: Settings, origins: OriginPolicy) -> None:
        super().__init__(
            schema,  # type: ignore[arg-type]
            graphql_ide="graphiql" if settings.graphiql_enabled else None,
            allow_queries_via_get=True,  # strawberry refuses mutations over GET itself
            multipart_uploads_enabled=True,  # uploadDocument; see parse_multipart
            # messageSynced: the current protocol and the legacy one older clients speak.
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
            # Strawberry refuses cross-origin handshakes (a page elsewhere riding on the
            # session cookie); the public URL counts as ours even behind a proxy, and the
            # origins CORS allows may connect too (is_websocket_origin_allowed).
            allowed_origins=public_origins(settings),
        )
        self.settings = settings
        self.origins = origins

    async def get_context(  # type: ignore[override]
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        token = token_from_request(request)
        session = await resolve_session(token)
        return Context(
            request=request, response=response, settings=self.settings, session=session, token=token
        )

    async def run(  # type: ignore[override]
        self, request: Request | WebSocket, context: Any = UNSET, root_value: Any = UNSET
    ) -> Response | WebSocket:
        # Strawberry answers its 400s as plain text: Portico's are GraphQL errors in JSON.
        try:
            return await super().run(request, context, root_value)
        except BadRequest as exc:
            return bad_request_response(exc.reason)
        except HTTPException as exc:
            if exc.status_code != 400:
                raise
            return bad_request_response(exc.reason)

    def decode_json(self, data: str | bytes) -> object:
        return decode_json(data)  # HTTP bodies and WebSocket messages alike

    def parse_json(self, data: str | bytes) -> Any:
        return parse_json_object(data)

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        data = await super().parse_http_body(request)
        if isinstance(data, GraphQLRequestData):  # a list is a batch, which strawberry refuses
            check_request(data.query, data.variables, data.operation_name, data.extensions)
        return data

    async def parse_multipart(self, request: AsyncHTTPRequestAdapter) -> dict[str, Any]:  # type: ignore[override]
        # A multipart POST is a "simple" request another site's form could send with the
        # visitor's cookie: demand what only our own clients send (CSRF guard).
        if not any(name in request.headers for name in PREFLIGHT_HEADERS):
            raise BadRequest(
                "Uploads need an Authorization, GraphQL-Require-Preflight,"
                " Apollo-Require-Preflight or X-Apollo-Operation-Name header"
            )
        try:
            form = (await request.get_form_data()).form
        except (ValueError, StarletteHTTPException) as exc:
            detail = getattr(exc, "detail", "")
            raise BadRequest(f"Unable to parse the multipart body. {detail}".strip()) from exc
        operations = self.parse_json(text_field(form, "operations"))
        files_map = self.parse_json(text_field(form, "map"))
        return place_files(operations, files_map, form)  # type: ignore[return-value]

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        # Strawberry's own, less subscriptions: with no HTTP streaming transport on, it would
        # run one over POST or GET and fail on the stream (INTERNAL).
        allowed = OperationType.from_http(request_adapter.method) - {OperationType.SUBSCRIPTION}
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except CannotGetOperationTypeError as exc:
            raise BadRequest(exc.as_http_error_reason()) from exc
        except InvalidOperationTypeError as exc:
            reason = exc.as_http_error_reason(request_adapter.method)
            if exc.operation_type is OperationType.SUBSCRIPTION:
                reason += ": subscribe over the WebSocket at /graphql"
            raise BadRequest(reason) from exc
        except MissingQueryError as exc:
            raise BadRequest(NO_QUERY) from exc

    def is_websocket_origin_allowed(self, request: WebSocket, origin: str) -> bool:
        return super().is_websocket_origin_allowed(request, origin) or self.origins.allows(origin)

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        # A browser opening a link (Accept: text/html) gets GraphiQL, even with ?query=...
        return (
            self.graphql_ide is not None
            and request.method == "GET"
            and "text/html" in request.headers.get("accept", "")
        )

    async def render_graphql_ide(self, request: Request) -> Response:  # type: ignore[override]
        return HTMLResponse(graphiql_page())


def public_origins(settings: Settings) -> list[str]:
    """The origin of PORTICO_PUBLIC_URL, where browsers load Portico's own pages from."""
    parts = urlsplit(settings.resolved_public_url)
    host = parts.netloc.rpartition("@")[2]  # never credentials in an origin
    return [f"{parts.scheme}://{host}"] if parts.scheme and host else []
