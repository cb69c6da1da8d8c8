"""Claiming due webhook deliveries for one worker, fairly across endpoints.

A claim takes the oldest due PENDING rows of enabled endpoints that no worker holds, at most
PER_ENDPOINT of each endpoint (fewer when this worker already has POSTs to it under way), so
one receiver that is slow or has a backlog never holds back the other firms' events. It is
two statements: a plain SELECT picks the candidates (a window function ranks each
endpoint's rows), then SELECT … FOR UPDATE SKIP LOCKED takes those still free and a single
UPDATE sets their lease_until, which is the claim's token (services/shared/leases).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from models import WebhookDelivery, WebhookDeliveryStatus
from services.shared import sql
from services.shared.leases import lease_token

PER_ENDPOINT = 4  # POSTs under way to one endpoint, per worker

_CANDIDATES = (
    "SELECT id, endpoint_id FROM ("
    " SELECT d.id, d.endpoint_id, d.next_attempt_at, ROW_NUMBER() OVER"
    " (PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at, d.id) AS n"
    " FROM webhook_delivery d JOIN webhook_endpoint e ON e.id = d.endpoint_id"
    f" WHERE d.status = '{WebhookDeliveryStatus.PENDING.value}' AND e.enabled"
    " AND d.next_attempt_at <= ? AND (d.lease_until IS NULL OR d.lease_until < ?)"
    ") ranked WHERE n <= ? ORDER BY next_attempt_at, id LIMIT ?"
)


def _stored(value: datetime) -> object:
    """A time as the column holds it (ISO text on SQLite), so raw SQL compares like the ORM."""
    return WebhookDelivery._meta.fields_map["next_attempt_at"].to_db_value(value, None)


async def claim(
    limit: int, now: datetime, lease_seconds: float, busy: Mapping[int, int] | None = None
) -> tuple[list[WebhookDelivery], datetime]:
    """Up to `limit` due rows, leased to the caller until the returned token; `busy` counts
    the caller's POSTs under way per endpoint id."""
    busy = busy or {}
    at = _stored(now)
    candidates = await sql.select(_CANDIDATES, [at, at, PER_ENDPOINT, limit * PER_ENDPOINT])
    taken: Counter[int] = Counter(busy)
    chosen: list[int] = []
    for pk, endpoint_id in candidates:
        if len(chosen) < limit and taken[endpoint_id] < PER_ENDPOINT:
            taken[endpoint_id] += 1
            chosen.append(pk)
    lease = lease_token(now, lease_seconds)
    if not chosen:
        return [], lease
    async with in_transaction():
        rows = (
            await WebhookDelivery.filter(
                id__in=chosen, status=WebhookDeliveryStatus.PENDING, next_attempt_at__lte=now
            )
            .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
            .order_by("next_attempt_at", "id")
            .select_for_update(skip_locked=True)
        )
        if rows:
            await WebhookDelivery.filter(id__in=[r.pk for r in rows]).update(lease_until=lease)
    return list(rows), lease


async def put_back(row: WebhookDelivery, lease: datetime, due: datetime) -> None:
    """Hands a claimed row back unattempted (nothing was sent), due again at `due`."""
    await WebhookDelivery.filter(id=row.pk, lease_until=lease).update(
        lease_until=None, next_attempt_at=due
    )
