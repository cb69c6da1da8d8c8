"""NOTIFY: who receives the firm's mail for an account, and queuing it (domain.md, NOTIFY).

Firm emails go to every address of the account with NOTIFY on; a system notification only
to those whose preferences include its category. An address with LOGIN on that has not been
activated gets notifications with a banner whose link finishes activation. A firm with a
copy address gets a copy of every message, saying whom it went to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tortoise.transactions import in_transaction

from models import Account, AccountContact, AccountEmail, Firm, NotificationCategory
from portico.settings import Settings
from services.outbound import outbox
from services.portal import access, invitations
from services.shared.errors import ErrorCode, input_error
from services.shared.scope import FirmScope

FIRM_EMAIL_KINDS = ("DIRECT", "MASS", "AUTOMATION")
MAX_SUBJECT = 300
MAX_BODY = 100_000
MAX_LINK = 2_000
MAX_ACCOUNTS = 5_000


@dataclass(frozen=True)
class Recipient:
    row: AccountEmail  # with email_address and account loaded
    pending_activation: bool  # LOGIN on, not yet activated: notifications carry a banner
    name_account: bool  # the contact is in several accounts: the subject names this one


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
            row=r,
            pending_activation=r.login
            and (r.account_id, r.email_address.address_normalized) not in activated,
            name_account=links[r.email_address.contact_id] > 1,
        )
        for r in rows
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
    subject, body = _text(subject, MAX_SUBJECT, "subject"), _text(body, MAX_BODY, "body")
    if kind not in FIRM_EMAIL_KINDS:
        raise input_error(
            ErrorCode.INVALID_KIND, "kind is DIRECT, MASS or AUTOMATION.", "input", "kind"
        )
    accounts = await _accounts(scope, account_ids)
    firm = await Firm.get(pk=scope.firm_id)
    async with in_transaction():
        found = await recipients(scope, [a.pk for a in accounts])
        context = {"subject": subject, "body": body}
        mails = [m for r in found for m in _mails(firm, r, "firm_email", context, kind, None)]
        await outbox.enqueue_many(firm.pk, firm.name, mails, settings)
    return len(found)


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
    [account] = await _accounts(scope, [account_id], field="accountId")
    firm = await Firm.get(pk=scope.firm_id)
    async with in_transaction():
        found = await recipients(scope, [account.pk], category)
        mails = []
        for recipient in found:
            banner = None
            if recipient.pending_activation:
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
) -> list[outbox.Mail]:
    """The recipient's message and, where the firm asks for it, the firm's copy."""
    row = recipient.row
    common = {
        "banner_link": None,
        "banner_pending": False,
        **context,
        "firm_name": firm.name,
        "account_name": row.account.name,
        "name_account": recipient.name_account,
    }
    targets = [(row.email_address.address, {**common, "copy_to": None})]
    if firm.copy_address:
        # The copy never carries the recipient's activation link, only says there was one.
        copy = {**common, "copy_to": row.email_address.address, "banner_link": None}
        copy["banner_pending"] = bool(common["banner_link"])
        targets.append((firm.copy_address, copy))
    return [
        outbox.Mail(to, template, values, kind, row.account_id, category) for to, values in targets
    ]


async def _accounts(
    scope: FirmScope, account_ids: Sequence[int | None], field: str = "accountIds"
) -> list[Account]:
    if not account_ids:
        raise input_error(ErrorCode.NO_ACCOUNTS, "Name at least one account.", "input", field)
    if len(account_ids) > MAX_ACCOUNTS:
        raise input_error(
            ErrorCode.TOO_MANY, f"At most {MAX_ACCOUNTS} accounts at once.", "input", field
        )
    found = await scope.by_ids(Account, [pk for pk in account_ids if pk is not None])
    for i, pk in enumerate(account_ids):
        if pk not in found:
            path = ("input", field) if field == "accountId" else ("input", field, str(i))
            raise input_error(ErrorCode.NOT_FOUND, "No such account.", *path)
    return [found[pk] for pk in dict.fromkeys(account_ids) if pk is not None]


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
