"""Queuing webhook events: one WebhookDelivery row per subscribed endpoint, written in the
transaction of the change that caused the event (the outbox that mail uses), so an event is
sent if and only if its change committed. Workers send the rows (services/webhooks/delivery).

The body is fixed when queued: {"type": <event on the wire>, "timestamp": <when it
happened, ISO 8601 UTC>, "data": {...}}. Ids in `data` are the API's global ids (the ones
`node(id:)` takes), so a receiver can ask Portico for the rest.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from models import WebhookDelivery, WebhookEndpoint
from services.shared.wakeups import WEBHOOKS
from services.webhooks.events import WebhookEvent

EVENT_ID_PREFIX = "msg_"  # Standard Webhooks' examples name message ids so


def node_id(type_name: str, pk: int) -> str:
    """The API's global id of a row (relay's base64 of "Type:pk")."""
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode("ascii")


def new_event_id() -> str:
    return EVENT_ID_PREFIX + secrets.token_hex(16)


def timestamp(at: datetime) -> str:
    """ISO 8601 in UTC with a Z, to the millisecond."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def emit(
    firm_id: int,
    event: WebhookEvent,
    items: Sequence[Mapping[str, Any]],
    *,
    at: datetime | None = None,
) -> int:
    """Queues one event per item of `items` (its `data`) for every enabled endpoint of the
    firm that receives `event`; call inside the change's transaction. One SELECT when no
    endpoint wants it, one INSERT more when some do. The number of rows written."""
    if not items:
        return 0
    return await queue_for(await receivers(firm_id, event), firm_id, event, items, at=at)


async def receivers(firm_id: int, event: WebhookEvent) -> list[int]:
    """The firm's enabled endpoints that receive `event` (one SELECT)."""
    rows = await WebhookEndpoint.filter(firm_id=firm_id, enabled=True).values_list("id", "events")
    return [pk for pk, events in rows if event.value in events]


async def queue_for(
    wanted: Sequence[int],
    firm_id: int,
    event: WebhookEvent,
    items: Sequence[Mapping[str, Any]],
    *,
    at: datetime | None = None,
) -> int:
    """`emit` once the receiving endpoints are known (`receivers`)."""
    if not wanted or not items:
        return 0
    when = at or datetime.now(UTC)
    bodies = [{"type": event.value, "timestamp": timestamp(when), "data": dict(d)} for d in items]
    rows = [
        WebhookDelivery(
            firm_id=firm_id,
            endpoint_id=endpoint_id,
            event_id=new_event_id(),
            event=event.value,
            payload=body,
            next_attempt_at=when,
        )
        for body in bodies
        for endpoint_id in wanted
    ]
    if len(rows) == 1:
        await rows[0].save()
    else:
        await WebhookDelivery.bulk_create(rows, batch_size=500)
    # Not committed yet maybe: a woken worker that finds nothing looks again soon.
    WEBHOOKS.notify()
    return len(rows)
