"""NOTIFY: who receives the firm's mail for an account, and queuing it (domain.md, NOTIFY).

Firm emails go to every address of the account with NOTIFY on; a system notification only
to those whose preferences include its category. An address with LOGIN on that has not been
activated gets notifications with a banner whose link finishes activation. A firm with a
copy address gets a copy of every message, saying whom it went to.

A firm email may go to 10,000 accounts in one request: its recipients are read as plain rows
in one statement (`firm_email_recipients`, which must agree with `recipients` on who gets
mail), its subject line is built in Python (`firm_email_subject`, what the subject template
renders) so that the bodies render once for the mailing, and its messages are written by
`outbox.enqueue_bulk` under one Mailing row whose progress the API counts from the outbox
(services/outbound/mailings.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tortoise.transactions import in_transaction

from models import AccountContact, AccountEmail, Firm, Mailing, NotificationCategory
from portico.settings import Settings
from services.outbound import mailings, outbox
from services.portal import access, invitations
from services.shared import sql
from services.shared.errors import ErrorCode, input_error
from services.shared.scope import FirmScope

FIRM_EMAIL_KINDS = ("DIRECT", "MASS", "AUTOMATION")
MAX_SUBJECT = 300
MAX_BODY = 100_000
MAX_LINK = 2_000
MAX_ACCOUNTS = 10_000  # one mass mailing to every client of a large firm
ID_CHUNK = 10_000  # ids per IN list (a full mailing's accounts in one statement)


@dataclass(frozen=True)
class Recipient:
    account_id: int
    account_name: str
    address: str
    pending_activation: bool  # LOGIN on, not yet activated: notifications carry a banner
    name_account: bool  # the contact is in several accounts: the subject names this one
    row: AccountEmail | None = None  # the model row (with email_address), for a banner link


@dataclass(frozen=True)
class Sent:
    """What a firm email queued: `queued` recipients (copies not counted), under `mailing`."""

    queued: int
    mailing: Mailing


async def recipients(
    scope: FirmScope, account_ids: Sequence[int], category: str | None = None
) -> list[Recipient]:
    """NOTIFY-on addresses of these accounts; with `category`, only those who chose it.
    An archived account has none: no mail goes to it (and nothing is refused, so the firm's
    other modules, e.g. an upload, go on)."""
    rows = (
        await scope.query(AccountEmail)
        .filter(account_id__in=list(account_ids), notify=True, account__archived_at=None)
        .select_related("email_address", "account")
        .order_by("account_id", "id")
    )
    if category is not None:
        rows = [r for r in rows if r.notify_all or category in r.notify_categories]
    contacts = {r.email_address.contact_id for r in rows}
    links = Counter(
        await scope.query(AccountContact)
        .filter(contact_id__in=contacts)
        .values_list("contact_id", flat=True)
    )
    activated = await access.activated_pairs(
        scope, [(r.account_id, r.email_address.address_normalized) for r in rows if r.login]
    )
    return [
        Recipient(
            account_id=r.account_id,
            account_name=r.account.name,
            address=r.email_address.address,
            row=r,
            pending_activation=r.login
            and (r.account_id, r.email_address.address_normalized) not in activated,
            name_account=links[r.email_address.contact_id] > 1,
        )
        for r in rows
    ]


async def firm_email_recipients(scope: FirmScope, accounts: dict[int, str]) -> list[Recipient]:
    """`recipients` without a category for these live (unarchived) accounts, id -> name:
    NOTIFY on, in the same order, read as plain rows (a mass mailing reads thousands). Firm
    emails carry no activation banner, so whether an address is activated is not read.

    Single-table statements joined here: on tables whose statistics are not current yet,
    PostgreSQL planned the three-way join as nested seq scans (0.3 s for 1,000 accounts).
    """
    links: list[Any] = []
    for chunk in _chunks(list(accounts)):
        links += await sql.select(
            "SELECT account_id, id, email_address_id FROM account_email"
            f" WHERE firm_id = ? AND notify = ? AND account_id IN ({sql.marks(len(chunk))})",
            [scope.firm_id, True, *chunk],
        )
    # (address, accounts of its contact) by email address id; the subquery is an index probe.
    addresses: dict[int, tuple[str, int]] = {}
    links.sort(key=lambda row: (row[0], row[1]))  # by account, then row: as `recipients`
    for chunk in _chunks(list({row[2] for row in links})):
        for pk, address, contact_accounts in await sql.select(
            "SELECT ea.id, ea.address, (SELECT COUNT(*) FROM account_contact ac"
            "  WHERE ac.firm_id = ? AND ac.contact_id = ea.contact_id)"
            f" FROM email_address ea WHERE ea.id IN ({sql.marks(len(chunk))})",
            [scope.firm_id, *chunk],
        ):
            addresses[pk] = (address, contact_accounts)
    return [
        Recipient(
            account_id=account_id,
            account_name=accounts[account_id],
            address=addresses[email_id][0],
            pending_activation=False,
            name_account=addresses[email_id][1] > 1,
        )
        for account_id, _, email_id in links
    ]


async def send_firm_email(
    scope: FirmScope,
    account_ids: Sequence[int | None],
    subject: str,
    body: str,
    kind: str,
    settings: Settings,
) -> int:
    """Queues the firm's email for every NOTIFY recipient of the accounts; how many."""
    return (await queue_firm_email(scope, account_ids, subject, body, kind, settings)).queued


async def queue_firm_email(
    scope: FirmScope,
    account_ids: Sequence[int | None],
    subject: str,
    body: str,
    kind: str,
    settings: Settings,
) -> Sent:
    """`send_firm_email`, with the Mailing its messages were queued under."""
    subject, body = _text(subject, MAX_SUBJECT, "subject"), _text(body, MAX_BODY, "body")
    if kind not in FIRM_EMAIL_KINDS:
        raise input_error(
            ErrorCode.INVALID_KIND, "kind is DIRECT, MASS or AUTOMATION.", "input", "kind"
        )
    async with in_transaction():
        accounts = await _accounts(scope, account_ids)
        firm = await Firm.get(pk=scope.firm_id)
        live = {pk: name for pk, name in accounts.items() if name is not None}
        found = await firm_email_recipients(scope, live)
        context = {"subject": subject, "body": body}
        mails = [
            mail
            for r in found
            for mail in _mails(
                firm, r, "firm_email", context, kind, None, firm_email_subject(subject, r)
            )
        ]
        mailing = await mailings.create(firm.pk, kind, subject, len(mails))
        await outbox.enqueue_bulk(firm.pk, firm.name, mails, settings, mailing_id=mailing.pk)
    return Sent(queued=len(found), mailing=mailing)


def firm_email_subject(subject: str, recipient: Recipient) -> str:
    """What firm_email.subject.txt renders: the subject, after the account's name in brackets
    when the contact is in several accounts. Built here, not rendered per account, so the
    Renderer's key for the other parts leaves the account out (test_mass_mail compares)."""
    return f"[{recipient.account_name}] {subject}" if recipient.name_account else subject


async def notify_client_event(
    scope: FirmScope,
    account_id: int | None,
    category: str,
    title: str,
    body: str,
    link: str | None,
    settings: Settings,
) -> int:
    """Queues a system notification for the recipients who chose its category; how many."""
    category = NotificationCategory(category).value
    title, body = _text(title, MAX_SUBJECT, "title"), _text(body, MAX_BODY, "body", empty=True)
    link = _link(link)
    accounts = await _accounts(scope, [account_id], field="accountId")
    firm = await Firm.get(pk=scope.firm_id)
    async with in_transaction():
        found = await recipients(scope, list(accounts), category)
        mails = []
        for recipient in found:
            banner = None
            if recipient.pending_activation and recipient.row is not None:
                banner = await invitations.banner_link(scope, recipient.row, settings)
            context = {"title": title, "body": body, "link": link, "banner_link": banner}
            mails += _mails(firm, recipient, "notification", context, "NOTIFICATION", category)
        await outbox.enqueue_many(firm.pk, firm.name, mails, settings)
    return len(found)


def _mails(
    firm: Firm,
    recipient: Recipient,
    template: str,
    context: dict[str, Any],
    kind: str,
    category: str | None,
    subject: str | None = None,
) -> list[outbox.Mail]:
    """The recipient's message and, where the firm asks for it, the firm's copy (`subject`,
    when given, instead of the template's)."""
    common = {
        "banner_link": None,
        "banner_pending": False,
        **context,
        "firm_name": firm.name,
        "account_name": recipient.account_name,
        "name_account": recipient.name_account,
    }
    targets = [(recipient.address, {**common, "copy_to": None})]
    if firm.copy_address:
        # The copy never carries the recipient's activation link, only says there was one.
        copy = {**common, "copy_to": recipient.address, "banner_link": None}
        copy["banner_pending"] = bool(common["banner_link"])
        targets.append((firm.copy_address, copy))
    return [
        outbox.Mail(to, template, values, kind, recipient.account_id, category, subject=subject)
        for to, values in targets
    ]


async def _accounts(
    scope: FirmScope, account_ids: Sequence[int | None], field: str = "accountIds"
) -> dict[int, str | None]:
    """The firm's accounts among `account_ids`, each once in order: id -> name, None when
    archived (no mail goes to it). An input error names the first id that is not one of
    them (another firm's reads as not found). Plain rows: a mailing names thousands."""
    if not account_ids:
        raise input_error(ErrorCode.NO_ACCOUNTS, "Name at least one account.", "input", field)
    if len(account_ids) > MAX_ACCOUNTS:
        raise input_error(
            ErrorCode.TOO_MANY, f"At most {MAX_ACCOUNTS} accounts at once.", "input", field
        )
    distinct = [pk for pk in dict.fromkeys(account_ids) if pk is not None]
    found: dict[int, str | None] = {}
    for chunk in _chunks(distinct):
        for pk, name, archived_at in await sql.select(
            "SELECT id, name, archived_at FROM account"
            f" WHERE firm_id = ? AND id IN ({sql.marks(len(chunk))})",
            [scope.firm_id, *chunk],
        ):
            found[pk] = None if archived_at is not None else name
    for i, pk in enumerate(account_ids):
        if pk not in found:
            path = ("input", field) if field == "accountId" else ("input", field, str(i))
            raise input_error(ErrorCode.NOT_FOUND, "No such account.", *path)
    return {pk: found[pk] for pk in distinct}


def _chunks(ids: list[int]) -> list[list[int]]:
    """IN lists of at most ID_CHUNK ids: drivers cap the parameters of one statement
    (asyncpg 32,767; SQLite 32,766 by default)."""
    return [ids[start : start + ID_CHUNK] for start in range(0, len(ids), ID_CHUNK)]


def _text(value: str, limit: int, field: str, empty: bool = False) -> str:
    cleaned = value.strip()
    if (not cleaned and not empty) or len(cleaned) > limit:
        raise input_error(
            ErrorCode.INVALID_TEXT, f"{field} is 1-{limit} characters.", "input", field
        )
    return cleaned


def _link(link: str | None) -> str | None:
    """Only http(s) links: a javascript: or data: link would be a trap in the mail."""
    if not link or not link.strip():
        return None
    cleaned = link.strip()
    parts = urlsplit(cleaned)
    if parts.scheme not in ("http", "https") or not parts.netloc or len(cleaned) > MAX_LINK:
        raise input_error(ErrorCode.INVALID_LINK, "A link is an http(s) URL.", "input", "link")
    return cleaned
