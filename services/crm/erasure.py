"""A contact erased (GDPR article 17): the person goes, the firm's records of what was done
stay with the address replaced by a tombstone.

Erased, in one transaction: the contact with its addresses, links and toggles (through
records.delete_contact, so its consequences are deleteContact's), the portal users of its
addresses with their sessions and access, the invitations and pending imports of earlier mail
of those addresses, and the synced messages that concern only them (every other participant
is the firm itself). Tombstoned: the address in audit entries (also inside their before and
after, where the contact's names are blanked too) and in delivery records, whose bodies are
dropped and whose unsent mail is cancelled. Staff alerts and digests of new client mail that
name an erased address (services/mail/alerts, digests) lose their bodies, alerts their subject
too (the erased mail's), and unsent ones are cancelled. The sign-in throttle rows of the
addresses go (their key would confirm a guessed address). Webhook payloads (queued, or kept
for replays) get the tombstone too, and portal_access.revoked announces the end of the erased
users' access under it. Kept: the accounts' documents
(the firm's retention duty) and messages that also concern other people. Attachment contents
go after the commit.
"""

from __future__ import annotations

import html
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from models import (
    AuditEntry,
    Contact,
    DeliveryStatus,
    Document,
    Firm,
    HistoryImport,
    Invitation,
    Mailbox,
    OutboundEmail,
    PortalAccess,
    PortalUser,
    Session,
    SignInThrottle,
    StaffMember,
    WebhookAttempt,
    WebhookDelivery,
)
from portico.settings import Settings
from services.crm import privacy, records
from services.mail import alerts, digests, removal
from services.outbound import outbox
from services.shared import audit, files, throttle_keys
from services.shared.scope import FirmScope
from services.webhooks import emit

ERASED_NAME = "(erased)"
_SCAN_BATCH = 1000


@dataclass
class Erasure:
    erased: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def tombstone() -> str:
    """A stand-in address: random, so nothing leads back to the erased one, and of the
    reserved .invalid domain, so no mail can ever go to it."""
    return f"erased-{secrets.token_hex(5)}@erased.invalid"


async def erase_contact(
    scope: FirmScope, staff: StaffMember, contact_id: int | None, settings: Settings
) -> Erasure:
    contact = await scope.get(Contact, contact_id, "id")
    async with in_transaction():
        emails = await privacy.addresses_of(scope, contact.pk)
        stones = {e.address_normalized: tombstone() for e in emails}
        normalized = list(stones)
        own = await _firm_addresses(scope)
        concerning = await privacy.messages_concerning(scope, normalized)
        only_theirs = [pk for pk, people in concerning.items() if people <= set(normalized) | own]
        documents = await privacy.sole_documents(scope, contact.pk)
        shared_documents = await _documents_of_linked_accounts(scope, contact.pk)
        users = list(await scope.query(PortalUser).filter(email_normalized__in=normalized))
        sessions = await Session.filter(portal_user_id__in=[u.pk for u in users]).count()

        await _announce_access_ending(scope, users, stones)
        await records.delete_contact(scope, staff, contact.pk)
        await scope.query(PortalUser).filter(pk__in=[u.pk for u in users]).delete()
        invited = await scope.query(Invitation).filter(email_normalized__in=normalized).delete()
        imports = (
            await scope.query(HistoryImport).filter(address_normalized__in=normalized).delete()
        )
        sha256s = await removal.delete_messages(scope, only_theirs, settings, forget_files=False)
        deliveries = await _tombstone_deliveries(scope, stones, settings)
        pattern = _address_pattern(stones)
        staff_alerts = await _scrub_staff_alerts(scope, pattern, settings)
        await _forget_throttles(scope, normalized)
        audited = ("email", "before", "after")
        entries = await _tombstone_columns(
            scope.query(AuditEntry), audited, pattern, stones, contact.pk
        )
        # Webhook events not yet sent, and those kept to be replayed, name the address too,
        # and so may a receiver's answers kept in the attempt logs (they often echo them).
        await _tombstone_columns(
            scope.query(WebhookDelivery), ("payload",), pattern, stones, contact.pk
        )
        answers = WebhookAttempt.filter(delivery__firm_id=scope.firm_id)
        await _tombstone_columns(answers, ("error",), pattern, stones, contact.pk)
        counts = {
            "addresses": len(emails),
            "portalUsers": len(users),
            "sessions": sessions,
            "invitations": invited,
            "historyImports": imports,
            "messages": len(only_theirs),
            "deliveriesTombstoned": deliveries,
            "staffAlertsScrubbed": staff_alerts,
            "auditEntriesTombstoned": entries,
        }
        # Its own entry names the contact's id and what was done, never a name or address.
        await audit.record(
            scope,
            "CONTACT_ERASED",
            account_id=None,
            staff=staff,
            after={"contact": contact.pk, **counts},
        )
    await files.forget(settings, sha256s)  # after the commit: a rollback keeps them
    return _answer(
        counts, len(concerning) - len(only_theirs), len(documents), len(shared_documents)
    )


async def _firm_addresses(scope: FirmScope) -> set[str]:
    """The firm's own addresses: its mailboxes and its staff."""
    boxes = await scope.query(Mailbox).values_list("address_normalized", flat=True)
    staff = await scope.query(StaffMember).values_list("email_normalized", flat=True)
    return {a.lower() for a in (*boxes, *staff)}


async def _documents_of_linked_accounts(scope: FirmScope, contact_id: int) -> list[int]:
    return list(
        await scope.query(Document)
        .filter(account__contact_links__contact_id=contact_id)
        .values_list("id", flat=True)
    )


async def _tombstone_deliveries(
    scope: FirmScope, stones: dict[str, str], settings: Settings
) -> int:
    """Delivery records keep what was sent when, to a tombstone; the bodies (which may greet
    the person by name) are replaced, and mail not sent yet is cancelled."""
    erased_body = outbox.encrypt_bodies(settings, outbox.Bodies(text=ERASED_NAME, html=ERASED_NAME))
    count = 0
    for address, stone in stones.items():
        rows = scope.query(OutboundEmail).filter(to_address__iexact=address)
        await rows.filter(status=DeliveryStatus.QUEUED).update(status=DeliveryStatus.CANCELLED)
        count += await rows.update(to_address=stone, body_encrypted=erased_body)
    return count


def _address_pattern(stones: dict[str, str]) -> re.Pattern[str] | None:
    """The erased addresses, whole: erasing ann@x.example leaves joann@x.example alone."""
    if not stones:
        return None
    alternatives = "|".join(re.escape(a) for a in stones)
    return re.compile(rf"(?<![\w.+-])(?:{alternatives})(?![\w-]|\.\w)", re.IGNORECASE)


async def _scrub_staff_alerts(
    scope: FirmScope, pattern: re.Pattern[str] | None, settings: Settings
) -> int:
    """Staff alerts and digests that name an erased address (as the sender of client mail):
    the body goes, an alert's subject too (it holds the erased mail's subject), and unsent
    ones are cancelled; how many. A scan of the bodies, decrypted, in batches: the sender is
    only in them (digests list many senders). Erasures are rare."""
    if pattern is None:
        return 0
    erased_body = outbox.encrypt_bodies(settings, outbox.Bodies(text=ERASED_NAME, html=ERASED_NAME))
    changed, last = 0, 0
    while True:
        rows = list(
            await scope.query(OutboundEmail)
            .filter(id__gt=last, kind__in=[alerts.ALERT_KIND, digests.DIGEST_KIND])
            .order_by("id")
            .limit(_SCAN_BATCH)
        )
        for row in rows:
            bodies = outbox.decrypt_bodies(settings, row)
            said = (row.subject, bodies.text, html.unescape(bodies.html))
            if not any(pattern.search(text) for text in said):
                continue
            update: dict[str, Any] = {"body_encrypted": erased_body}
            if row.kind == alerts.ALERT_KIND:
                update["subject"] = ERASED_NAME
            if row.status == DeliveryStatus.QUEUED:
                update["status"] = DeliveryStatus.CANCELLED
            await OutboundEmail.filter(pk=row.pk).update(**update)
            changed += 1
        if len(rows) < _SCAN_BATCH:
            return changed
        last = rows[-1].pk


async def _forget_throttles(scope: FirmScope, normalized: list[str]) -> None:
    """The sign-in throttle rows of the erased addresses, staff and client sign-in alike."""
    firm = await Firm.get(pk=scope.firm_id)
    keys = [
        throttle_keys.account_key(kind, firm.slug, address)
        for kind in ("staff", "client")
        for address in normalized
    ]
    await SignInThrottle.filter(key__in=keys).delete()


async def _tombstone_columns(
    rows: QuerySet[Any],
    columns: tuple[str, ...],
    pattern: re.Pattern[str] | None,
    stones: dict[str, str],
    contact_id: int,
) -> int:
    """Replaces the addresses in `columns` of `rows`, inside JSON values too (with the
    contact's names blanked there); how many rows changed. A scan in batches: JSON columns
    cannot be searched alike on both databases."""
    changed, last = 0, 0
    while True:
        batch = (
            await rows.filter(id__gt=last)
            .order_by("id")
            .limit(_SCAN_BATCH)
            .values_list("id", *columns)
        )
        for pk, *values in batch:
            new = [_scrub(value, pattern, stones, contact_id) for value in values]
            if new != values:
                await rows.model.filter(pk=pk).update(**dict(zip(columns, new, strict=True)))
                changed += 1
        if len(batch) < _SCAN_BATCH:
            return changed
        last = batch[-1][0]


async def _announce_access_ending(
    scope: FirmScope, users: list[PortalUser], stones: dict[str, str]
) -> None:
    """portal_access.revoked for each account the erased users could enter, naming each by
    its stand-in address: the webhook tells other tools to close the door without carrying
    the erased address out of Portico."""
    rows = await (
        PortalAccess.filter(portal_user_id__in=[u.pk for u in users])
        .order_by("account_id", "portal_user_id")
        .values_list("account_id", "portal_user_id")
    )
    stand_in = {u.pk: stones[u.email_normalized] for u in users}
    by_account: dict[int, list[tuple[int, str]]] = {}
    for account_id, user_id in rows:
        by_account.setdefault(account_id, []).append((user_id, stand_in[user_id]))
    for account_id, revoked in by_account.items():
        await emit.portal_access_revoked(scope.firm_id, account_id, revoked, emit.CONTACT_ERASED)


def _scrub(
    value: Any, pattern: re.Pattern[str] | None, stones: dict[str, str], contact_id: int
) -> Any:
    if isinstance(value, str):
        if pattern is None:
            return value
        return pattern.sub(lambda m: stones[m.group(0).lower()], value)
    if isinstance(value, list):
        return [_scrub(v, pattern, stones, contact_id) for v in value]
    if isinstance(value, dict):
        scrubbed = {k: _scrub(v, pattern, stones, contact_id) for k, v in value.items()}
        if scrubbed.get("contact") == contact_id:
            for name in ("firstName", "lastName"):
                if name in scrubbed:
                    scrubbed[name] = ERASED_NAME
        return scrubbed
    return value


def _answer(counts: dict[str, int], shared_messages: int, sole: int, documents: int) -> Erasure:
    erased = [
        "The contact record with the person's names.",
        f"{counts['addresses']} email address(es) with their labels, their LOGIN, NOTIFY "
        "and EMAIL SYNC settings and notification preferences in every account, and the "
        "contact's links to accounts.",
        f"{counts['portalUsers']} client portal sign-in(s) with {counts['sessions']} "
        "session(s) and their access to accounts.",
        f"{counts['invitations']} invitation(s) to the portal.",
        f"{counts['historyImports']} pending or finished import(s) of earlier mail.",
        f"{counts['messages']} synced message(s) that concerned only this person, with "
        "their attachments.",
    ]
    kept = [
        f"{documents} document(s) of the accounts this person was linked to "
        f"({sole} in accounts where they were the only contact): documents belong to the "
        "accounts and stay under the firm's retention duty; delete them with deleteDocument "
        "when that duty ends.",
        f"{shared_messages} synced message(s) that also concern other people: they are part "
        "of those people's correspondence and stay as they are.",
        f"{counts['auditEntriesTombstoned']} audit entr(y/ies) and "
        f"{counts['deliveriesTombstoned']} delivery record(s): kept as the firm's record of "
        "what was done and sent, with the address replaced by a random "
        "erased-…@erased.invalid tombstone, delivery bodies removed and unsent mail "
        "cancelled.",
        f"{counts['staffAlertsScrubbed']} staff alert(s) and digest(s) of new client mail "
        "that named this person: kept as a record that they were sent, without their "
        "bodies (alerts without their subjects); unsent ones cancelled.",
        "The accounts themselves, and this erasure's own audit entry (CONTACT_ERASED), which "
        "names neither the person nor an address.",
    ]
    return Erasure(erased, kept)
