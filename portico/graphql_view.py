"""The strawberry ASGI view: builds each request's Context and serves Portico's GraphiQL."""

from __future__ import annotations

from urllib.parse import urlsplit

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http.base import BaseRequestProtocol
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from portico.graphiql import graphiql_page
from portico.settings import Settings
from resolvers.context import Context, token_from_request
from services.shared.sessions import resolve_session


class PorticoGraphQL(GraphQL):
    def __init__(self, schema: object, settings: Settings) -> None:
        super().__init__(
            schema,  # type: ignore[arg-type]
            graphql_ide="graphiql" if settings.graphiql_enabled else None,
            allow_queries_via_get=True,  # strawberry refuses mutations over GET itself
            multipart_uploads_enabled=True,  # uploadDocument; see parse_multipart
            # messageSynced: the current protocol and the legacy one older clients speak.
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
            # Strawberry refuses cross-origin handshakes (a page elsewhere riding on the
            # session cookie); the public URL counts as ours even behind a proxy.
            allowed_origins=public_origins(settings),
        )
        self.settings = settings

    async def get_context(  # type: ignore[override]
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        token = token_from_request(request)
        session = await resolve_session(token)
        return Context(
            request=request, response=response, settings=self.settings, session=session, token=token
        )

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        # A browser opening a link (Accept: text/html) gets GraphiQL, even with ?query=...
        return (
            self.graphql_ide is not None
            and request.method == "GET"
            and "text/html" in request.headers.get("accept", "")
        )

    async def parse_multipart(self, request: AsyncHTTPRequestAdapter) -> dict[str, str]:
        # A multipart POST is a "simple" request another site's form could send with the
        # visitor's cookie: demand what only our own clients send (CSRF guard).
        headers = request.headers
        if "authorization" not in headers and "graphql-require-preflight" not in headers:
            raise HTTPException(
                400, "Uploads need an Authorization or a GraphQL-Require-Preflight header"
            )
        return await super().parse_multipart(request)

    async def render_graphql_ide(self, request: Request) -> Response:  # type: ignore[override]
        return HTMLResponse(graphiql_page())


def public_origins(settings: Settings) -> list[str]:
    """The origin of PORTICO_PUBLIC_URL, where browsers load Portico's own pages from."""
    parts = urlsplit(settings.resolved_public_url)
    host = parts.netloc.rpartition("@")[2]  # never credentials in an origin
    return [f"{parts.scheme}://{host}"] if parts.scheme and host else []
