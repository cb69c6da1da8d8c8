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
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from cryptography.fernet import InvalidToken
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from models import DeliveryStatus, Mailbox, OutboundEmail
from portico.settings import Settings
from services.mail import replies
from services.mail.mailboxes import mailbox_password
from services.outbound.outbox import decrypt_bodies
from services.outbound.transport import (
    MailboxSmtpTransport,
    PermanentFailure,
    TemporaryFailure,
    Transport,
    build_message,
)
from services.shared import backoff
from services.shared.leases import lease_token

log = logging.getLogger(__name__)

# A send starts only in the first half of the lease; the SMTP timeout (60 s by default) must
# stay below the other half, so a send never outlives the lease that protects it.
SEND_WINDOW = 0.5


def retry_delay(settings: Settings, attempts: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after the `attempts`-th failed attempt (services/shared/backoff).

    With the defaults (30 s, 3600 s, 12 attempts): 30 s, 1 min, 2 min, … 1 h, about five
    hours from the first try to FAILED.
    """
    return backoff.retry_delay(
        settings.mail_retry_base_seconds, settings.mail_retry_max_seconds, attempts, rng
    )


@dataclass(frozen=True)
class Claim:
    rows: list[OutboundEmail]
    lease: datetime


async def claim_due(settings: Settings, *, limit: int, now: datetime) -> Claim:
    """Lease up to `limit` due QUEUED rows to this caller, oldest due first."""
    lease = lease_token(now, settings.mail_lease_seconds)  # this claim's own (module doc)
    async with in_transaction():
        rows = (
            await OutboundEmail.filter(status=DeliveryStatus.QUEUED, next_attempt_at__lte=now)
            .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
            .order_by("next_attempt_at", "id")
            .limit(limit)
            .select_for_update(skip_locked=True)
        )
        if rows:
            await OutboundEmail.filter(id__in=[row.pk for row in rows]).update(lease_until=lease)
    for row in rows:
        row.lease_until = lease
    return Claim(list(rows), lease)


async def deliver_due(
    settings: Settings,
    transport: Transport,
    *,
    limit: int = 50,
    now: datetime | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Claim due mail and send it; the number of rows claimed (0: nothing was due).

    `now` fixes the clock (tests); `stop` ends the batch early, handing the rows not yet
    sent back to the queue at once.
    """
    claim = await claim_due(settings, limit=limit, now=now or _utcnow())
    routes = await _mailbox_routes(settings, claim.rows)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.mail_lease_seconds * SEND_WINDOW
    for index, row in enumerate(claim.rows):
        if (stop is not None and stop.is_set()) or loop.time() > deadline:
            await _release(claim.rows[index:], claim.lease)
            break
        await _deliver_one(settings, transport, row, claim.lease, now, routes)
    return len(claim.rows)


@dataclass(frozen=True)
class _Route:
    """How the rows of one connected mailbox go out (one per mailbox and round)."""

    mailbox: Mailbox
    transport: Transport


# A mailbox's route, or the reason nothing can go through it this round.
_Routes = dict[int, _Route | str]


async def _mailbox_routes(settings: Settings, rows: list[OutboundEmail]) -> _Routes:
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
        transport = MailboxSmtpTransport.for_server(
            mailbox.smtp_host,
            mailbox.smtp_port,
            mailbox.smtp_tls,
            mailbox.username,
            password,
            settings,
        )
        routes[mailbox.pk] = _Route(mailbox, transport)
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


async def _deliver_one(
    settings: Settings,
    transport: Transport,
    row: OutboundEmail,
    lease: datetime,
    now: datetime | None,
    routes: _Routes,
) -> None:
    route: _Route | None = None
    try:
        try:
            bodies = decrypt_bodies(settings, row)
        except InvalidToken:
            # Only a different secret key does this; restoring the key makes it work again.
            raise TemporaryFailure(
                "cannot decrypt the message: the secret key differs from the one that queued it"
            ) from None
        route = _route_of(row, routes)
        if route is None:
            message = build_message(row, bodies, settings)
            await transport.send(message)
        else:
            message = build_message(row, bodies, settings, sender=route.mailbox.address)
            await route.transport.send(message)
    except PermanentFailure as exc:
        log.warning("mail %s to %s failed permanently: %s", row.pk, row.to_address, exc)
        await _record(row, lease, status=DeliveryStatus.FAILED, last_error=str(exc))
    except TemporaryFailure as exc:
        await _retry_later(settings, row, lease, str(exc), now)
    except Exception as exc:  # a bug must not stop the queue: count it as an attempt
        log.exception("mail %s: unexpected error while sending", row.pk)
        await _retry_later(settings, row, lease, f"{type(exc).__name__}: {exc}", now)
    else:
        log.info("mail %s sent to %s", row.pk, row.to_address)
        recorded = await _record(row, lease, status=DeliveryStatus.SENT, sent_at=now or _utcnow())
        if route is not None and recorded:  # a lost lease: the new holder sends and files
            await _file(settings, row, route, message)


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
        await _record(row, lease, status=DeliveryStatus.FAILED, last_error=reason)
        return
    delay = retry_delay(settings, attempts)
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


async def _release(rows: list[OutboundEmail], lease: datetime) -> None:
    """Hand rows back unattempted: due at once for any worker."""
    await OutboundEmail.filter(
        id__in=[row.pk for row in rows], status=DeliveryStatus.QUEUED, lease_until=lease
    ).update(lease_until=None)


def _utcnow() -> datetime:
    return datetime.now(UTC)
