"""Which browser origins may call Portico: CORS for HTTP, and the same list for WebSocket
handshakes (portico/graphql_view.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Send
from strawberry.http.websocket_origin import normalize_allowed_origins, normalize_origin

from portico.settings import Settings

# A dev server on this machine (Vite's localhost:5173 and the like), in development only.
DEV_ORIGINS = re.compile(r"http://(localhost|127\.0\.0\.1)(:\d+)?")
# Headers that a cross-site form cannot send: one of them lets a multipart upload through
# the CSRF guard (Apollo's upload link sends the last two).
PREFLIGHT_HEADERS = (
    "authorization",
    "graphql-require-preflight",
    "apollo-require-preflight",
    "x-apollo-operation-name",
)
# What stock clients send (Apollo Client, urql, graphql-request, GraphiQL): the preflight
# headers, content-type and accept, and Apollo's client awareness.
ALLOWED_HEADERS = (
    *PREFLIGHT_HEADERS,
    "accept",
    "content-type",
    "apollographql-client-name",
    "apollographql-client-version",
)


@dataclass(frozen=True)
class OriginPolicy:
    origins: frozenset[str]  # normalized as browsers send them
    pattern: re.Pattern[str] | None

    def allows(self, origin: str) -> bool:
        normalized = normalize_origin(origin)
        if normalized is None:
            return False
        return normalized in self.origins or bool(
            self.pattern and self.pattern.fullmatch(normalized)
        )


def origin_policy(settings: Settings) -> OriginPolicy:
    """PORTICO_CORS_ORIGINS, checked at start: a "*" would let any site act with a
    visitor's credentials, so origins are always listed one by one."""
    if "*" in settings.cors_origins:
        raise ValueError("PORTICO_CORS_ORIGINS: list each origin, '*' is not accepted")
    origins = normalize_allowed_origins(settings.cors_origins)  # ValueError names a bad one
    return OriginPolicy(origins, None if settings.production else DEV_ORIGINS)


def cors_middleware(policy: OriginPolicy) -> Middleware:
    return Middleware(
        _Cors,
        policy=policy,
        allow_origins=sorted(policy.origins),
        allow_origin_regex=policy.pattern.pattern if policy.pattern else None,
        allow_methods=("GET", "POST"),
        allow_headers=ALLOWED_HEADERS,
        allow_credentials=True,
        # A page can read how long a 429 asks it to wait.
        expose_headers=("Retry-After",),
    )


class _Cors(CORSMiddleware):
    """Starlette's CORS, judging origins as the WebSocket check does, and silent towards
    origins it does not allow (Starlette would still send them Allow-Credentials and the
    preflight's Allow-Methods/-Headers)."""

    def __init__(self, app: ASGIApp, policy: OriginPolicy, **options: object) -> None:
        super().__init__(app, **options)  # type: ignore[arg-type]
        self.policy = policy

    def is_allowed_origin(self, origin: str) -> bool:
        return self.policy.allows(origin)

    def preflight_response(self, request_headers: Headers) -> Response:
        if self.is_allowed_origin(request_headers["origin"]):
            return super().preflight_response(request_headers)
        return PlainTextResponse("Disallowed CORS origin", 400, headers={"Vary": "Origin"})

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        origin = request_headers.get("origin")
        if origin is None or self.is_allowed_origin(origin):
            await super().send(message, send, request_headers)
            return
        if message["type"] == "http.response.start":
            MutableHeaders(scope=message).add_vary_header("Origin")
        await send(message)
