"""The Starlette application: routes, middleware, and the database lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from portico import db, heap, metrics
from portico.client_address import ClientAddressHeader
from portico.cors import cors_middleware, origin_policy
from portico.downloads import download_document, download_export
from portico.graphiql import graphiql_routes
from portico.graphql_view import PorticoGraphQL
from portico.logs import configure_logging
from portico.middleware import AccessLog, BodyLimit
from portico.outage import DatabaseOutage
from portico.pages import link_pages
from portico.rate_limit import RateLimit, limiter_for
from portico.readiness import readyz_endpoint
from portico.settings import Settings
from portico.worker import run_background
from resolvers.root import build_schema
from services.outbound.transport import transport_for
from services.shared import crypto
from services.shared.pubsub import bus_for


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def client_address_middleware(settings: Settings) -> list[Middleware]:
    header = settings.client_address_header
    return [Middleware(ClientAddressHeader, header=header)] if header else []


def create_app(settings: Settings | None = None, manage_db: bool = True) -> Starlette:
    """The ASGI app. With manage_db the lifespan opens and closes the database."""
    settings = settings or Settings()
    configure_logging()
    # Fail at start, not at the first mail: a bad SMTP URL, or production without a key.
    transport_for(settings)
    crypto.secret_key(settings)
    origins = origin_policy(settings)  # a bad PORTICO_CORS_ORIGINS fails here, at start
    limiter = limiter_for(settings)
    graphql = PorticoGraphQL(build_schema(settings), settings, origins, limiter)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_db:
            await db.init_db(settings.resolved_database_url)
        # Live events (messageSynced): this process only, or every process through Redis.
        bus = bus_for(settings)
        app.state.bus = bus
        stop = asyncio.Event()
        # The embedded default delivers mail and syncs mailboxes in this process; separate
        # workers (`portico worker`) turn it off.
        worker = (
            asyncio.create_task(run_background(settings, bus, stop))
            if manage_db and settings.inprocess_worker
            else None
        )
        if manage_db:  # a server process (tests build many apps in one process: not theirs)
            heap.settle()
        try:
            yield
        finally:
            stop.set()
            if worker is not None:
                await worker
            try:
                await bus.close()
            finally:
                await graphql.persisted.aclose()  # the Redis store's connections
                if limiter is not None:
                    await limiter.buckets.aclose()
                if manage_db:
                    await db.close_db()
                    metrics.process_exited()

    routes = [
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        *link_pages(settings),
        Route("/documents/{id}", download_document(settings)),
        Route("/exports/{token}", download_export(settings)),
        Route("/healthz", healthz),
        Route("/readyz", readyz_endpoint(settings)),
        Route("/metrics", metrics.metrics_endpoint(settings)),
        *(graphiql_routes() if settings.graphiql_enabled else []),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            *client_address_middleware(settings),
            Middleware(AccessLog),
            # Outside BodyLimit and RateLimit: a 413 or a 429 carries the CORS headers too, so
            # browsers can read it (preflights are answered here, never counted).
            cors_middleware(origins),
            Middleware(DatabaseOutage),  # outside RateLimit: its session lookup may meet it
            *([Middleware(RateLimit, limiter=limiter, routes=routes)] if limiter else []),
            Middleware(
                BodyLimit,
                max_bytes=settings.max_body_bytes,
                max_upload_bytes=settings.max_upload_bytes,
            ),
        ],
        lifespan=lifespan,
    )
