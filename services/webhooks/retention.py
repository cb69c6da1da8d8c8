"""How long finished webhook deliveries are kept: KEEP after they were queued, then deleted
with their attempts. Pending ones are never deleted, whatever their age (an endpoint
disabled for weeks still owes them).

30 days lets a firm look back over a month of deliveries and replay any of them
(redeliverWebhook), without a busy endpoint's rows growing for ever. The webhook loop
calls `prune` every PRUNE_EVERY; each call deletes in batches of BATCH so no statement holds
many locks or parameters at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tortoise.transactions import in_transaction

from models import WebhookAttempt, WebhookDelivery, WebhookDeliveryStatus

KEEP = timedelta(days=30)
PRUNE_EVERY = timedelta(hours=1)
BATCH = 1000
FINISHED = [WebhookDeliveryStatus.SUCCEEDED, WebhookDeliveryStatus.FAILED]


async def prune(now: datetime, batch: int = BATCH) -> int:
    """Deletes finished deliveries queued before `now - KEEP`, attempts first; how many."""
    deleted = 0
    while True:
        ids = (
            await WebhookDelivery.filter(status__in=FINISHED, created_at__lt=now - KEEP)
            .order_by("id")
            .limit(batch)
            .values_list("id", flat=True)
        )
        if not ids:
            return deleted
        async with in_transaction():
            # Locked and checked again: a redelivery may have made one pending since.
            finished = (
                await WebhookDelivery.filter(id__in=ids, status__in=FINISHED)
                .select_for_update()
                .values_list("id", flat=True)
            )
            await WebhookAttempt.filter(delivery_id__in=finished).delete()
            deleted += await WebhookDelivery.filter(id__in=finished).delete()
        if len(ids) < batch:
            return deleted
