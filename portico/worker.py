"""Background work: outgoing mail delivery (here), mailbox sync (services/loops/mail_sync.py),
the daily inbox digests (services/loops/digest.py) and webhooks (services/loops/webhooks.py).

`run_background` runs them side by side until stopped: `portico worker` runs it, and
`portico serve` starts it in process unless PORTICO_INPROCESS_WORKER=0 (see portico/app.py).
The loops stay independent: an error in a round of one never stops the others.
"""

from __future__ import annotations

import asyncio
import logging

from portico.settings import Settings
from services.loops.delivery import MailboxTransports, deliver_due
from services.loops.digest import run_digest_loop
from services.loops.mail_sync import run_sync_loop
from services.loops.webhooks import run_webhook_loop
from services.outbound.transport import Transport, transport_for
from services.outbound.wire import platform_sender
from services.shared import crypto
from services.shared.outage import in_own_task
from services.shared.pubsub import EventBus
from services.shared.wakeups import OUTBOX, wait_any

log = logging.getLogger(__name__)

# After an in-process wake-up that found nothing (the enqueuing transaction had not committed
# yet), look again this soon rather than a whole poll later.
RECHECK_SECONDS = 0.25
# Consecutive errors (database down) stretch the wait up to this, so the log is not flooded.
MAX_ERROR_BACKOFF_SECONDS = 60.0


async def run_background(settings: Settings, bus: EventBus, stop: asyncio.Event) -> None:
    """Mail delivery, mailbox sync, inbox digests and webhooks until `stop` is set.

    Delivery ends early only on a configuration error (see run_worker): then the others are
    stopped too and the error raised, as the process cannot do its work.
    """
    others = [
        asyncio.create_task(run_sync_loop(settings, bus, stop), name="mailbox sync"),
        asyncio.create_task(run_digest_loop(settings, stop), name="inbox digests"),
        asyncio.create_task(run_webhook_loop(settings, stop), name="webhooks"),
    ]
    for task in others:
        task.add_done_callback(_report_end)
    try:
        await run_worker(settings, stop)
    finally:
        stop.set()
        # Their errors were logged when they ended (_report_end).
        await asyncio.gather(*others, return_exceptions=True)


def _report_end(task: asyncio.Task[None]) -> None:
    """The other loops never end before `stop` unless they failed: say so at once, not at
    shutdown (mail delivery goes on)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped by an error", task.get_name(), exc_info=task.exception())


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Deliver due mail until `stop` is set; never ends on an error of one round.

    A configuration error (a malformed PORTICO_SMTP_URL, a PORTICO_MAIL_FROM address with no
    ASCII form, production without a secret key) ends it at once instead: no round could
    succeed, and retrying would only burn attempts.
    """
    try:
        transport = transport_for(settings)
        platform_sender(settings)  # a PORTICO_MAIL_FROM with no ASCII form fails every send
        crypto.secret_key(settings)
    except Exception:
        log.exception("mail delivery cannot start")
        raise
    log.info("mail delivery started: %s", transport)
    # SMTP connections stay open between messages and rounds (services/outbound/smtp_pool);
    # those idle too long are closed after each round, all of them on stop.
    mailboxes = MailboxTransports(settings)
    errors = 0
    woken = False
    try:
        with OUTBOX.listen() as wake:
            while not stop.is_set():
                wake.clear()  # a notify() during the round below triggers another round
                try:
                    round_ = _drain(settings, transport, mailboxes, stop)
                    delivered = await in_own_task(round_, "mail delivery round")
                    errors = 0
                except Exception:
                    errors += 1
                    log.exception("mail delivery round failed (%s in a row); trying again", errors)
                    delivered = 0
                if errors:
                    timeout = min(
                        settings.worker_poll_seconds * 2**errors, MAX_ERROR_BACKOFF_SECONDS
                    )
                elif woken and not delivered:
                    timeout = min(RECHECK_SECONDS, settings.worker_poll_seconds)
                else:
                    timeout = settings.worker_poll_seconds
                await wait_any(stop, timeout, wake)
                woken = wake.is_set() and not stop.is_set()
    finally:
        await asyncio.gather(transport.aclose(), mailboxes.aclose(), return_exceptions=True)


async def _drain(
    settings: Settings, transport: Transport, mailboxes: MailboxTransports, stop: asyncio.Event
) -> int:
    """Rounds of deliver_due until nothing is due; how many rows were claimed in all."""
    total = 0
    while not stop.is_set():
        claimed = await deliver_due(settings, transport, stop=stop, mailboxes=mailboxes, more=True)
        if not claimed:
            break
        total += claimed
    await transport.prune()
    await mailboxes.prune()
    return total
