"""A contact's data exported (GDPR articles 15 and 20): a ZIP of data.json and the documents
of the accounts where the contact is the only one linked, behind a short-lived link.

The link is stateless: an encrypted, authenticated token (Fernet, keyed from
PORTICO_SECRET_KEY for this purpose only) naming the firm, the contact, the staff member who
asked and the expiry. The bundle is built when the link is opened, so it shows the data as it
is then: a contact erased or a member who lost the manage-accounts right since makes the link
dead before it expires. Synced mail (messages, and replies among the deliveries) is in it only
when that member has the inbox right then too (StaffMember.uses_inbox), and at most
MAX_MESSAGES of it, the newest: opening the link rebuilds the bundle each time. It is read as
that member reads Inbox+ (services/mail/threads): bodies of a colleague's private threads are
left out and counted in the notes. The erasure
(services/crm/erasure) finds the same data through `addresses_of` and `messages_concerning`.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from cryptography.fernet import InvalidToken
from tortoise.expressions import Q

from models import (
    Account,
    AccountContact,
    AccountEmail,
    AuditEntry,
    Contact,
    Document,
    EmailAddress,
    Firm,
    Invitation,
    Message,
    OutboundEmail,
    PortalAccess,
    PortalUser,
    StaffMember,
)
from portico.settings import Settings
from services.mail import threads
from services.outbound import outbox
from services.portal import invitations
from services.shared import audit, crypto, files
from services.shared.scope import FirmScope

LINK_LIFETIME = timedelta(minutes=15)
_PURPOSE = "contact-data-export"
_SCAN_BATCH = 1000
MAX_MESSAGES = 5000  # per bundle, newest first: a link may be opened many times in its life
_SPOOL_BYTES = 16 * 1024 * 1024  # bundles beyond this are spooled to a temporary file


@dataclass(frozen=True)
class ExportLink:
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class Bundle:
    filename: str
    content: IO[bytes]  # positioned at the start; the caller closes it


def _now() -> datetime:
    return datetime.now(UTC)


async def export_link(
    scope: FirmScope, staff: StaffMember, contact_id: int | None, settings: Settings
) -> ExportLink:
    """A link to the contact's bundle, valid for LINK_LIFETIME; audited (without addresses)."""
    contact = await scope.get(Contact, contact_id, "id")
    expires_at = _now() + LINK_LIFETIME
    token = sign(settings, scope.firm_id, contact.pk, staff.pk, expires_at)
    await audit.record(
        scope,
        "CONTACT_DATA_EXPORTED",
        account_id=None,
        staff=staff,
        after={"contact": contact.pk, "expiresAt": expires_at.isoformat()},
    )
    return ExportLink(f"{settings.resolved_public_url}/exports/{token}", expires_at)


def sign(
    settings: Settings, firm_id: int, contact_id: int, staff_id: int, expires: datetime
) -> str:
    claims = {"f": firm_id, "c": contact_id, "s": staff_id, "e": int(expires.timestamp())}
    return crypto.fernet(settings, _PURPOSE).encrypt(json.dumps(claims).encode()).decode()


class LinkRefused(Exception):
    """The link is forged, tampered with, expired, or its contact or member is gone."""

    def __init__(self, expired: bool = False) -> None:
        super().__init__("expired" if expired else "invalid")
        self.expired = expired


async def open_link(token: str, settings: Settings) -> Bundle:
    """The bundle the link names, built now; LinkRefused otherwise."""
    try:
        claims = json.loads(crypto.open_link_token(settings, _PURPOSE, token))
        firm_id, contact_id, staff_id, expires = (claims[k] for k in ("f", "c", "s", "e"))
    except (InvalidToken, ValueError, KeyError, TypeError):
        raise LinkRefused() from None
    if expires <= _now().timestamp():
        raise LinkRefused(expired=True)
    scope = FirmScope(firm_id)
    staff = await scope.find(StaffMember, staff_id)
    contact = await scope.find(Contact, contact_id)
    if staff is None or not staff.active or not staff.manages_accounts or contact is None:
        raise LinkRefused()
    firm = await Firm.get(pk=firm_id)
    data = await collect(
        scope, contact, with_mail=staff.uses_inbox, reader=threads.reader(staff, firm)
    )
    documents = await sole_documents(scope, contact.pk)
    content = await _zip(data, documents, settings)
    return Bundle(f"contact-{contact.pk}-data.zip", content)


# What the bundle holds


async def addresses_of(scope: FirmScope, contact_id: int) -> list[EmailAddress]:
    return list(await scope.query(EmailAddress).filter(contact_id=contact_id).order_by("id"))


async def messages_concerning(scope: FirmScope, addresses: Iterable[str]) -> dict[int, set[str]]:
    """The firm's messages with one of `addresses` (normalized) as sender or recipient, each
    with all its participants. A scan in batches of addresses only: participants are stored
    as JSON lists, which the two databases cannot search alike; exports are rare."""
    wanted = set(addresses)
    found: dict[int, set[str]] = {}
    last = 0
    while wanted:
        rows = await (
            scope.query(Message)
            .filter(id__gt=last)
            .order_by("id")
            .limit(_SCAN_BATCH)
            .values_list("id", "from_address", "to_addresses", "cc_addresses")
        )
        for pk, sender, to, cc in rows:
            people = {
                sender.lower(),
                *(a.lower() for a in to or ()),
                *(a.lower() for a in cc or ()),
            }
            if people & wanted:
                found[pk] = people
        if len(rows) < _SCAN_BATCH:
            break
        last = rows[-1][0]
    return found


async def sole_documents(scope: FirmScope, contact_id: int) -> list[Document]:
    """Documents of the accounts where this contact is the only one linked."""
    account_ids = await _linked_account_ids(scope, contact_id)
    others = set(
        await scope.query(AccountContact)
        .filter(account_id__in=account_ids)
        .exclude(contact_id=contact_id)
        .values_list("account_id", flat=True)
    )
    sole = [pk for pk in account_ids if pk not in others]
    return list(
        await scope.query(Document)
        .filter(account_id__in=sole)
        .select_related("account")
        .order_by("account_id", "id")
    )


async def _linked_account_ids(scope: FirmScope, contact_id: int) -> list[int]:
    return list(
        await scope.query(AccountContact)
        .filter(contact_id=contact_id)
        .order_by("account_id")
        .values_list("account_id", flat=True)
    )


async def collect(
    scope: FirmScope,
    contact: Contact,
    *,
    with_mail: bool,
    reader: threads.Reader = threads.NOBODY,
) -> dict[str, Any]:
    """data.json: everything the firm holds about the contact, keyed by what it is. Without
    `with_mail` (the member may not read mail) no synced mail: "messages" is null, and
    "notes" says why. Mail is read through `reader`'s eyes, as Inbox+ shows it to them: the
    bodies of private threads of someone else's personal mailbox are left out (counted in
    "notes"; their owner can export them)."""
    emails = await addresses_of(scope, contact.pk)
    normalized = [e.address_normalized for e in emails]
    account_ids = await _linked_account_ids(scope, contact.pk)
    accounts = await scope.by_ids(Account, account_ids)
    users = list(await scope.query(PortalUser).filter(email_normalized__in=normalized))
    by_address = Q(*(Q(email__iexact=a) for a in normalized), join_type="OR")
    by_user = Q(portal_user_id__in=[u.pk for u in users])
    entries = (
        await scope.query(AuditEntry)
        .filter(Q(by_address, by_user, join_type="OR") if normalized else by_user)
        .order_by("id")
        if normalized or users
        else []
    )
    notes: list[str] = []
    if with_mail:
        messages = await _messages(scope, normalized, notes, reader)
    else:
        messages = None
        notes.append(
            "Synced messages and replies sent from Inbox+ were left out: the staff member "
            "who asked for this export may not read the firm's mail."
        )
    return {
        "format": "portico-contact-export/1",
        "generatedAt": _now().isoformat(),
        "contact": {
            "firstName": contact.first_name,
            "lastName": contact.last_name,
            "createdAt": contact.created_at.isoformat(),
        },
        "emailAddresses": [
            {"address": e.address, "label": e.label, "createdAt": e.created_at.isoformat()}
            for e in emails
        ],
        "accounts": await _accounts(scope, accounts, account_ids, emails),
        "portalUsers": await _portal_users(scope, users),
        "invitations": await _invitations(scope, normalized),
        "auditEntries": [_audit_entry(e, accounts) for e in entries],
        "deliveries": await _deliveries(scope, normalized, with_replies=with_mail),
        "messages": messages,
        "notes": notes,
    }


async def _accounts(
    scope: FirmScope,
    accounts: dict[int, Account],
    account_ids: list[int],
    emails: list[EmailAddress],
) -> list[dict[str, Any]]:
    rows = await scope.query(AccountEmail).filter(
        email_address_id__in=[e.pk for e in emails], account_id__in=account_ids
    )
    address = {e.pk: e.address for e in emails}
    result = []
    for pk in account_ids:
        account = accounts[pk]
        toggles = [
            {
                "address": address[row.email_address_id],
                "login": row.login,
                "notify": row.notify,
                "emailSync": row.email_sync,
                "notificationPreferences": {
                    "all": row.notify_all,
                    "categories": list(row.notify_categories or []),
                },
            }
            for row in sorted(rows, key=lambda r: r.email_address_id)
            if row.account_id == pk
        ]
        result.append({"name": account.name, "type": str(account.type), "addresses": toggles})
    return result


async def _portal_users(scope: FirmScope, users: list[PortalUser]) -> list[dict[str, Any]]:
    result = []
    for user in users:
        names = await (
            scope.query(PortalAccess)
            .filter(portal_user_id=user.pk)
            .order_by("account__name")
            .values_list("account__name", flat=True)
        )
        result.append(
            {
                "email": user.email,
                "activatedAt": user.activated_at.isoformat(),
                "createdAt": user.created_at.isoformat(),
                "accountsWithAccess": list(names),
            }
        )
    return result


async def _invitations(scope: FirmScope, normalized: list[str]) -> list[dict[str, Any]]:
    rows = await (
        scope.query(Invitation)
        .filter(email_normalized__in=normalized)
        .select_related("account")
        .order_by("id")
    )
    return [
        {
            "account": row.account.name,
            "email": row.email,
            "status": invitations.status_of(row),
            "createdAt": row.created_at.isoformat(),
            "sentAt": _iso(row.sent_at),
            "expiresAt": row.expires_at.isoformat(),
            "acceptedAt": _iso(row.accepted_at),
            "revokedAt": _iso(row.revoked_at),
        }
        for row in rows
    ]


def _audit_entry(entry: AuditEntry, accounts: dict[int, Account]) -> dict[str, Any]:
    account = accounts.get(entry.account_id) if entry.account_id else None
    return {
        "action": entry.action,
        "account": account.name if account else None,
        "email": entry.email,
        "before": entry.before,
        "after": entry.after,
        "createdAt": entry.created_at.isoformat(),
    }


async def _deliveries(
    scope: FirmScope, normalized: list[str], *, with_replies: bool
) -> list[dict[str, Any]]:
    """Mail sent to their addresses: what, when and how it went. Not the bodies: a pending
    invitation's body holds a live single-use link. Replies from Inbox+ are synced mail:
    only `with_replies`, as among an account's deliveries (outbox.shows_replies)."""
    if not normalized:
        return []
    by_address = Q(*(Q(to_address__iexact=a) for a in normalized), join_type="OR")
    rows = await scope.query(OutboundEmail).filter(by_address).order_by("id")
    if not with_replies:
        rows = [row for row in rows if not outbox.is_reply(row)]
    return [
        {
            "to": row.to_address,
            "kind": row.kind,
            "category": row.category,
            "subject": row.subject,
            "status": str(row.status),
            "createdAt": row.created_at.isoformat(),
            "sentAt": _iso(row.sent_at),
        }
        for row in rows
    ]


async def _messages(
    scope: FirmScope, normalized: list[str], notes: list[str], reader: threads.Reader
) -> list[dict[str, Any]]:
    """Their synced mail, newest first, at most MAX_MESSAGES (`notes` says when capped)."""
    found = list(await messages_concerning(scope, normalized))
    dated: list[tuple[datetime, int]] = []
    for start in range(0, len(found), _SCAN_BATCH):  # in batches: IN lists have limits
        batch = found[start : start + _SCAN_BATCH]
        dated += await scope.query(Message).filter(id__in=batch).values_list("sent_at", "id")
    newest = [pk for _, pk in sorted(dated, reverse=True)[:MAX_MESSAGES]]
    if len(found) > MAX_MESSAGES:
        notes.append(
            f"Only the newest {MAX_MESSAGES} of {len(found)} synced messages are listed; "
            "ask the firm for the others."
        )
    rows: list[Message] = []
    for start in range(0, len(newest), _SCAN_BATCH):
        rows += await scope.query(Message).filter(id__in=newest[start : start + _SCAN_BATCH])
    rows.sort(key=lambda row: (row.sent_at, row.pk), reverse=True)
    hidden = sum(1 for row in rows if reader.hides(row.private_to_id))
    if hidden:
        notes.append(
            f"The bodies of {hidden} messages were left out: they are in private threads of "
            "a colleague's personal mailbox. Its owner can share the threads or export them."
        )
    return [
        {
            "messageId": row.message_id,
            "direction": row.direction,
            "subject": row.subject,
            "from": row.from_address,
            "to": list(row.to_addresses or []),
            "cc": list(row.cc_addresses or []),
            "sentAt": row.sent_at.isoformat(),
            "textBody": None if reader.hides(row.private_to_id) else row.text_body,
            "htmlBody": None if reader.hides(row.private_to_id) else row.html_body,
            "contentHidden": reader.hides(row.private_to_id),
        }
        for row in rows
    ]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# The ZIP: documents are read in chunks from their store and compressed in a thread (they
# may be large)


async def _zip(data: dict[str, Any], documents: list[Document], settings: Settings) -> IO[bytes]:
    out = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 (the caller closes it)
    listed: list[dict[str, Any]] = []
    taken: set[str] = set()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for document in documents:
            content = await files.find(settings, document.sha256)
            if content is None:
                continue
            name = _unique(f"documents/{document.account_id}/{document.filename}", taken)
            entry = zipfile.ZipInfo(name, document.created_at.astimezone().timetuple()[:6])
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            entry.file_size = content.size  # ZIP64 when it needs it
            with archive.open(entry, "w") as member:
                async for chunk in content.chunks():
                    await asyncio.to_thread(member.write, chunk)
            listed.append({"file": name, "account": document.account.name, "size": document.size})
        data = {**data, "documents": listed}
        text = json.dumps(data, indent=2, ensure_ascii=False)
        await asyncio.to_thread(archive.writestr, "data.json", text)
    out.seek(0)
    return out


def _unique(name: str, taken: set[str]) -> str:
    """The same file name twice in one account gets a number, as a desktop would do it."""
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{stem} ({number}){dot}{extension}"
    taken.add(candidate)
    return candidate
