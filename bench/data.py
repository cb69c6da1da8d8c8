"""What the benchmarks share: timing, data written in bulk (many accounts, each with one
contact and one address), and the portal screens' data (mail, invitations, deliveries,
documents)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from models import (
    Account,
    AccountContact,
    AccountEmail,
    Attachment,
    Contact,
    Document,
    EmailAddress,
    Invitation,
    Message,
    MessageAccount,
    OutboundEmail,
    PortalAccess,
    PortalUser,
)


async def bulk_accounts(firm_id: int, count: int, domain: str, **toggles: bool) -> list[int]:
    """`count` accounts, each with one contact whose one address (c<n>@`domain`) has
    `toggles` (notify=True, email_sync=True, ...) in it; the account ids, in order."""
    await Account.bulk_create(
        [Account(firm_id=firm_id, name=f"Bulk {i:05}", type="FAMILY") for i in range(count)]
    )
    accounts = await Account.filter(firm_id=firm_id).order_by("id")
    await Contact.bulk_create(
        [Contact(firm_id=firm_id, first_name="C", last_name=str(i)) for i in range(count)]
    )
    contacts = await Contact.filter(firm_id=firm_id).order_by("id")
    await EmailAddress.bulk_create(
        [
            EmailAddress(
                firm_id=firm_id,
                contact_id=c.pk,
                address=f"c{c.last_name}@{domain}",
                address_normalized=f"c{c.last_name}@{domain}",
            )
            for c in contacts
        ]
    )
    emails = await EmailAddress.filter(firm_id=firm_id).order_by("id")
    await AccountContact.bulk_create(
        [
            AccountContact(firm_id=firm_id, account_id=a.pk, contact_id=c.pk)
            for a, c in zip(accounts, contacts, strict=True)
        ]
    )
    await AccountEmail.bulk_create(
        [
            AccountEmail(firm_id=firm_id, account_id=a.pk, email_address_id=e.pk, **toggles)
            for a, e in zip(accounts, emails, strict=True)
        ]
    )
    return [a.pk for a in accounts]


async def median(
    action: Callable[[], Awaitable[Any]], prepare: Callable[[], Awaitable[Any]], rounds: int
) -> float:
    """Median seconds of `action` over `rounds` runs, `prepare` (untimed) before each."""
    samples = []
    for _ in range(rounds):
        await prepare()
        started = time.perf_counter()
        await action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


# --- What a portal screen shows besides the account list (bench/http.py's inbox and account
# reads): synced mail with accounts and attachments, and one account's toggles, invitations,
# deliveries and documents. Times are fixed, distinct and carry microseconds, so every order
# is decided and the ISO text of both databases is compared in full.

SCREEN_MESSAGES = 120  # the inbox page shows the newest 50
SCREEN_ROWS = 30  # deliveries and documents of the account (pages of 20)
_EPOCH = datetime(2026, 1, 5, 9, 0, 0, 123456, tzinfo=UTC)


async def screens(firm_id: int) -> int:
    """Seeds the screens over the accounts already there (at least two); the id of the
    account the account read opens (the first by name)."""
    accounts = await Account.filter(firm_id=firm_id).order_by("name", "id")
    await _mail(firm_id, [a.pk for a in accounts])
    account = accounts[0]
    await _toggles_and_invitations(firm_id, account.pk)
    await _deliveries_and_documents(firm_id, account.pk)
    return account.pk


async def _mail(firm_id: int, account_ids: list[int]) -> None:
    await Message.bulk_create(
        [
            Message(
                firm_id=firm_id,
                message_id=f"<m{i}@bench.example>",
                message_key=f"{i:064x}",
                thread_key=f"{i // 3:064x}",
                subject=f"Quarterly statement {i}",
                from_address=f"sender{i % 7}@client.example",
                to_addresses=["office@bench.example"],
                cc_addresses=[f"cc{i % 3}@client.example"] if i % 4 == 0 else [],
                sent_at=_EPOCH + timedelta(minutes=17 * i, microseconds=i),
                text_body=f"Body {i}",
                direction="INBOUND" if i % 5 else "OUTBOUND",
            )
            for i in range(SCREEN_MESSAGES)
        ]
    )
    messages = await Message.filter(firm_id=firm_id).order_by("id")
    links, files = [], []
    for i, message in enumerate(messages):
        # One account each, every third message a second one.
        linked = {account_ids[i % len(account_ids)]}
        if i % 3 == 0:
            linked.add(account_ids[(i * 7 + 1) % len(account_ids)])
        links += [
            MessageAccount(
                firm_id=firm_id, message_id=message.pk, account_id=a, sent_at=message.sent_at
            )
            for a in sorted(linked)
        ]
        for position in range(i % 3):  # 0, 1 or 2 files; every fifth one not kept
            kept = (i + position) % 5 != 0
            files.append(
                Attachment(
                    firm_id=firm_id,
                    message_id=message.pk,
                    position=position,
                    filename=f"statement-{i}-{position}.pdf",
                    content_type="application/pdf",
                    size=10_000 + 37 * i + position,
                    sha256=f"{i * 10 + position:064x}" if kept else None,
                    skipped_reason=None if kept else "too large",
                )
            )
    await MessageAccount.bulk_create(links)
    await Attachment.bulk_create(files)


async def _toggles_and_invitations(firm_id: int, account_id: int) -> None:
    """LOGIN on all but the last address; invitations (accepted, pending, expired) on the
    others; one address ACTIVE through a portal user with access."""
    emails = (
        await AccountEmail.filter(account_id=account_id)
        .select_related("email_address")
        .order_by("email_address__contact_id", "email_address_id")
    )
    for i, email in enumerate(emails):
        email.login = i < len(emails) - 1
        email.notify = i % 2 == 0
        email.email_sync = i % 2 == 1
        await email.save(update_fields=["login", "notify", "email_sync"])
    invitations = []
    for i, email in enumerate(emails[:-1]):
        address = email.email_address
        for n in range(i + 1):  # 1, 2, 3 invitations: the newest counts
            sent = _EPOCH + timedelta(days=i, hours=n, microseconds=7 * n)
            invitations.append(
                Invitation(
                    firm_id=firm_id,
                    account_id=account_id,
                    account_email_id=email.pk,
                    email=address.address,
                    email_normalized=address.address_normalized,
                    token_hash=f"{email.pk:032x}{n:032x}",
                    sent_at=sent if n != 1 else None,
                    expires_at=sent + timedelta(days=3650 if n % 2 == 0 else 1),
                    accepted_at=sent + timedelta(hours=2) if i == 0 else None,
                )
            )
    await Invitation.bulk_create(invitations)
    first = emails[0].email_address
    user = await PortalUser.create(
        firm_id=firm_id,
        email=first.address,
        email_normalized=first.address_normalized,
        password_hash="-",
        activated_at=_EPOCH,
    )
    await PortalAccess.create(firm_id=firm_id, account_id=account_id, portal_user_id=user.pk)


async def _deliveries_and_documents(firm_id: int, account_id: int) -> None:
    kinds = ("INVITATION", "NOTIFICATION", "DIRECT", "MASS")
    statuses = ("SENT", "SENT", "QUEUED", "FAILED")
    await OutboundEmail.bulk_create(
        [
            OutboundEmail(
                firm_id=firm_id,
                account_id=account_id,
                kind=kinds[i % 4],
                category="DOCUMENT_UPLOADS" if kinds[i % 4] == "NOTIFICATION" else None,
                to_address=f"c{i % 4}@x.example",
                from_name="Bench",
                subject=f"Your documents {i}",
                body_encrypted="-",
                message_id=f"<out{i}@bench.example>",
                status=statuses[i % 4],
                attempts=i % 3,
                last_error="550 mailbox unavailable" if statuses[i % 4] == "FAILED" else None,
                next_attempt_at=_EPOCH,
                created_at=_EPOCH + timedelta(hours=5 * i, microseconds=3 * i),
                sent_at=_EPOCH + timedelta(hours=5 * i, minutes=1)
                if statuses[i % 4] == "SENT"
                else None,
            )
            for i in range(SCREEN_ROWS)
        ]
    )
    await Document.bulk_create(
        [
            Document(
                firm_id=firm_id,
                account_id=account_id,
                filename=f"return-{2000 + i}.pdf",
                content_type="application/pdf",
                size=50_000 + 101 * i,
                sha256=f"{i:064x}",
                created_at=_EPOCH + timedelta(hours=3 * i, microseconds=11 * i),
            )
            for i in range(SCREEN_ROWS)
        ]
    )
