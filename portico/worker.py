"""Background work: outgoing mail delivery (mailbox sync joins later).

`portico worker` runs `run_worker` until stopped; `portico serve` starts the same loop in
process unless PORTICO_INPROCESS_WORKER=0 (see portico/app.py).
"""

from __future__ import annotations

import asyncio

from portico.settings import Settings


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Deliver due mail until `stop` is set. (The pipeline lands in the next commits.)"""
    await stop.wait()
