"""Background work: outgoing mail delivery (mailbox sync joins later).

`portico worker` runs `run_worker` until stopped; `portico serve` starts the same loop in
process unless PORTICO_INPROCESS_WORKER=0 (see portico/app.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from portico.settings import Settings
from services import crypto, outbox
from services.delivery import deliver_due
from services.mail_transport import Transport, transport_for

log = logging.getLogger(__name__)

# After an in-process wake-up that found nothing (the enqueuing transaction had not committed
# yet), look again this soon rather than a whole poll later.
RECHECK_SECONDS = 0.25
# Consecutive errors (database down) stretch the wait up to this, so the log is not flooded.
MAX_ERROR_BACKOFF_SECONDS = 60.0


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Deliver due mail until `stop` is set; never ends on an error of one round.

    A configuration error (a malformed PORTICO_SMTP_URL, production without a secret key)
    ends it at once instead: no round could succeed, and retrying would only burn attempts.
    """
    try:
        transport = transport_for(settings)
        crypto.secret_key(settings)
    except Exception:
        log.exception("mail delivery cannot start")
        raise
    log.info("mail delivery started: %s", transport)
    errors = 0
    woken = False
    with outbox.wakeups() as wake:
        while not stop.is_set():
            wake.clear()  # a notify() during the round below triggers another round
            try:
                delivered = await _drain(settings, transport, stop)
                errors = 0
            except Exception:
                errors += 1
                log.exception("mail delivery round failed (%s in a row); trying again", errors)
                delivered = 0
            if errors:
                timeout = min(settings.worker_poll_seconds * 2**errors, MAX_ERROR_BACKOFF_SECONDS)
            elif woken and not delivered:
                timeout = min(RECHECK_SECONDS, settings.worker_poll_seconds)
            else:
                timeout = settings.worker_poll_seconds
            woken = await _wait(stop, wake, timeout)


async def _drain(settings: Settings, transport: Transport, stop: asyncio.Event) -> int:
    """Rounds of deliver_due until nothing is due; how many rows were claimed in all."""
    total = 0
    while not stop.is_set():
        claimed = await deliver_due(settings, transport, stop=stop)
        if not claimed:
            break
        total += claimed
    return total


async def _wait(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> bool:
    """Wait for stop, a wake-up or `seconds`; True when woken by notify()."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
    return wake.is_set() and not stop.is_set()
