"""The daily digest of new client mail (StaffMember.inbox_notification DAILY_DIGEST).

Once a day, at DIGEST_HOUR UTC (plus SETTLE), each active member who chose the digest gets
one email listing the client mail synced since their last digest (the ClientMailNotices
services/mail/alerts recorded), or nothing when there was none. `inbox_digest_through` says
how far their digests have gone: it is moved to the cut-off by a conditional UPDATE in the
transaction that queues the digest, so two workers never send the same digest twice.

- The cut-off is the latest DIGEST_HOUR:00 UTC at least SETTLE ago: a notice is written with
  the time its storing transaction ran, and that transaction has committed by then.
- A member without the inbox right gets no digest, but their window moves on all the same
  (gaining the right later does not bring a backlog of what they could not see).
- Private mail (services/mail/threads) is listed only to a member who may read it, as its
  thread is when the digest is made.
- A digest covers at most MAX_WINDOW (a member who was inactive, or a worker that was down
  for weeks) and lists at most MAX_ITEMS messages, then says how many more there were.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from models import Firm, InboxNotification, StaffMember
from models.mail import ClientMailNotice
from portico.settings import Settings
from services.mail import threads
from services.mail.alerts import may_see_inbox
from services.outbound import outbox
from services.shared.scope import FirmScope

log = logging.getLogger(__name__)

DIGEST_HOUR = 7  # UTC: before the working day in Europe
SETTLE = timedelta(minutes=5)
MAX_WINDOW = timedelta(days=7)
MAX_ITEMS = 100
DIGEST_KIND = outbox.STAFF_DIGEST_KIND
DIGEST_TEMPLATE = "inbox_digest"


@dataclass(frozen=True)
class Item:
    message_id: int
    accounts: list[str]
    sender: str
    subject: str
    sent_at: datetime


def cutoff(now: datetime) -> datetime:
    """The latest DIGEST_HOUR:00 UTC at least SETTLE before `now`."""
    settled = (now - SETTLE).astimezone(UTC)
    today = datetime.combine(settled.date(), time(DIGEST_HOUR), UTC)
    return today if today <= settled else today - timedelta(days=1)


async def send_due_digests(settings: Settings, now: datetime) -> int:
    """Queues the digests due at `now`; how many emails were queued."""
    through = cutoff(now)
    due = await StaffMember.filter(
        Q(inbox_digest_through__isnull=True) | Q(inbox_digest_through__lt=through),
        active=True,
        inbox_notification=InboxNotification.DAILY_DIGEST,
    ).order_by("id")
    sent = 0
    for member in due:
        sent += await _digest(member, through, settings)
    return sent


async def _digest(member: StaffMember, through: datetime, settings: Settings) -> int:
    """One member's digest up to `through`: 1 when an email was queued, else 0."""
    last = member.inbox_digest_through
    start = max(last or through - timedelta(days=1), through - MAX_WINDOW)
    unchanged = (
        Q(inbox_digest_through__isnull=True) if last is None else Q(inbox_digest_through=last)
    )
    async with in_transaction():
        # The claim: another worker that read the same `last` now updates nothing.
        claimed = await StaffMember.filter(unchanged, id=member.pk).update(
            inbox_digest_through=through
        )
        if not claimed:
            return 0
        if not await StaffMember.filter(may_see_inbox(), id=member.pk).exists():
            return 0
        firm = await Firm.get(pk=member.firm_id)
        reads = threads.reader(member, firm)
        items, total = await _items(FirmScope(member.firm_id), start, through, reads)
        if not items:
            return 0
        await outbox.enqueue(
            firm_id=firm.pk,
            firm_name=firm.name,
            to=member.email,
            template=DIGEST_TEMPLATE,
            context={
                "member_name": member.name,
                "firm_name": firm.name,
                "since": start,
                "items": items,
                "total": total,
                "more": total - len(items),
            },
            kind=DIGEST_KIND,
            settings=settings,
        )
    log.info("inbox digest of %d messages queued for staff member %s", total, member.pk)
    return 1


async def _items(
    scope: FirmScope, start: datetime, through: datetime, reader: threads.Reader
) -> tuple[list[Item], int]:
    """The client mail noticed in (start, through], oldest first (at most MAX_ITEMS), and how
    many messages there were in all: private mail only for a reader who may read it (as the
    immediate alerts: services/mail/alerts)."""
    query = scope.query(ClientMailNotice).filter(created_at__gt=start, created_at__lte=through)
    if not reader.sees_all:
        query = query.filter(
            Q(message__private_to_id__isnull=True) | Q(message__private_to_id=reader.staff_id)
        )
    rows = await query.order_by("message__sent_at", "message_id", "account__name").values_list(
        "message_id",
        "account__name",
        "message__from_address",
        "message__subject",
        "message__sent_at",
    )
    items: dict[int, Item] = {}
    for message_id, account, sender, subject, sent_at in rows:
        item = items.setdefault(message_id, Item(message_id, [], sender, subject, sent_at))
        item.accounts.append(account)
    listed = list(items.values())
    return listed[:MAX_ITEMS], len(listed)
