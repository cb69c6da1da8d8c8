"""Staff alerts for new client mail (StaffMember.inbox_notification): the immediate ones.

`new_client_mail` runs inside the transaction that stores a chunk of synced mail
(services/mail/store): it records a ClientMailNotice per (message, account) for each new
message FROM a client address linked to an account it went to, and queues one alert per
message for every active member with the inbox right who chose IMMEDIATE, in that same
transaction (so an alert commits with its message, or not at all). The daily digest lists the
notices later (services/mail/digests).

What never alerts:
- history imports and other earlier mail: only a live sync pass passes `since` (the time its
  mailbox was connected), and only mail sent since then, give or take FRESH_SLACK, counts (the
  first pass of a new mailbox reads the whole INBOX: that is not new mail);
- a message seen again (another folder or mailbox, a rescan): only messages stored now;
- the firm's own mail: replies from Inbox+ are stored when written, and mail from a firm
  mailbox is OUTBOUND; mail from anyone but a client address linked to the account;
- archived accounts (sync no longer files mail there).

A private message (a personal mailbox's thread its owner has not shared) alerts only those who
may read it: its owner, and the firm's owners when they see all mail.

An alert names the account(s), the sender and the subject, never the body; it is queued
without an account (`account_id` None), so it is not listed among an account's deliveries to
staff without the inbox right. Erasing a client (services/crm/erasure) drops the body and
subject of the alerts and the body of the digests that name their address.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from tortoise.expressions import Q

from models import (
    Account,
    AccountEmail,
    Firm,
    InboxNotification,
    Message,
    StaffMember,
    StaffRole,
)
from models.mail import ClientMailNotice
from portico.settings import Settings
from services.mail import threads
from services.outbound import outbox
from services.shared.scope import FirmScope

ALERT_KIND = outbox.STAFF_ALERT_KIND
ALERT_TEMPLATE = "inbox_alert"
# As auto-saving attachments does: the Date header is the sender's clock, and mail may take a
# while to arrive.
FRESH_SLACK = timedelta(hours=1)
INBOUND = "INBOUND"


class Stored(Protocol):
    """What services/mail/store answers for each message (its StoreOutcome)."""

    @property
    def message(self) -> Message: ...
    @property
    def created(self) -> bool: ...
    @property
    def new_account_ids(self) -> list[int]: ...


def may_see_inbox() -> Q:
    """Active members with the inbox right (StaffMember.uses_inbox), as a filter."""
    return Q(active=True) & (Q(role__in=[StaffRole.OWNER, StaffRole.ADMIN]) | Q(can_use_inbox=True))


async def new_client_mail(
    scope: FirmScope,
    stored: Sequence[Stored],
    settings: Settings | None,
    since: datetime | None,
) -> list[ClientMailNotice]:
    """Notices and immediate alerts for the new client mail among `stored`; call it inside the
    transaction that stored them. `since` None (a history import) alerts nothing."""
    if settings is None or since is None:
        return []
    fresh = [
        (item.message, item.new_account_ids)
        for item in stored
        if item.created
        and item.message.direction == INBOUND
        and item.message.sent_at >= since - FRESH_SLACK
    ]
    if not fresh:
        return []
    linked = await _client_links(
        scope, {m.from_address for m, _ in fresh}, {a for _, ids in fresh for a in ids}
    )
    notices = [
        ClientMailNotice(firm_id=scope.firm_id, message_id=message.pk, account_id=account_id)
        for message, account_ids in fresh
        for account_id in sorted(account_ids)
        if (message.from_address, account_id) in linked
    ]
    if not notices:
        return []
    await ClientMailNotice.bulk_create(notices)
    await _alert(scope, fresh, notices, settings)
    return notices


async def _client_links(
    scope: FirmScope, senders: set[str], account_ids: set[int]
) -> set[tuple[str, int]]:
    """(address, account) of each sender linked to one of the (not archived) accounts."""
    rows = await (
        scope.query(AccountEmail)
        .filter(
            email_address__address_normalized__in=sorted(senders),
            account_id__in=sorted(account_ids),
            account__archived_at__isnull=True,
        )
        .values_list("email_address__address_normalized", "account_id")
    )
    return {(address, account_id) for address, account_id in rows}


async def _alert(
    scope: FirmScope,
    fresh: Sequence[tuple[Message, Sequence[int]]],
    notices: Sequence[ClientMailNotice],
    settings: Settings,
) -> None:
    members = await (
        scope.query(StaffMember)
        .filter(may_see_inbox(), inbox_notification=InboxNotification.IMMEDIATE)
        .order_by("id")
    )
    if not members:
        return
    names = await account_names(scope, {n.account_id for n in notices})
    accounts: dict[int, list[str]] = {}
    for notice in notices:
        accounts.setdefault(notice.message_id, []).append(names[notice.account_id])
    firm = await Firm.get(pk=scope.firm_id)
    mails = [
        outbox.Mail(
            to=member.email,
            template=ALERT_TEMPLATE,
            context={
                "member_name": member.name,
                "firm_name": firm.name,
                "accounts": sorted(accounts[message.pk]),
                "sender": message.from_address,
                "subject": message.subject,
                "sent_at": message.sent_at,
            },
            kind=ALERT_KIND,
        )
        for message, _ in fresh
        if message.pk in accounts
        for member in members
        # Private mail (services/mail/threads) alerts only those who may read it.
        if not threads.reader(member, firm).hides(message.private_to_id)
    ]
    await outbox.enqueue_many(scope.firm_id, firm.name, mails, settings)


async def account_names(scope: FirmScope, account_ids: set[int]) -> dict[int, str]:
    return dict(
        await scope.query(Account).filter(id__in=sorted(account_ids)).values_list("id", "name")
    )
