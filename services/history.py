"""EMAIL SYNC history: turning EMAIL SYNC on for an address imports its earlier mail from
every connected mailbox of the firm, in the background (services/mailsync.import_history).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from portico.settings import Settings
from services.pubsub import EventBus

# In-process wake-ups: the background loop waits on one of these between rounds.
_listeners: set[asyncio.Event] = set()


def notify() -> None:
    """Wake this process's background loop (if any) to look for imports to run now."""
    for event in _listeners:
        event.set()


@contextmanager
def wakeups() -> Iterator[asyncio.Event]:
    """An event that `notify()` sets, for as long as the block runs."""
    event = asyncio.Event()
    _listeners.add(event)
    try:
        yield event
    finally:
        _listeners.discard(event)


async def run_due_imports(
    settings: Settings, bus: EventBus | None = None, stop: asyncio.Event | None = None
) -> int:
    """Runs the pending history imports this process can claim; how many it ran."""
    return 0
