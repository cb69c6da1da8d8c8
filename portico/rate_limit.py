"""Rate limits: one token bucket per client address for requests without a live session, one
per signed-in person for the rest (services/shared/token_buckets.py). Over its limit a
request is answered 429 with Retry-After before anything runs; a WebSocket handshake gets the
same answer where the server lets an app answer a handshake (uvicorn does)."""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Sequence

from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from models.firms import Session
from portico.refusals import send_retry_later
from portico.settings import Settings
from resolvers.context import token_from_request
from services.shared.errors import ErrorCode
from services.shared.sessions import resolve_session
from services.shared.token_buckets import BucketPolicy, Buckets, MemoryBuckets, RedisBuckets
from services.shared.tokens import hash_token

# Probes and scrapes come from the platform, often, and must never be refused.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# scope["state"] key of the (token, session) the limiter looked up, so the request's own
# lookup is not made twice (SQL counts per request stay as they were).
SESSION_LOOKUP = "portico.session_lookup"
# Tokens that named a live session lately: their next lookups are not charged to the address.
VERIFIED_SECONDS = 60.0
VERIFIED_MAX = 10_000


def limiter_for(settings: Settings) -> Limiter | None:
    """None with limits off; else buckets shared by every process through Redis when it is
    configured, this process's own otherwise."""
    if not settings.rate_limit_enabled:
        return None
    if settings.redis_url is not None:
        return Limiter(settings, RedisBuckets(settings.redis_url))
    return Limiter(settings, MemoryBuckets())


class Limiter:
    """The buckets and the two policies: which bucket a request or a WebSocket operation
    takes its token from, and how long it must wait when there is none."""

    def __init__(self, settings: Settings, buckets: Buckets) -> None:
        self.buckets = buckets
        self.anonymous = BucketPolicy(
            settings.rate_limit_anonymous_per_second, settings.rate_limit_anonymous_burst
        )
        self.signed_in = BucketPolicy(
            settings.rate_limit_session_per_second, settings.rate_limit_session_burst
        )
        # Looking a token up is a database query: a token not seen live lately pays for it
        # from its address's lookup bucket, so a flood of made-up tokens stays off the database.
        self.lookups = self.signed_in
        self._verified: OrderedDict[str, float] = OrderedDict()

    async def request_wait(self, scope: Scope) -> float:
        """An HTTP request or a WebSocket handshake. A signed-in person's bucket; anything
        else (no token, an unknown or ended one) counts against the client address, so
        made-up tokens buy no fresh buckets."""
        token = token_from_request(HTTPConnection(scope))
        session = None
        if token:
            digest = hash_token(token)
            if not self._verified_lately(digest):
                wait = await self.buckets.take("l:" + address_key(scope), self.lookups)
                if wait > 0:
                    return wait
            session = await resolve_session(token)
            scope.setdefault("state", {})[SESSION_LOOKUP] = (token, session)
            if session is not None:
                self._verified[digest] = time.monotonic()
                self._verified.move_to_end(digest)
                if len(self._verified) > VERIFIED_MAX:
                    self._verified.popitem(last=False)
        return await self.session_wait(session, scope)

    def _verified_lately(self, digest: str) -> bool:
        seen = self._verified.get(digest)
        return seen is not None and time.monotonic() - seen < VERIFIED_SECONDS

    async def session_wait(self, session: Session | None, scope: Scope) -> float:
        """A request of `session` (None: anonymous, from the scope's client address)."""
        if session is not None:
            # The person, not the session: signing in again buys no fresh bucket.
            return await self.buckets.take(person_key(session), self.signed_in)
        return await self.buckets.take("a:" + address_key(scope), self.anonymous)


def person_key(session: Session) -> str:
    if session.staff_member_id is not None:
        return f"u:staff:{session.staff_member_id}"
    return f"u:client:{session.portal_user_id}"


class RateLimit:
    """Refuses a request over its limit before anything runs (probes and scrapes exempt)."""

    def __init__(self, app: ASGIApp, limiter: Limiter, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.limiter = limiter
        self.routes = routes  # to name a refused request's route, as the router would

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        wait = await self.limiter.request_wait(scope)
        if wait > 0:
            self._name_route(scope)
            await _refuse(scope, receive, send, wait)
            return
        await self.app(scope, receive, send)

    def _name_route(self, scope: Scope) -> None:
        """The route the router would have matched (the metrics label refusals by it)."""
        for route in self.routes:
            if route.matches(scope)[0] is Match.FULL:
                scope["route"] = route
                return


async def request_session(connection: HTTPConnection, token: str | None) -> Session | None:
    """The live session of `token`: the one the limiter looked up for this request, if it did."""
    looked_up = connection.scope.get("state", {}).get(SESSION_LOOKUP)
    if looked_up is not None and looked_up[0] == token:
        return looked_up[1]
    return await resolve_session(token)


def address_key(scope: Scope) -> str:
    """The client address, an IPv6 one as its /64 (one customer's network: a host there has
    billions of addresses to rotate through)."""
    client = scope.get("client")
    host = client[0] if client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:100] or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def retry_seconds(wait: float) -> int:
    """Retry-After: whole seconds, at least one."""
    return max(1, math.ceil(wait))


def refusal_message(seconds: int) -> str:
    return f"Too many requests: retry in {seconds} s"


async def _refuse(scope: Scope, receive: Receive, send: Send, wait: float) -> None:
    seconds = retry_seconds(wait)
    if scope["type"] == "websocket":
        await receive()  # websocket.connect, before the handshake is answered
    message = refusal_message(seconds)
    await send_retry_later(scope, send, 429, message, ErrorCode.RATE_LIMITED, seconds)
