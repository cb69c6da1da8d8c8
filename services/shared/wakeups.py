"""In-process wake-ups: a background loop sleeps until its next round or until woken.

Each kind of queued work has one named `Wakeups` here (OUTBOX, HISTORY, MAIL_SYNC,
WEBHOOKS): the loop that does the work waits on the event of its `listen()`, and the code
that queued the work calls its `notify()` after the transaction commits. Neither imports the
other, so the code queuing work never depends on the loops. Other processes are not woken:
their loops find the work at their next round.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager


class Wakeups:
    def __init__(self) -> None:
        self._listeners: set[asyncio.Event] = set()

    def notify(self) -> None:
        """Set the event of every `listen()` block running in this process now."""
        for event in self._listeners:
            event.set()

    @contextmanager
    def listen(self) -> Iterator[asyncio.Event]:
        """An event that `notify()` sets, for as long as the block runs."""
        event = asyncio.Event()
        self._listeners.add(event)
        try:
            yield event
        finally:
            self._listeners.discard(event)


OUTBOX = Wakeups()  # mail queued (services/outbound/outbox): the delivery worker
HISTORY = Wakeups()  # history imports queued (services/mail/history): the history task
MAIL_SYNC = Wakeups()  # a mailbox connected (services/mail/mailboxes): the sync supervisor
WEBHOOKS = Wakeups()  # webhook events queued (services/webhooks/queue): the webhook sender


async def wait_any(
    stop: asyncio.Event,
    seconds: float,
    wake: asyncio.Event | None = None,
    also: Awaitable[object] | None = None,
) -> None:
    """Until `stop` is set, `wake` (when given) is set, `also` (when given) is done, or
    `seconds` have passed."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    if also is not None:
        waiters.append(asyncio.ensure_future(also))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
