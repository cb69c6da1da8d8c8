"""The IDLE watcher: a second IMAP session per mailbox that waits for new mail in INBOX.

services/loops/mail_sync keeps one open between passes where the server offers IDLE: it
EXAMINEs INBOX (read only: its UIDVALIDITY and UIDNEXT tell whether mail came in since the
pass), then IDLEs until the server pushes EXISTS (new mail), the time given runs out, the loop
stops, or the connection drops. It logs in, fails fast and logs out as every ImapSession does.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from enum import Enum

import aioimaplib

from services.mail.imap import (
    IMAP_TIMEOUT,
    ImapSession,
    MailSyncError,
    folder_status,
)
from services.mail.logins import LOGOUT_SECONDS

log = logging.getLogger(__name__)

# RFC 2177: a server may drop a client idle for 30 minutes, so IDLE is renewed well before.
IDLE_MAX_SECONDS = 25 * 60

_EXISTS = re.compile(rb"^\d+ EXISTS\b", re.IGNORECASE)


class Woken(Enum):
    MAIL = "mail"  # new mail in INBOX: pass at once
    TIMEOUT = "timeout"  # an interval passed: pass anyway
    LOST = "lost"  # the IDLE connection dropped: pass at once (it tells whether the server is up)
    STOPPED = "stopped"


class IdleWatcher(ImapSession):
    """A logged-in IMAP session that EXAMINEs INBOX (read only) and IDLEs on it."""

    def __init__(self, client: aioimaplib.IMAP4, where: str) -> None:
        super().__init__(client, where)
        self.opened = time.monotonic()

    @property
    def can_idle(self) -> bool:
        return self.client.has_capability("IDLE")

    async def examine_inbox(self) -> tuple[int | None, int | None]:
        """EXAMINE INBOX: its UIDVALIDITY and UIDNEXT (None when not given)."""
        response = await self.call("EXAMINE", lambda: self.client.examine("INBOX"))
        if response.result != "OK":
            raise MailSyncError(f"{self.where} refused EXAMINE INBOX")
        # EXAMINE selects the folder read only (RFC 3501), but aioimaplib tracks only SELECT
        # and allows IDLE only in its SELECTED state.
        self.client.protocol.state = aioimaplib.SELECTED
        return folder_status(response)

    async def idle(self, seconds: float, stop: asyncio.Event, label: str) -> Woken:
        """IDLE until new mail, `seconds`, `stop`, or a dropped connection (`label` names the
        mailbox in the log)."""
        queue = self.client.protocol.idle_queue
        while not queue.empty():  # pushes left over from the last IDLE were handled by a pass
            queue.get_nowait()
        # aioimaplib's own IDLE timer is set past ours: this method decides when IDLE ends.
        idle = await self.call(
            "IDLE", lambda: self.client.idle_start(timeout=seconds + IMAP_TIMEOUT)
        )
        deadline = asyncio.get_running_loop().time() + seconds
        log.debug("%s: IDLE on INBOX for up to %g s", label, seconds)
        try:
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return Woken.TIMEOUT
                push = asyncio.ensure_future(self.client.wait_server_push(timeout=remaining))
                stopping = asyncio.ensure_future(stop.wait())
                lost = asyncio.ensure_future(self.lost.wait())
                try:
                    await asyncio.wait({push, stopping, lost}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in (push, stopping, lost):
                        if not waiter.done():
                            waiter.cancel()
                pushed = push.done() and not push.cancelled()
                timed_out = pushed and push.exception() is not None  # (read: no stray warning)
                if stop.is_set():
                    return Woken.STOPPED
                if self.lost.is_set() or idle.done():  # the server ended IDLE (or left)
                    return Woken.LOST
                if not pushed or timed_out:
                    return Woken.TIMEOUT  # wait_server_push timed out
                lines = push.result()
                if lines == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    return Woken.TIMEOUT
                if any(isinstance(line, bytes) and _EXISTS.match(line) for line in lines):
                    return Woken.MAIL
                # Flags changed, a message expunged, a keep-alive: nothing to pass over.
        finally:
            await self._end_idle(idle)

    async def _end_idle(self, idle: asyncio.Future[aioimaplib.Response]) -> None:
        if self.lost.is_set():
            return
        try:
            if self.client.has_pending_idle():
                self.client.idle_done()
            await asyncio.wait_for(asyncio.shield(idle), LOGOUT_SECONDS)
        except Exception as exc:  # a server slow to end IDLE: the connection is dropped
            log.debug("ending IDLE on %s: %r", self.where, exc)
            self.lost.set()
