"""Delivering the outbox: claim due rows under a lease, send each, record the outcome.

Several workers (in several processes, on PostgreSQL) share the queue:
- a claim is one short transaction: SELECT … FOR UPDATE SKIP LOCKED picks due rows no other
  worker is claiming, and sets their lease_until. (On SQLite SKIP LOCKED is a no-op, and one
  process's transactions are serialised: one process only, as runtime.md says.)
- the sending happens outside any transaction, so a slow SMTP server holds no locks.
- lease_until doubles as the claim's token: it carries random microseconds, and every outcome
  is written only WHERE lease_until still equals this claim's value. A worker that outlived
  its lease (its row reclaimed by another) changes nothing.
- a worker that dies leaves its lease to expire; then any worker sends the row again, with
  the same Message-ID, so the recipient's software can recognise the repeat. Delivery is
  at least once: exactly once cannot be had from SMTP, which has no idempotency key.

A claim's rows are sent by up to PORTICO_MAIL_SEND_CONCURRENCY runners at once, over SMTP
connections kept open between messages (services/outbound/smtp_pool); the worker claims the
next rows while the last round of a claim's sends runs (`more`). The platform's mail
is written as bytes directly (services/outbound/wire). SENT outcomes of the platform's mail
are written FLUSH_ROWS at a time (or once the oldest has waited FLUSH_SECONDS, by a timer
that does not wait for the runners' next sends, and at the end of the claim), as one
UPDATE … WHERE id IN (…) AND lease_until = the claim's token; failures, and replies (which
are then filed), one row at a time. A send starts at most half a lease after the claim, ends
within the SMTP timeout (a quarter of the lease at most), and its SENT is written within
FLUSH_SECONDS (an eighth of the lease at most) after: all before the lease ends, so in
normal operation each message goes once. A crash between a send and its batch's UPDATE (up
to FLUSH_SECONDS of sends) sends those messages again after the lease (at least once, as
above).

Stopping (SIGTERM sets `stop`): the rows of the claim not yet started are handed back at
once (lease cleared, due now, no attempt counted); the sends under way finish, each within
the SMTP timeout (at most a quarter of the lease), their outcomes are written, and then the
worker closes its connections. A runner's error (the database, most likely) ends the round
in the same way, then fails it: the other runners are not cancelled mid-send, since a
message the server may have kept, its row still leased, would go out again.

The classic duplicate: a server that takes the whole DATA and drops the connection (or
times out) before its final reply may have kept the message. Portico cannot know, so that
is a temporary failure: the row is retried after the backoff with the same Message-ID, and
the recipient may see it twice. A failure before DATA (the connection gone at MAIL FROM or
RCPT TO, or 421) on a reused connection is certain to have delivered nothing: the message
goes at once over a new connection, in the same attempt.

Retries: a doubling wait from PORTICO_MAIL_RETRY_BASE_SECONDS up to
PORTICO_MAIL_RETRY_MAX_SECONDS, ±20 % (services/shared/backoff), for
PORTICO_MAIL_MAX_ATTEMPTS attempts; the defaults (30 s, 4 h, 39) keep trying for 4 to 5
days, as RFC 5321 asks, then FAILED with the last reason. Each attempt's outcome is counted
for /metrics (services/shared/metrics: sent, retry, failed).

Replies from Inbox+ (rows with a mailbox) go through that mailbox's own SMTP server, logged
in as the mailbox, with its address as From; every other row through the one transport of
PORTICO_SMTP_URL (or .eml files), as before. Retries and failures are the same for both.
After a reply is recorded SENT, the very bytes sent are filed in the mailbox's Sent folder
(IMAP APPEND) and filed_at is set; a filing failure is logged and leaves filed_at empty,
and never sends the mail again. Filing is not retried later: the reply is stored in Portico
and was delivered, and a second attempt could leave two copies in the folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from cryptography.fernet import InvalidToken
from tortoise.expressions import F, Q
from tortoise.transactions import in_transaction

from models import DeliveryStatus, Mailbox, OutboundEmail
from portico.settings import Settings
from services.mail import replies
from services.mail.mailboxes import mailbox_password
from services.outbound.failures import internal_fault
from services.outbound.outbox import decrypt_bodies
from services.outbound.transport import (
    MailboxSmtpTransport,
    PermanentFailure,
    TemporaryFailure,
    Transport,
    build_message,
    outgoing_message,
)
from services.shared import backoff, metrics
from services.shared.leases import lease_token
from services.webhooks import emit

log = logging.getLogger(__name__)

# A send starts only in the first half of the lease; the SMTP timeout (60 s by default) must
# stay below the other half, so a send never outlives the lease that protects it.
SEND_WINDOW = 0.5
CLAIM_ROWS = 50  # at least, per claim (claim_size)
FLUSH_ROWS = 25  # SENT outcomes written together, or once the oldest waited FLUSH_SECONDS
FLUSH_SECONDS = 1.0


def retry_delay(settings: Settings, attempts: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after the `attempts`-th failed attempt (services/shared/backoff).

    With the defaults (30 s, 4 h, 39 attempts): 30 s, 1 min, 2 min, … 4 h, then every 4 h:
    from the first try to FAILED at least 4 days with the shortest jitter, about 5 at most.
    """
    return backoff.retry_delay(
        settings.mail_retry_base_seconds, settings.mail_retry_max_seconds, attempts, rng
    )


@dataclass(frozen=True)
class Claim:
    rows: list[OutboundEmail]
    lease: datetime
    started: float  # loop time when the claim was made: the lease runs from then (at least)


async def claim_due(settings: Settings, *, limit: int, now: datetime) -> Claim:
    """Lease up to `limit` due QUEUED rows to this caller: urgent ones first (a sign-in
    code before a mass mailing's thousands, outbox.URGENT_KINDS), then oldest due first. The
    order is the index (status, priority, next_attempt_at, id)'s own: no sort."""
    started = asyncio.get_running_loop().time()
    lease = lease_token(now, settings.mail_lease_seconds)  # this claim's own (module doc)
    async with in_transaction():
        rows = (
            await OutboundEmail.filter(status=DeliveryStatus.QUEUED, next_attempt_at__lte=now)
            .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
            .order_by("priority", "next_attempt_at", "id")
            .limit(limit)
            .select_for_update(skip_locked=True)
        )
        if rows:
            await OutboundEmail.filter(id__in=[row.pk for row in rows]).update(lease_until=lease)
    for row in rows:
        row.lease_until = lease
    return Claim(list(rows), lease, started)


def claim_size(settings: Settings) -> int:
    """Rows per claim: enough to keep every concurrent send busy for several messages."""
    return max(CLAIM_ROWS, 4 * settings.mail_send_concurrency)


async def deliver_due(
    settings: Settings,
    transport: Transport,
    *,
    limit: int | None = None,
    now: datetime | None = None,
    stop: asyncio.Event | None = None,
    mailboxes: MailboxTransports | None = None,
    more: bool = False,
) -> int:
    """Claim due mail and send it, up to PORTICO_MAIL_SEND_CONCURRENCY at once; the number
    of rows claimed (0: nothing was due).

    `more` (the worker) keeps claiming while mail is due: the next claim is made while the
    last sends of the one before are under way, so the sends never wait for it. `now` fixes
    the clock (tests); `stop` ends early: the rows not yet started go back to the queue at
    once, the sends under way finish (each within the SMTP timeout). `mailboxes` keeps the
    connected mailboxes' connections between calls (the worker's); without it they are
    closed on return.
    """
    limit = limit or claim_size(settings)
    claim = await claim_due(settings, limit=limit, now=now or _utcnow())
    if not claim.rows:
        return 0
    own = mailboxes is None
    transports = mailboxes if mailboxes is not None else MailboxTransports(settings)
    sending = _Sending(settings, transport, transports, limit if more else 0, now, stop)
    try:
        await sending.add(claim)
        await sending.run()
    finally:
        if own:
            await transports.aclose()
    return sending.claimed


class MailboxTransports:
    """The transports of connected mailboxes' SMTP servers, one per server and login, kept
    between rounds so that their connections are reused (a worker holds one)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._transports: dict[tuple[str, int, bool, str, str], MailboxSmtpTransport] = {}

    def get(self, mailbox: Mailbox, password: str) -> MailboxSmtpTransport:
        key = (mailbox.smtp_host, mailbox.smtp_port, mailbox.smtp_tls, mailbox.username, password)
        transport = self._transports.get(key)
        if transport is None:
            transport = MailboxSmtpTransport.for_server(*key, self._settings)
            self._transports[key] = transport
        return transport

    async def prune(self) -> None:
        """Close connections idle too long; forget transports that hold none."""
        for key, transport in list(self._transports.items()):
            await transport.prune()
            if not transport.pool.idle:
                del self._transports[key]

    async def aclose(self) -> None:
        transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            await transport.aclose()


class _Sending:
    """Claimed rows sent by up to `mail_send_concurrency` runners; SENT outcomes of the
    platform's mail written FLUSH_ROWS at a time (one UPDATE per claim, under its lease).
    With `refill` (a claim size), a runner claims more once only a round of sends is left."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        mailboxes: MailboxTransports,
        refill: int,
        now: datetime | None,
        stop: asyncio.Event | None,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.mailboxes = mailboxes
        self.refill = refill
        self.now = now
        self.stop = stop
        self.loop = asyncio.get_running_loop()
        self.routes: _Routes = {}
        self.pending: deque[OutboundEmail] = deque()  # each row's lease_until is its token
        self.start_by: dict[int, float] = {}  # row id: the latest loop time to start its send
        self.claimed = 0
        self.claiming = False
        self.claim_done = asyncio.Event()
        self.sent: list[OutboundEmail] = []  # sent, their outcome not yet written
        self.first_sent = 0.0  # when the first of them was sent (loop time)
        # Written at the latest this long after the first of them was sent, whatever the
        # runners are doing (a send may take up to the SMTP timeout): see _flush_on_time.
        self.flush_after = min(FLUSH_SECONDS, settings.mail_lease_seconds / 8)
        self.wake = asyncio.Event()  # a first row in `sent`, or the end of the sending
        self.done = False
        self.failed = False  # a runner failed (the database, most likely): the round ends

    async def add(self, claim: Claim) -> None:
        self.routes.update(await _mailbox_routes(self.settings, claim.rows, self.mailboxes))
        # Sends start only in the first part of the lease (SEND_WINDOW), counted from before
        # the claim (the lease token is at least mail_lease_seconds after that).
        start_by = claim.started + self.settings.mail_lease_seconds * SEND_WINDOW
        for row in claim.rows:
            self.start_by[row.pk] = start_by
        self.pending.extend(claim.rows)
        self.claimed += len(claim.rows)
        if len(claim.rows) < self.refill or self._stopping():
            self.refill = 0  # the queue is drained (for now): no more claims

    async def run(self) -> None:
        watcher = asyncio.create_task(self._release_on_stop()) if self.stop else None
        timer = asyncio.create_task(self._flush_on_time())
        try:
            # Not a TaskGroup: one runner's error must not cancel the others mid-send (a
            # message the server may have kept, its row still leased: sent again later).
            # They finish their sends and start no more (`failed`); then the round fails.
            runners = [self._runner() for _ in range(self.settings.mail_send_concurrency)]
            outcomes = await asyncio.gather(*runners, return_exceptions=True)
            errors = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
            if errors:
                await self._try_hand_back()  # when every runner failed, none did
                raise ExceptionGroup("mail delivery runners failed", errors)
        finally:
            self.done = True
            self.wake.set()
            await asyncio.gather(timer, return_exceptions=True)  # a flush under way ends
            if watcher is not None:
                if not self._stopping():
                    watcher.cancel()  # still waiting for a stop: nothing under way
                # On a stop, its hand-back UPDATE may be under way: cancelled, it would leave
                # the unstarted rows leased for the whole lease.
                await asyncio.gather(watcher, return_exceptions=True)
            await self._flush()

    def _stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    async def _runner(self) -> None:
        try:
            await self._send_pending()
        except Exception:
            self.failed = True  # the other runners finish their sends and start no more
            raise

    async def _send_pending(self) -> None:
        concurrency = self.settings.mail_send_concurrency
        while True:
            if self._stopping() or self.failed:
                await self._hand_back(list(self.pending))
                return
            if self.refill and not self.claiming and len(self.pending) <= concurrency:
                await self._claim_more()
                continue  # stop may have come meanwhile
            if not self.pending:
                if not self.claiming:
                    return
                await self.claim_done.wait()  # another runner is claiming more
                continue
            row = self.pending.popleft()
            if self.loop.time() > self.start_by.pop(row.pk):
                # Too late to start within this claim's lease: back to the queue with the
                # rest of the claim (a slow server); another round claims them afresh.
                late = [row, *(r for r in self.pending if r.lease_until == row.lease_until)]
                for other in late[1:]:
                    self.pending.remove(other)
                await self._hand_back(late)
                continue
            if self._flush_due():  # before a send, which may last the SMTP timeout
                await self._flush()
            await self._deliver_one(row)
            if len(self.sent) >= FLUSH_ROWS:
                await self._flush()

    def _flush_due(self) -> bool:
        return bool(self.sent) and self.loop.time() - self.first_sent >= self.flush_after

    async def _flush_on_time(self) -> None:
        """Writes the SENT outcomes once the oldest has waited `flush_after`, while the
        runners are busy with their next sends: a SENT written only after the next send
        could come after the lease, and another worker would send the message again."""
        while not self.done:
            wait = None
            if self.sent:
                wait = self.first_sent + self.flush_after - self.loop.time()
                if wait <= 0:
                    try:
                        await self._flush()
                    except Exception:  # kept: tried again after a while, and at the end
                        log.exception("could not record sent mail")
                        wait = self.flush_after
                    else:
                        continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.wake.wait()

    async def _claim_more(self) -> None:
        self.claiming = True
        self.claim_done.clear()
        try:
            claim = await claim_due(self.settings, limit=self.refill, now=self.now or _utcnow())
            await self.add(claim)
        finally:
            self.claiming = False
            self.claim_done.set()

    async def _release_on_stop(self) -> None:
        assert self.stop is not None
        await self.stop.wait()
        await self._try_hand_back()

    async def _try_hand_back(self) -> None:
        """Hands back the rows not started; if the database refuses, their lease runs out."""
        try:
            await self._hand_back(list(self.pending))
        except Exception:
            log.exception("could not hand back the mail not yet sent")

    async def _hand_back(self, rows: list[OutboundEmail]) -> None:
        """Hand rows not yet started back at once (the other rows go on)."""
        for row in rows:
            self.start_by.pop(row.pk, None)
            if row in self.pending:
                self.pending.remove(row)
        for lease, group in _by_lease(rows).items():
            await _release(group, lease)

    async def _flush(self) -> None:
        rows, self.sent, first_sent = self.sent, [], self.first_sent
        groups = list(_by_lease(rows).items())
        for done, (lease, group) in enumerate(groups):
            try:
                await _record_sent(group, lease, self.now or _utcnow())
            except BaseException:
                # Kept for the next flush (the final one at least): dropped, they would stay
                # leased, and go out again once the lease ran out.
                kept = [row for _, rest in groups[done:] for row in rest]
                # Older than any row sent since: the next flush is due by theirs.
                self.first_sent = min(first_sent, self.first_sent) if self.sent else first_sent
                self.sent[:0] = kept
                raise

    async def _deliver_one(self, row: OutboundEmail) -> None:
        settings, now = self.settings, self.now
        lease = row.lease_until
        assert lease is not None  # set by claim_due: this claim's token
        route: _Route | None = None
        try:
            try:
                bodies = decrypt_bodies(settings, row)
            except InvalidToken:
                # Only a different secret key does this; restoring the key makes it work.
                raise TemporaryFailure(
                    "cannot decrypt the message: the secret key differs from the one that queued it"
                ) from None
            route = _route_of(row, self.routes)
            if route is None:
                await self.transport.send(outgoing_message(row, bodies, settings))
            else:
                message = build_message(row, bodies, settings, sender=route.mailbox.address)
                await route.transport.send(message)
        except PermanentFailure as exc:
            log.warning("mail %s to %s failed permanently: %s", row.pk, row.to_address, exc)
            metrics.delivery(metrics.FAILED)
            await _record_failed(row, lease, str(exc))
        except TemporaryFailure as exc:
            await _retry_later(settings, row, lease, str(exc), now)
        except Exception as exc:  # a bug must not stop the queue: count it as an attempt
            log.exception("mail %s: unexpected error while sending", row.pk)
            await _retry_later(settings, row, lease, internal_fault(exc), now)
        else:
            log.info("mail %s sent to %s", row.pk, row.to_address)
            metrics.delivery(metrics.SENT)
            if route is None:
                if not self.sent:
                    self.first_sent = self.loop.time()
                    self.wake.set()
                self.sent.append(row)
                return
            recorded = await _record(
                row, lease, status=DeliveryStatus.SENT, sent_at=now or _utcnow()
            )
            if self._flush_due():  # before filing, which may take a while
                await self._flush()
            if recorded:  # a lost lease: the new holder sends and files
                await _file(settings, row, route, message)


@dataclass(frozen=True)
class _Route:
    """How the rows of one connected mailbox go out (one per mailbox and round)."""

    mailbox: Mailbox
    transport: Transport


# A mailbox's route, or the reason nothing can go through it this round.
_Routes = dict[int, _Route | str]


async def _mailbox_routes(
    settings: Settings, rows: list[OutboundEmail], transports: MailboxTransports
) -> _Routes:
    """The mailboxes of the claimed replies, with their transports (no query without any)."""
    wanted = {row.mailbox_id for row in rows if row.mailbox_id is not None}
    if not wanted:
        return {}
    routes: _Routes = {}
    for mailbox in await Mailbox.filter(id__in=wanted):
        try:
            password = mailbox_password(settings, mailbox)
        except (InvalidToken, UnicodeError):
            # A changed PORTICO_SECRET_KEY; restoring it (or reconnecting) makes it work.
            routes[mailbox.pk] = "cannot decrypt the mailbox password: connect the mailbox again"
            continue
        routes[mailbox.pk] = _Route(mailbox, transports.get(mailbox, password))
    return routes


def _route_of(row: OutboundEmail, routes: _Routes) -> _Route | None:
    """The mailbox route of a reply; None for the platform's own mail."""
    if row.mailbox_id is None and row.kind != replies.REPLY_KIND:
        return None
    route = routes.get(row.mailbox_id) if row.mailbox_id is not None else None
    if isinstance(route, str):
        raise TemporaryFailure(route)
    if route is None or route.mailbox.firm_id != row.firm_id:
        # The mailbox was disconnected after the reply was queued: never send it as Portico.
        raise PermanentFailure("the mailbox this reply was to be sent through is not connected")
    return route


async def _file(
    settings: Settings, row: OutboundEmail, route: _Route, message: EmailMessage
) -> None:
    """Files the sent reply in the mailbox's Sent folder; a failure is only logged."""
    if not await replies.file_sent_copy(settings, route.mailbox, message):
        return
    try:
        await OutboundEmail.filter(id=row.pk).update(filed_at=_utcnow())
    except Exception:  # the mail is sent and filed; only the note of it is missing
        log.exception("mail %s: filed, but filed_at could not be set", row.pk)
    else:
        log.info("mail %s filed in the Sent folder of mailbox %s", row.pk, route.mailbox.pk)


async def _retry_later(
    settings: Settings, row: OutboundEmail, lease: datetime, reason: str, now: datetime | None
) -> None:
    attempts = row.attempts + 1
    if attempts >= settings.mail_max_attempts:
        log.warning("mail %s failed after %s attempts: %s", row.pk, attempts, reason)
        metrics.delivery(metrics.FAILED)
        await _record_failed(row, lease, reason)
        return
    delay = retry_delay(settings, attempts)
    metrics.delivery(metrics.RETRY)
    log.info("mail %s: attempt %s failed (%s); retry in %.0f s", row.pk, attempts, reason, delay)
    await _record(
        row,
        lease,
        last_error=reason,
        next_attempt_at=(now or _utcnow()) + timedelta(seconds=delay),
    )


async def _record(row: OutboundEmail, lease: datetime, **changes: Any) -> bool:
    """Count the attempt and apply `changes`, only if this claim still holds the row."""
    updated = await OutboundEmail.filter(
        id=row.pk, status=DeliveryStatus.QUEUED, lease_until=lease
    ).update(attempts=row.attempts + 1, lease_until=None, **changes)
    if not updated:
        log.warning("mail %s: lease lost before the outcome was recorded", row.pk)
    return bool(updated)


async def _record_failed(row: OutboundEmail, lease: datetime, reason: str) -> None:
    """FAILED for good, and the delivery.failed webhook of a client's mail, together."""
    async with in_transaction():
        if await _record(row, lease, status=DeliveryStatus.FAILED, last_error=reason):
            await emit.delivery_failed(row, reason)


def _by_lease(rows: list[OutboundEmail]) -> dict[datetime, list[OutboundEmail]]:
    groups: dict[datetime, list[OutboundEmail]] = {}
    for row in rows:
        assert row.lease_until is not None
        groups.setdefault(row.lease_until, []).append(row)
    return groups


async def _record_sent(rows: list[OutboundEmail], lease: datetime, sent_at: datetime) -> None:
    """SENT for every row still held by this claim: one UPDATE for the lot."""
    updated = await OutboundEmail.filter(
        id__in=[row.pk for row in rows], status=DeliveryStatus.QUEUED, lease_until=lease
    ).update(
        status=DeliveryStatus.SENT, attempts=F("attempts") + 1, lease_until=None, sent_at=sent_at
    )
    if updated < len(rows):
        log.warning(
            "%s of %s sent mails: lease lost before SENT was recorded",
            len(rows) - updated,
            len(rows),
        )


async def _release(rows: list[OutboundEmail], lease: datetime) -> None:
    """Hand rows back unattempted: due at once for any worker."""
    await OutboundEmail.filter(
        id__in=[row.pk for row in rows], status=DeliveryStatus.QUEUED, lease_until=lease
    ).update(lease_until=None)


def _utcnow() -> datetime:
    return datetime.now(UTC)
