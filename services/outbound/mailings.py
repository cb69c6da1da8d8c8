"""Mailings: one sendFirmEmail to many accounts, and how far its delivery has gone.

A Mailing row is written in the transaction that queues its outbox rows
(services/portal/notify.queue_firm_email), with `total` the number of messages queued (copies
to the firm's copy address included). Its progress is not stored: it is counted from those
rows (one GROUP BY over the indexed outbound_email.mailing_id), so the delivery worker writes
nothing extra per message and the counts can never drift from the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from models import DeliveryStatus, Mailing
from services.shared import sql


@dataclass(frozen=True)
class Progress:
    """How many of a mailing's messages stand where."""

    queued: int = 0  # waiting for a worker (or for their next attempt)
    sent: int = 0
    failed: int = 0
    cancelled: int = 0


async def create(firm_id: int, kind: str, subject: str, total: int) -> Mailing:
    """The mailing's row, in the caller's transaction."""
    return await Mailing.create(firm_id=firm_id, kind=kind, subject=subject, total=total)


async def progress(firm_id: int, mailing_id: int) -> Progress:
    """The mailing's messages counted by status: one statement on the indexed mailing_id."""
    rows = await sql.select(
        "SELECT status, COUNT(*) FROM outbound_email"
        " WHERE mailing_id = ? AND firm_id = ? GROUP BY status",
        [mailing_id, firm_id],
    )
    counts = {str(status): int(count) for status, count in rows}
    return Progress(
        queued=counts.get(DeliveryStatus.QUEUED.value, 0),
        sent=counts.get(DeliveryStatus.SENT.value, 0),
        failed=counts.get(DeliveryStatus.FAILED.value, 0),
        cancelled=counts.get(DeliveryStatus.CANCELLED.value, 0),
    )
