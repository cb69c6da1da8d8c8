"""How long finished webhook deliveries are kept: KEEP after they finished (their last
attempt, or when they were queued if none was made), then deleted with their attempts.
Pending ones are never deleted, whatever their age (an endpoint disabled for weeks still
owes them); a replayed one counts from its new attempts.

30 days lets a firm look back over a month of deliveries and replay any of them
(redeliverWebhook), without a busy endpoint's rows growing for ever. The webhook loop runs
`prune` every PRUNE_EVERY beside its sending; each round deletes at most BATCH rows in one
transaction, so no statement holds many locks or parameters at once.
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
    """Deletes the deliveries finished before `now - KEEP`, attempts first; how many."""
    cutoff = now - KEEP
    deleted, last = 0, 0
    while True:
        candidates = await (
            WebhookDelivery.filter(id__gt=last, status__in=FINISHED, created_at__lt=cutoff)
            .order_by("id")
            .limit(batch)
            .values_list("id", flat=True)
        )
        if not candidates:
            return deleted
        last = candidates[-1]
        async with in_transaction():
            # Locked and checked again: a redelivery may have made one pending since.
            finished = await (
                WebhookDelivery.filter(id__in=candidates, status__in=FINISHED)
                .select_for_update()
                .values_list("id", flat=True)
            )
            recent = await (
                WebhookAttempt.filter(delivery_id__in=finished, started_at__gte=cutoff)
                .distinct()
                .values_list("delivery_id", flat=True)
            )
            old = sorted(set(finished) - set(recent))
            await WebhookAttempt.filter(delivery_id__in=old).delete()
            deleted += await WebhookDelivery.filter(id__in=old).delete()
        if len(candidates) < batch:
            return deleted
