"""Prometheus metrics: `/metrics` in the text format and the HTTP metrics (recorded by
portico/middleware.py's AccessLog, which times each request once for the log and for them);
the GraphQL extension and the live-subscription count are in schema/metrics.py (the
resolvers' layer may import them), deliveries and the event bus's lag in
services/shared/metrics.py (counted where they happen).

With several processes, set PROMETHEUS_MULTIPROC_DIR (an empty folder, emptied before the
processes start) in every API process's environment: prometheus-client then keeps each
process's counters in files there, and a scrape of any process adds them all up. Without it
the counters are this process's own.

Labels stay bounded: routes by their template (never the raw path), GraphQL operations as
schema/metrics.py says, and no ids or addresses anywhere. The outbox and mailbox figures are
read from the database at scrape time (two statements), so every process answers the same.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope
from tortoise import Tortoise

from models import DeliveryStatus, SyncStatus
from portico.settings import Settings

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

HTTP_REQUESTS = Counter(
    "portico_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "portico_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ["route"],
)
SQL_STATEMENTS = Histogram(
    "portico_sql_statements_per_request",
    "SQL statements sent to the database while answering an HTTP request, by route template.",
    ["route"],
    buckets=(0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233),
)


def record_request(scope: Scope, status: int, seconds: float, statements: int) -> None:
    """One HTTP request answered, by its route's template (set by the router once it
    matched: "unmatched" otherwise), so the labels are as many as the routes."""
    template = getattr(scope.get("route"), "path", None) or "unmatched"
    HTTP_REQUESTS.labels(template, _method(scope["method"]), str(status)).inc()
    HTTP_DURATION.labels(template).observe(seconds)
    SQL_STATEMENTS.labels(template).observe(statements)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _method(method: str) -> str:
    return method if method in _METHODS else "other"


def metrics_endpoint(settings: Settings) -> Any:
    """GET /metrics: open in development, behind PORTICO_METRICS_TOKEN when it is set, and
    off (404) in production without one."""
    token = settings.metrics_token.encode() if settings.metrics_token else None

    async def metrics(request: Request) -> Response:
        if token is None and settings.production:
            return JSONResponse({"error": "Not Found"}, 404)
        if token is not None and not _bearer_matches(request, token):
            return JSONResponse(
                {"error": "Unauthorized"}, 401, headers={"WWW-Authenticate": "Bearer"}
            )
        # The classic text format every Prometheus reads (the names need no escaping).
        return Response(await scrape(), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return metrics


def _bearer_matches(request: Request, token: bytes) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token)


async def scrape() -> bytes:
    """This process's metrics (every process's, in multiprocess mode) and the database's."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        counters = generate_latest(registry)
    else:
        counters = generate_latest(REGISTRY)
    database = CollectorRegistry()
    database.register(_Families(await database_families()))
    return counters + generate_latest(database)


class _Families:
    """A collector of families already read (a scrape's database figures)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


async def database_families() -> list[Metric]:
    """Outbox depth by status with the oldest QUEUED row's age, and mailboxes by sync state
    with the longest time since a successful sync: counts and extremes, never a row's id."""
    conn = Tortoise.get_connection("default")
    now = datetime.now(UTC)
    _, outbox = await conn.execute_query(
        'SELECT status, COUNT(*), MIN(created_at) FROM "outbound_email" GROUP BY status'
    )
    _, mailboxes = await conn.execute_query(
        "SELECT sync_status, COUNT(*), MIN(last_synced_at),"
        " SUM(CASE WHEN last_synced_at IS NULL THEN 1 ELSE 0 END)"
        ' FROM "mailbox" GROUP BY sync_status'
    )
    depth = GaugeMetricFamily(
        "portico_outbox_messages", "Outgoing mail in the outbox, by status.", labels=["status"]
    )
    by_status = {status: (count, oldest) for status, count, oldest in (tuple(r) for r in outbox)}
    for status in DeliveryStatus:  # every status, 0 included: an alert never sees a gap
        depth.add_metric([status.value], by_status.get(status.value, (0, None))[0])
    oldest_queued = by_status.get(DeliveryStatus.QUEUED.value, (0, None))[1]
    queued_age = GaugeMetricFamily(
        "portico_outbox_oldest_queued_age_seconds",
        "Age of the oldest QUEUED message (0: none queued).",
        value=_age(now, oldest_queued),
    )
    states = GaugeMetricFamily(
        "portico_mailboxes", "Connected mailboxes, by sync state.", labels=["state"]
    )
    never = 0
    oldest_sync = None
    counts = dict.fromkeys((state.value for state in SyncStatus), 0)
    for state, count, synced, unsynced in (tuple(row) for row in mailboxes):
        counts[state] = count
        never += int(unsynced or 0)
        synced = _datetime(synced)
        if synced is not None and (oldest_sync is None or synced < oldest_sync):
            oldest_sync = synced
    for state, count in counts.items():
        states.add_metric([state], count)
    never_synced = GaugeMetricFamily(
        "portico_mailboxes_never_synced",
        "Mailboxes without a successful sync yet.",
        value=never,
    )
    sync_age = GaugeMetricFamily(
        "portico_mailbox_oldest_sync_age_seconds",
        "Longest time since a mailbox's last successful sync, over those synced once (0: none).",
        value=_age(now, oldest_sync),
    )
    return [depth, queued_age, states, never_synced, sync_age]


def _datetime(value: object) -> datetime | None:
    """A timestamp as the driver returns it: a datetime (asyncpg) or ISO text (SQLite)."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _age(now: datetime, value: object) -> float:
    moment = _datetime(value)
    return max(0.0, (now - moment).total_seconds()) if moment is not None else 0.0


def process_exited() -> None:
    """At shutdown in multiprocess mode: this process's live gauges stop counting."""
    if MULTIPROCESS:
        mark_process_dead(os.getpid())
