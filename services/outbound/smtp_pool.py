"""Reusing SMTP connections: a few open sessions per server, one message after another.

A new connection per message costs a TCP (often a TLS) handshake, EHLO and a login before
each MAIL FROM; a reused one goes straight to the next transaction. Each transport
(PORTICO_SMTP_URL, and each connected mailbox's SMTP server) keeps its own SmtpPool:

- `send` takes an idle session, or opens one (`open_session`), and runs one transaction:
  MAIL FROM, RCPT TO, DATA. A session whose transaction ended with a refusal is reset (RSET)
  before it goes back; one that broke (disconnect, timeout, cancellation) is dropped.
- A reused session may have been closed by the server while it sat idle (an idle timeout).
  A session the server has closed is seen on taking it and dropped. If it breaks, or the
  server answers 421 (closing), at MAIL FROM or RCPT TO, nothing was accepted: the same
  message goes at once over a new session, within the same attempt. From DATA on, the
  server may already hold the message; such a failure is the caller's (a temporary failure
  retried later with the same Message-ID: delivery stays at least once).
- Idle sessions are kept at most IDLE_SECONDS and a session is used for at most
  REUSE_SECONDS (Postfix's connection-cache limits are of this kind), then closed with a
  brief QUIT. `prune` closes the expired ones, `aclose` all (a worker's stop).

No PIPELINING: aiosmtplib sends command by command, and the bench's server (aiosmtpd) does
not offer it; reuse already removes the round trips that cost most (docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage

import aiosmtplib

from services.outbound.wire import WireMessage, from_email

IDLE_SECONDS = 10.0
REUSE_SECONDS = 300.0
QUIT_SECONDS = 2.0
SERVER_CLOSING = 421

Outgoing = EmailMessage | WireMessage


@dataclass
class _Session:
    smtp: aiosmtplib.SMTP
    opened: float = field(default_factory=time.monotonic)
    idle_since: float = field(default_factory=time.monotonic)

    def usable(self, now: float) -> bool:
        return (
            self.smtp.is_connected
            and now - self.idle_since < IDLE_SECONDS
            and now - self.opened < REUSE_SECONDS
        )


class SmtpPool:
    """Open sessions to one SMTP server; at most `size` are kept idle between messages."""

    def __init__(self, open_session: Callable[[], Awaitable[aiosmtplib.SMTP]], size: int) -> None:
        self._open_session = open_session
        self._size = size
        self._idle: list[_Session] = []
        self.opened = 0  # sessions opened so far (tests, logs)

    async def send(self, message: Outgoing) -> None:
        """One transaction for `message`; raises what aiosmtplib raises (or OSError)."""
        session = self._take()
        if session is not None:
            try:
                wire = _wire(message, session.smtp)
                await _envelope(session.smtp, wire)
            except BaseException as exc:  # the send's timeout cancels: close it all the same
                if not isinstance(exc, Exception) or not _nothing_accepted(exc):
                    await self._done(session, exc)
                    raise
                session.smtp.close()  # closed while idle: the message goes over a new one
                session = None
        if session is None:
            session = _Session(await self._open_session())
            self.opened += 1
            try:
                wire = _wire(message, session.smtp)
                await _envelope(session.smtp, wire)
            except BaseException as exc:
                await self._done(session, exc)
                raise
        try:
            await session.smtp.data(wire.data)
        except BaseException as exc:
            await self._done(session, exc)
            raise
        await self._done(session, None)

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def prune(self) -> None:
        """Close the idle sessions past their time."""
        now = time.monotonic()
        expired = [session for session in self._idle if not session.usable(now)]
        self._idle = [session for session in self._idle if session not in expired]
        await _quit_all(expired)

    async def aclose(self) -> None:
        """Close every idle session (sessions in use close when their send ends)."""
        idle, self._idle = self._idle, []
        await _quit_all(idle)

    def _take(self) -> _Session | None:
        now = time.monotonic()
        while self._idle:
            session = self._idle.pop()  # the most recently used: least likely timed out
            if session.usable(now):
                return session
            session.smtp.close()
        return None

    async def _done(self, session: _Session, exc: BaseException | None) -> None:
        """Back to the pool if it can take another transaction, else closed."""
        smtp = session.smtp
        if isinstance(exc, aiosmtplib.SMTPResponseException) and smtp.is_connected:
            try:  # a refused transaction: the server must forget its envelope first
                await smtp.rset()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()
                return
            except BaseException:  # cancelled meanwhile
                smtp.close()
                raise
        elif exc is not None:
            smtp.close()
            return
        if not smtp.is_connected or len(self._idle) >= self._size:
            await _quit_all([session])
            return
        session.idle_since = time.monotonic()
        self._idle.append(session)


def _wire(message: Outgoing, smtp: aiosmtplib.SMTP) -> WireMessage:
    if isinstance(message, WireMessage):
        return message
    return from_email(message, eight_bit=smtp.supports_extension("8bitmime"))


async def _envelope(smtp: aiosmtplib.SMTP, wire: WireMessage) -> None:
    options = ["BODY=8BITMIME"] if wire.eight_bit else []
    await smtp.mail(wire.sender, options=options)
    await smtp.rcpt(wire.recipient)


def _nothing_accepted(exc: Exception) -> bool:
    """Whether a reused session failed in a way that means it was gone before this message:
    it dropped, or the server said it is closing the channel."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return exc.code == SERVER_CLOSING
    return isinstance(exc, aiosmtplib.SMTPServerDisconnected | ConnectionError)


async def _quit_all(sessions: list[_Session]) -> None:
    """A polite QUIT to each, briefly and side by side: a slow goodbye changes nothing."""

    async def quit_one(session: _Session) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(QUIT_SECONDS):
                await session.smtp.quit()
        session.smtp.close()

    if sessions:
        await asyncio.gather(*(quit_one(session) for session in sessions))
