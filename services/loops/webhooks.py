"""The webhook sender (services/webhooks/delivery), run by `portico worker` and `portico serve`.

It keeps its Sender's slots full: after each POST that ends, after a wake-up (an event
queued in this process: wakeups.WEBHOOKS) and every PORTICO_WORKER_POLL_SECONDS (events
queued by other processes, retries coming due), it claims due deliveries for the free slots.
Every retention.PRUNE_EVERY a task beside it deletes deliveries finished retention.KEEP ago.
Claims are leased and taken with SKIP LOCKED, so any number of workers may run this loop
side by side. On stop, no new POST starts; those under way finish (each within its timeout).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from portico.settings import Settings
from services.shared import backoff
from services.shared.outage import in_own_task
from services.shared.wakeups import WEBHOOKS, wait_any
from services.webhooks import delivery, requests, retention

log = logging.getLogger(__name__)

RECHECK_SECONDS = 0.25  # woken but nothing found: the queuing transaction had not committed
MAX_ERROR_BACKOFF_SECONDS = 60.0


async def run_webhook_loop(settings: Settings, stop: asyncio.Event) -> None:
    """Sends due webhook deliveries until `stop` is set; never ends on an error of a claim."""
    failures = 0
    woken = False
    prune_at = time.monotonic()
    pruning: asyncio.Task[None] | None = None
    async with requests.new_client() as client:
        sender = delivery.Sender(settings, client)
        try:
            with WEBHOOKS.listen() as wake:
                while not stop.is_set():
                    wake.clear()
                    if time.monotonic() >= prune_at and (pruning is None or pruning.done()):
                        prune_at = time.monotonic() + retention.PRUNE_EVERY.total_seconds()
                        # Beside the sending, not before it: a first prune may be long.
                        pruning = asyncio.create_task(_prune(), name="webhook prune")
                    started = 0
                    try:
                        started = await in_own_task(sender.fill(), "webhook claim")
                        failures = 0
                    except Exception:
                        failures += 1
                        log.exception("webhook claim failed (%s in a row); trying again", failures)
                    if started and not failures:
                        continue  # maybe more are due: fill the slots still free
                    poll = settings.worker_poll_seconds
                    if failures:
                        timeout = backoff.retry_delay(poll, MAX_ERROR_BACKOFF_SECONDS, failures)
                    elif woken:
                        timeout = min(RECHECK_SECONDS, poll)
                    else:
                        timeout = poll
                    # A POST that ends frees a slot: claim again then.
                    ending = sender.wait_one() if sender.tasks else None
                    await wait_any(stop, timeout, wake, ending)
                    woken = wake.is_set() and not stop.is_set()
        finally:
            if pruning is not None:
                pruning.cancel()  # its batch's transaction rolls back; the next one redoes it
                await asyncio.gather(pruning, return_exceptions=True)
            await sender.finish()


async def _prune() -> None:
    try:
        deleted = await retention.prune(datetime.now(UTC))
    except Exception:  # tried again after PRUNE_EVERY; nothing depends on it
        log.exception("pruning old webhook deliveries failed")
        return
    if deleted:
        log.info("deleted %s webhook deliveries older than %s", deleted, retention.KEEP)
