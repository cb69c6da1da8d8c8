"""The strawberry ASGI view: builds each request's Context, serves Portico's GraphiQL,
answers a request it cannot read with 400 and BAD_REQUEST (portico/request_parsing.py),
runs automatic persisted queries (services/shared/persisted_queries.py), and speaks the
GraphQL-over-HTTP spec: the media type the client accepts (portico/media_types.py), 406,
405 and 415, and request errors as `errors` without `data`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError, OperationDefinitionNode
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.base import BaseRequestProtocol
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET

from portico.cors import PREFLIGHT_HEADERS, OriginPolicy
from portico.graphiql import graphiql_page
from portico.media_types import CONTENT_TYPES, GRAPHQL_RESPONSE, JSON, negotiate
from portico.outage import unavailable
from portico.rate_limit import Limiter, request_session
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
from schema.extensions import code_of
from services.shared import persisted_queries
from services.shared.errors import ErrorCode
from services.shared.persisted_queries import Lookup, PersistedQueryRefused

# Apollo Server's answer to a persisted-query error the client recovers from: 200 (its link
# gives up on hashing after a 400 or 500 in older versions), and never cached, as the next
# identical request will succeed.
RETRY_HEADERS = {"Cache-Control": "private, no-cache, must-revalidate"}
READABLE_BODIES = {"application/json", "multipart/form-data"}


class OneOperationChosen(SchemaExtension):
    """A document of several operations runs only the one `operationName` names (the
    GraphQL spec's GetOperation): strawberry would run the first. Checked once the document
    validated, so its errors (and the work budget over every operation) come first."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        provided = getattr(context, "_provided_operation_name", None)
        if provided is None and document is not None:
            operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
            if len(operations) > 1:
                raise GraphQLError(
                    "The document holds several operations: name the one to run in `operationName`",
                    extensions={"code": ErrorCode.BAD_REQUEST},
                )
        yield


class GraphQLSubResponse(Response):
    """The response strawberry lets resolvers shape, carrying the negotiated media type."""

    media: str = JSON


class PorticoGraphQL(GraphQL):
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(
        self,
        schema: object,
        settings: Settings,
        origins: OriginPolicy,
        limiter: Limiter | None = None,
    ) -> None:
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
        # Wired here, as the rule is the transport's: HTTP and WebSocket alike.
        schema.extensions = (*schema.extensions, OneOperationChosen)  # type: ignore[attr-defined]
        self.settings = settings
        self.origins = origins
        self.persisted = persisted_queries.store_for(
            settings.redis_url, settings.persisted_queries_cache_bytes
        )
        self.allow_list = allow_list_for(settings)
        self.limiter = limiter  # each operation over a WebSocket takes a token too

    def encode_json(self, data: object) -> str:
        """Strawberry's compact JSON, by orjson: many times faster on a page of answers.
        Text, as WebSocket clients expect text frames; non-ASCII characters are written as
        themselves, not as \\u escapes."""
        try:
            return orjson.dumps(data).decode()
        except TypeError:  # what orjson refuses (an integer over 64 bits): the stock encoder
            encoded = super().encode_json(data)
            return encoded.decode() if isinstance(encoded, bytes) else encoded

    async def get_context(  # type: ignore[override]
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        token = token_from_request(request)
        session = await request_session(request, token)
        return Context(
            request=request, response=response, settings=self.settings, session=session, token=token
        )

    async def run(  # type: ignore[override]
        self, request: Request | WebSocket, context: Any = UNSET, root_value: Any = UNSET
    ) -> Response | WebSocket:
        if isinstance(request, WebSocket):
            return await super().run(request, context, root_value)
        media = negotiate(request.headers.get("accept"))
        if media is None and not self.should_render_graphql_ide(request):
            refusal = BadRequest(
                f"Not acceptable: this server answers {GRAPHQL_RESPONSE} or {JSON}", status=406
            )
            return bad_request_response(refusal)
        request.state.graphql_media = media or JSON
        content_type = CONTENT_TYPES[media or JSON]
        # Strawberry answers its 400s as plain text: Portico's are GraphQL errors in JSON.
        try:
            response = await super().run(request, context, root_value)
        except BadRequest as exc:
            response = bad_request_response(exc, content_type)
        except HTTPException as exc:
            if exc.status_code != 400:
                raise
            response = bad_request_response(exc.reason, content_type)
        # Every answer is one viewer's (the URL of a GET is the same for all): never kept by
        # a browser cache, a proxy or a CDN.
        response.headers.setdefault("cache-control", "no-store")
        return response

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = GraphQLSubResponse()
        sub_response.status_code = None  # type: ignore[assignment]  # strawberry's "unset"
        del sub_response.headers["content-length"]
        sub_response.media = getattr(request.state, "graphql_media", JSON)
        return sub_response

    async def process_result(  # type: ignore[override]
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        response = await super().process_result(request, result)
        if is_request_error(result):
            response.pop("data", None)  # the spec: the operation never ran, so no `data`
        return response

    def create_response(  # type: ignore[override]
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        response = super().create_response(response_data, sub_response)
        media = getattr(sub_response, "media", JSON)
        response.headers["content-type"] = CONTENT_TYPES[media]
        if (
            media == GRAPHQL_RESPONSE
            and isinstance(response_data, dict)
            and "data" not in response_data
            and not sub_response.status_code
        ):
            # application/graphql-response+json: a request error is a 4xx, not a 200.
            response.status_code = 500 if _masked(response_data) else 400
        return response

    def decode_json(self, data: str | bytes) -> object:
        return decode_json(data)  # HTTP bodies and WebSocket messages alike

    def parse_json(self, data: str | bytes) -> Any:
        return parse_json_object(data)

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        if request.method == "POST":
            content_type, _ = parse_content_type(request.content_type or "")
            if content_type not in READABLE_BODIES:
                raise BadRequest(
                    "Unsupported content type: send application/json"
                    " (or multipart/form-data for uploads)",
                    status=415,
                )
        data = await super().parse_http_body(request)
        if isinstance(data, GraphQLRequestData):  # a list is a batch, which strawberry refuses
            check_request(
                data.query, data.variables, data.operation_name, data.extensions, persisted=True
            )
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
        lookup = await self.persisted_document(request_data)
        if lookup is not None:
            request_data = replace(request_data, query=lookup.document)
        method = request_adapter.method
        allowed = OperationType.from_http(method) - {OperationType.SUBSCRIPTION}
        try:
            result = await self.schema.execute(
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
            reason = exc.as_http_error_reason(method)
            if exc.operation_type is OperationType.SUBSCRIPTION:
                reason += ": subscribe over the WebSocket at /graphql"
                raise BadRequest(reason) from exc
            # A mutation over GET (the spec: 405, and say which method would do).
            refusal = BadRequest(
                reason + ": send it by POST", status=405, headers={"Allow": "POST"}
            )
            raise refusal from exc
        except MissingQueryError as exc:
            raise BadRequest(NO_QUERY) from exc
        if _nothing_done_for_outage(result):
            raise unavailable()
        if lookup is not None and lookup.register_as and not isinstance(result, PreExecutionError):
            # Parsed and validated (the limits included): only such documents are kept.
            await self.persisted.put(lookup.register_as, lookup.document)
        return result

    async def persisted_document(self, request_data: GraphQLRequestData) -> Lookup | None:
        """The document a persistedQuery extension stands for, or None without one; an
        unknown hash, a wrong hash or version, or persisted queries off, refused. In
        allow-list mode, every request's document, or its refusal."""
        try:
            digest = persisted_queries.requested_hash(request_data.extensions)
            if self.allow_list is not None:
                return self.allow_list.admit(digest, request_data.query)
            if digest is None:
                return None
            if self.settings.persisted_queries == "off":
                raise persisted_queries.not_supported()
            return await persisted_queries.resolve(self.persisted, digest, request_data.query)
        except PersistedQueryRefused as exc:
            if exc.retry:
                raise BadRequest(
                    exc.message, status=200, code=exc.code, headers=RETRY_HEADERS
                ) from exc
            status = 403 if exc.code is ErrorCode.OPERATION_NOT_ALLOWED else 400
            raise BadRequest(exc.message, status=status, code=exc.code) from exc

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


def allow_list_for(settings: Settings) -> persisted_queries.AllowList | None:
    """Allow-list mode's documents, read at start: a missing or bad manifest fails there."""
    if settings.persisted_queries != "allowlist":
        return None
    if settings.persisted_queries_manifest is None:
        raise ValueError(
            "PORTICO_PERSISTED_QUERIES=allowlist needs PORTICO_PERSISTED_QUERIES_MANIFEST"
        )
    return persisted_queries.load_manifest(settings.persisted_queries_manifest)


def _nothing_done_for_outage(result: ExecutionResult) -> bool:
    """The database was out of reach and no top-level field got through: the whole answer is
    a 503. When one did (a mutation's earlier field committed), the answer keeps it, with an
    UNAVAILABLE error on each field that failed, so a client does not redo what was done."""
    if not any(code_of(error) == ErrorCode.UNAVAILABLE for error in result.errors or ()):
        return False
    return not result.data or all(value is None for value in result.data.values())


def is_request_error(result: ExecutionResult) -> bool:
    """Refused before execution: a document that does not parse or validate (the limits
    included), or variables that do not fit (graphql-core's errors without a path)."""
    if isinstance(result, PreExecutionError):
        return True
    return (
        result.data is None and bool(result.errors) and all(e.path is None for e in result.errors)
    )


def _masked(response_data: GraphQLHTTPResponse) -> bool:
    errors: Any = response_data.get("errors") or []
    return any((e.get("extensions") or {}).get("code") == ErrorCode.INTERNAL for e in errors)


def public_origins(settings: Settings) -> list[str]:
    """The origin of PORTICO_PUBLIC_URL, where browsers load Portico's own pages from."""
    parts = urlsplit(settings.resolved_public_url)
    host = parts.netloc.rpartition("@")[2]  # never credentials in an origin
    return [f"{parts.scheme}://{host}"] if parts.scheme and host else []
