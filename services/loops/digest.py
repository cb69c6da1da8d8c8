"""The daily inbox digests (services/mail/digests), run by `portico worker` and `portico serve`.

Every CHECK_SECONDS it queues the digests that are due; the digest service itself decides who
is due (the cut-off passed since their last digest) and claims each one with a conditional
UPDATE, so any number of workers may run this loop side by side.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from portico.settings import Settings
from services.mail import digests
from services.shared import backoff
from services.shared.outage import in_own_task
from services.shared.wakeups import wait_any

log = logging.getLogger(__name__)

CHECK_SECONDS = 60.0  # a digest goes out within a minute of being due
MAX_ERROR_BACKOFF_SECONDS = 600.0


async def run_digest_loop(settings: Settings, stop: asyncio.Event) -> None:
    """Queues due digests until `stop` is set; never ends on an error of one round."""
    failures = 0
    while not stop.is_set():
        try:
            await in_own_task(digests.send_due_digests(settings, datetime.now(UTC)), "digests")
            failures = 0
        except Exception:
            failures += 1
            log.exception("inbox digests failed (%s in a row); trying again", failures)
        timeout = (
            backoff.retry_delay(CHECK_SECONDS, MAX_ERROR_BACKOFF_SECONDS, failures)
            if failures
            else CHECK_SECONDS
        )
        await wait_any(stop, timeout)
