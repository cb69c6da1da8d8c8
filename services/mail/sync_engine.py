"""EMAIL SYNC, the engine: one pass over a connected mailbox's INBOX and Sent folders.

`sync_mailbox` logs in over IMAP (aioimaplib, through services/mail/mailboxes.open_imap: exactly
as connectMailbox checked the login), finds INBOX and the Sent folder (SPECIAL-USE
`\\Sent`, else a usual name), and for each folder reads only the UIDs above its cursor
(MailboxFolder: UIDVALIDITY and the last UID seen). A changed UIDVALIDITY resets the cursor
and rescans the folder; nothing is stored twice, as a message is found again by its key.

What is read, and how:
- Each batch of new UIDs is read in two steps: first only the From, To and Cc headers (and
  each message's size), then the whole message (BODY.PEEK[]) of those with a participant
  whose address has EMAIL SYNC on in an account of the firm. The bodies of other people's
  mail are never downloaded, let alone stored (privacy).
- Whole messages are downloaded a few at a time, up to BODY_BATCH_BYTES a round trip, and
  each raw message is let go once parsed. (A message whose participants cannot be read from
  its headers is downloaded whole to find them.)
- Every read is a PEEK: the sync never sets \\Seen, and never stores flags, deletes, moves or
  expunges anything on the server.

What is kept (stored once per firm, unique on firm + SHA-256 of the Message-ID): a message
with a participant (From, To, Cc) whose address has EMAIL SYNC on in some account of the
firm, linked to every such account. A message seen again (another folder or mailbox, a
rescan) gains the accounts that are new since. OUTBOUND when it is from one of the firm's
mailboxes, else INBOUND. The new messages of one downloaded chunk are written in one
transaction (one by one when another pass stored one of them meanwhile), and an event per
message goes out on the bus after the commit.

Attachments (services/mail/attachments): when a message is stored for the first time, its
attachments are kept by content hash (files written before the transaction, rows inside it);
one over PORTICO_MAX_UPLOAD_BYTES is listed and not kept. A sync pass also saves them into
the Documents of every account it links the message to (when stored, or linked later) whose
auto-save attachments option is on, for mail sent since the mailbox was connected:
"attachments of future synced mail". So the first pass of a new mailbox, a rescan and a
history import (earlier mail) keep attachments but save none into Documents.

Failures: a message that cannot be parsed is counted and skipped (parsing itself falls back
field by field, so this is rare); a connection, login or server failure ends the pass with the
mailbox FAILED and a readable `last_error` (never the password). The cursor only moves past
messages that were handled, so the next pass takes up where this one stopped.

One pass at a time per mailbox: the pass claims the mailbox through `lease_until` (a
conditional UPDATE, so it holds on SQLite and PostgreSQL alike; services/shared/leases), renews it
after each batch, and a second caller meanwhile gets `busy` back. A pass that dies leaves a
lease that runs out after LEASE_SECONDS; a pass that ran past its lease finds its renewal
refused (another process took over) and stops without touching the mailbox row. `stop` ends
a pass between batches, as a success: the cursor stands after what was stored.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import aioimaplib
from cryptography.fernet import InvalidToken
from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from models import AccountEmail, Mailbox, MailboxFolder, Message, MessageAccount, SyncStatus
from portico.settings import Settings
from services.mail import attachments
from services.mail.logins import MailLoginError, MailServer, close_imap, open_imap
from services.mail.mailboxes import mailbox_password
from services.mail.parse import (
    ParsedMessage,
    message_key,
    parse_message,
    parse_participants,
    subject_thread_key,
)
from services.shared.errors import input_error
from services.shared.leases import lease_token
from services.shared.pubsub import EventBus, announce_message
from services.shared.scope import FirmScope

log = logging.getLogger(__name__)

FETCH_BATCH = 50  # UIDs per round trip (headers, then the kept messages' bodies)
IMAP_TIMEOUT = 30.0  # seconds without an answer before a command counts as failed
LEASE_SECONDS = 900  # a pass renews its claim after every batch
MAX_ERROR = 1000  # characters of last_error
PARSE_IN_THREAD_BYTES = 256 * 1024
BODY_BATCH_BYTES = 16 * 1024 * 1024  # whole messages per round trip (at least one)
LOGOUT_SECONDS = 2.0
AUTO_SAVE_SLACK = timedelta(hours=1)

INBOX = "INBOX"
SENT = "SENT"
INBOUND = "INBOUND"
OUTBOUND = "OUTBOUND"
# Fallback when no folder carries SPECIAL-USE \Sent: the usual names, most usual first,
# compared without case on the last level of the name ("INBOX.Sent" counts as "Sent").
SENT_NAMES = ("sent", "sent items", "sent messages")
PARTICIPANT_FIELDS = "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO CC)])"
MESSAGE_FIELDS = "(UID BODY.PEEK[])"

T = TypeVar("T")


class MailSyncError(Exception):
    """A failure worth showing as the mailbox's last error (its text holds no secret)."""


@dataclass
class SyncResult:
    mailbox_id: int
    status: SyncStatus
    fetched: int = 0  # new messages seen on the server (their participants read)
    stored: int = 0  # messages stored for the first time
    linked: int = 0  # messages already stored that gained accounts
    skipped: int = 0  # no participant with EMAIL SYNC on: not stored (nor downloaded)
    unreadable: int = 0  # could not be parsed at all: skipped, the sync went on
    error: str | None = None  # the mailbox's last_error when the pass failed
    busy: bool = False  # another pass of this mailbox was running: nothing was done
    message_ids: list[int] = field(default_factory=list)  # stored or newly linked


@dataclass(frozen=True)
class StoreOutcome:
    message: Message
    created: bool
    new_account_ids: list[int]  # accounts linked by this call (all of them when created)


# The pass -----------------------------------------------------------------------------------


async def sync_mailbox(
    scope: FirmScope,
    mailbox: Mailbox,
    settings: Settings,
    bus: EventBus | None = None,
    stop: asyncio.Event | None = None,
) -> SyncResult:
    """One sync pass of `mailbox` (INBOX, then Sent). Returns what it did; an IMAP failure is
    reported in the result and on the mailbox (FAILED, last_error), not raised. `stop` ends
    the pass after the batch in hand."""
    if mailbox.firm_id != scope.firm_id:
        raise input_error("NOT_FOUND", "No such Mailbox.", "id")
    result = SyncResult(mailbox.pk, SyncStatus.SYNCING)
    lease = await _claim(scope, mailbox)
    if lease is None:
        current = await scope.query(Mailbox).get_or_none(pk=mailbox.pk)
        result.status = current.sync_status if current else mailbox.sync_status
        result.busy = True
        return result
    held = _Held(lease)
    password = ""
    try:
        password = _password(settings, mailbox)
        own = {mailbox.address_normalized.lower()}
        own.update(
            a.lower()
            for a in await scope.query(Mailbox).values_list("address_normalized", flat=True)
        )
        session = await ImapSession.open(mailbox, password)
        try:
            # Attachments of mail sent since the mailbox was connected are auto-saved.
            pass_ = _Pass(scope, mailbox, session, own, bus, result, settings, mailbox.created_at)
            pass_.lease, pass_.stop = held, stop
            for role, name in await session.folders():
                await pass_.folder(role, name)
        finally:
            await session.close()
    except _LeaseLost:
        log.warning("mail sync of mailbox %s ran past its lease: stopped", mailbox.pk)
        result.error = "Another process took this mailbox over."
        result.status = SyncStatus.SYNCING
        return result  # the row is the new holder's now: left alone
    except MailSyncError as exc:
        result.error = _scrub(str(exc), password)
    except asyncio.CancelledError:
        await _finish(scope, mailbox, held.token, result, "The sync was interrupted.")
        raise
    except Exception as exc:  # a bug or a database failure: FAILED, logged with its trace
        log.exception("mail sync of mailbox %s failed", mailbox.pk)
        result.error = _scrub(f"Unexpected error: {type(exc).__name__}: {exc}", password)
    await _finish(scope, mailbox, held.token, result, result.error)
    log.info(
        "mail sync of mailbox %s: %s (%d new, %d stored, %d linked, %d skipped, %d unreadable)",
        mailbox.pk,
        result.status,
        result.fetched,
        result.stored,
        result.linked,
        result.skipped,
        result.unreadable,
    )
    return result


async def sync_now(
    scope: FirmScope, mailbox_id: int | None, settings: Settings, bus: EventBus | None = None
) -> Mailbox:
    """Syncs one mailbox of the firm now (syncMailbox); returns it as the sync left it."""
    mailbox = await scope.get(Mailbox, mailbox_id, "id")
    await sync_mailbox(scope, mailbox, settings, bus)
    return await scope.get(Mailbox, mailbox.pk, "id")


Progress = Callable[[SyncResult], Awaitable[None]]


async def import_history(
    scope: FirmScope,
    mailbox: Mailbox,
    settings: Settings,
    addresses: Sequence[str],
    bus: EventBus | None = None,
    progress: Progress | None = None,
) -> SyncResult:
    """Earlier mail of `addresses` (EMAIL SYNC just turned on) from INBOX and Sent of
    `mailbox`: IMAP SEARCH on FROM, TO and CC, then the same reads and storing as a sync pass.
    Folder cursors are left alone, and it runs beside a sync pass of the same mailbox (a
    message both store is found again by its key). `progress` is awaited after every batch.
    Failures are reported in the result (`error`), not raised and not set on the mailbox."""
    if mailbox.firm_id != scope.firm_id:
        raise input_error("NOT_FOUND", "No such Mailbox.", "id")
    result = SyncResult(mailbox.pk, SyncStatus.SYNCING)
    wanted = sorted({a.strip().lower() for a in addresses if a.strip()})
    password = ""
    try:
        password = _password(settings, mailbox)
        own = {
            a.lower()
            for a in await scope.query(Mailbox).values_list("address_normalized", flat=True)
        }
        session = await ImapSession.open(mailbox, password)
        try:
            # Earlier mail: its attachments are kept, not saved into Documents.
            pass_ = _Pass(scope, mailbox, session, own, bus, result, settings, None)
            for _role, name in await session.folders():
                await session.select(name)
                uids = await session.search_participants(wanted)
                for start in range(0, len(uids), FETCH_BATCH):
                    await pass_.batch(uids[start : start + FETCH_BATCH])
                    if progress is not None:
                        await progress(result)
        finally:
            await session.close()
        result.status = SyncStatus.IDLE
    except MailSyncError as exc:
        result.error = _scrub(str(exc), password)
    except Exception as exc:  # a bug or a database failure: logged with its trace
        log.exception("history import from mailbox %s failed", mailbox.pk)
        result.error = _scrub(f"Unexpected error: {type(exc).__name__}: {exc}", password)
    if result.error is not None:
        result.status = SyncStatus.FAILED
    return result


@dataclass
class _Held:
    """A pass's claim on its mailbox: the lease value, renewed after every batch."""

    token: datetime


class _LeaseLost(Exception):
    """The pass ran past its lease and another process claimed the mailbox."""


async def _claim(scope: FirmScope, mailbox: Mailbox) -> datetime | None:
    """The lease (its token) when the mailbox was free or its lease had run out, else None."""
    now = _now()
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    lease = lease_token(now, LEASE_SECONDS)
    claimed = await (
        scope.query(Mailbox)
        .filter(free, id=mailbox.pk)
        .update(sync_status=SyncStatus.SYNCING, lease_until=lease)
    )
    if not claimed:
        return None
    mailbox.sync_status = SyncStatus.SYNCING
    return lease


async def _renew(scope: FirmScope, mailbox: Mailbox, lease: datetime) -> datetime:
    """A fresh lease, only while this pass still holds the mailbox."""
    renewed = lease_token(_now(), LEASE_SECONDS)
    held = (
        await scope.query(Mailbox)
        .filter(id=mailbox.pk, lease_until=lease)
        .update(lease_until=renewed)
    )
    if not held:
        raise _LeaseLost
    return renewed


async def _finish(
    scope: FirmScope, mailbox: Mailbox, lease: datetime, result: SyncResult, error: str | None
) -> None:
    values: dict[str, object] = {"lease_until": None}
    if error is None:
        values.update(sync_status=SyncStatus.IDLE, last_synced_at=_now(), last_error=None)
    else:
        result.error = error[:MAX_ERROR]
        values.update(sync_status=SyncStatus.FAILED, last_error=result.error)
    held = await scope.query(Mailbox).filter(id=mailbox.pk, lease_until=lease).update(**values)
    if held:
        for name, value in values.items():
            setattr(mailbox, name, value)
        result.status = mailbox.sync_status
    else:  # another process took over meanwhile: the row is its own
        result.status = SyncStatus.SYNCING


def _password(settings: Settings, mailbox: Mailbox) -> str:
    try:
        return mailbox_password(settings, mailbox)
    except (InvalidToken, UnicodeError):
        raise MailSyncError(
            "The stored mailbox password cannot be decrypted (was PORTICO_SECRET_KEY "
            "changed?): connect the mailbox again."
        ) from None


def _scrub(text: str, password: str) -> str:
    if password:
        text = text.replace(password, "***")
    return text[:MAX_ERROR]


def _now() -> datetime:
    return datetime.now(UTC)


class _Pass:
    """The state of one pass: where messages go and what it did."""

    def __init__(
        self,
        scope: FirmScope,
        mailbox: Mailbox,
        session: ImapSession,
        own_addresses: set[str],
        bus: EventBus | None,
        result: SyncResult,
        settings: Settings,
        auto_save_since: datetime | None,
    ) -> None:
        self.scope = scope
        self.mailbox = mailbox
        self.session = session
        self.own_addresses = own_addresses
        self.bus = bus
        self.result = result
        self.settings = settings
        # Attachments of mail sent since then go into auto-saving accounts' Documents.
        self.auto_save_since = auto_save_since
        self.lease: _Held | None = None  # a sync pass's claim on the mailbox
        self.stop: asyncio.Event | None = None

    async def folder(self, role: str, name: str) -> None:
        cursor = await _cursor(self.mailbox, role, name)
        uidvalidity, uidnext = await self.session.select(name)
        if uidvalidity is None or cursor.uidvalidity != uidvalidity:
            if cursor.uidvalidity is not None:
                log.info(
                    "mailbox %s, folder %s: UIDVALIDITY changed (%s to %s), rescanning",
                    self.mailbox.pk,
                    name,
                    cursor.uidvalidity,
                    uidvalidity,
                )
            cursor.uidvalidity, cursor.last_uid = uidvalidity, 0
            await cursor.save(update_fields=["name", "uidvalidity", "last_uid"])
        if uidnext is not None and uidnext <= cursor.last_uid + 1:
            return  # nothing new since the last pass
        uids = [u for u in await self.session.uids_after(cursor.last_uid) if u > cursor.last_uid]
        for start in range(0, len(uids), FETCH_BATCH):
            if self.stop is not None and self.stop.is_set():
                return  # the cursor stands after what was stored
            batch = uids[start : start + FETCH_BATCH]
            await self.batch(batch)
            if self.lease is not None:
                self.lease.token = await _renew(self.scope, self.mailbox, self.lease.token)
            cursor.last_uid = batch[-1]
            await cursor.save(update_fields=["last_uid"])

    async def batch(self, uids: Sequence[int]) -> None:
        self.result.fetched += len(uids)
        headers, sizes = await self.session.fetch(uids, PARTICIPANT_FIELDS)
        participants: dict[int, list[str]] = {}
        unclear: set[int] = set()  # who it concerns is known only once it is read whole
        for uid in uids:
            try:
                participants[uid] = parse_participants(headers[uid])
            except KeyError:
                unclear.add(uid)
            except Exception:
                log.warning("mailbox %s: UID %s: unreadable headers", self.mailbox.pk, uid)
                unclear.add(uid)
        synced = await synced_accounts(
            self.scope, {a for people in participants.values() for a in people}
        )
        wanted = [
            uid
            for uid in uids
            if uid in unclear or any(a in synced for a in participants.get(uid, ()))
        ]
        self.result.skipped += len(uids) - len(wanted)
        for chunk in _by_size(wanted, sizes, BODY_BATCH_BYTES):
            bodies, _ = await self.session.fetch(chunk, MESSAGE_FIELDS)
            found: list[tuple[ParsedMessage, set[int]]] = []
            for uid in chunk:
                raw = bodies.pop(uid, None)  # let go of each message once it is parsed
                if raw is None:
                    continue  # expunged meanwhile
                item = await self.message(uid, raw, synced, uid in unclear)
                if item is not None:
                    found.append(item)
            outcomes = await store_messages(
                self.scope,
                found,
                self.own_addresses,
                mailbox_id=self.mailbox.pk,
                settings=self.settings,
                auto_save_since=self.auto_save_since,
            )
            for outcome in outcomes:
                await self.count(outcome)

    async def count(self, outcome: StoreOutcome) -> None:
        """Counts a stored message and announces it (after its commit)."""
        if outcome.created:
            self.result.stored += 1
        elif outcome.new_account_ids:
            self.result.linked += 1
        if outcome.new_account_ids:
            self.result.message_ids.append(outcome.message.pk)
            await announce_message(
                self.bus, self.scope.firm_id, outcome.message.pk, outcome.new_account_ids
            )

    async def message(
        self, uid: int, raw: bytes, synced: dict[str, set[int]], unclear: bool
    ) -> tuple[ParsedMessage, set[int]] | None:
        """Parses one downloaded message: with the accounts it goes to, or None when it goes
        nowhere or cannot be read (`unclear`: its participants were not known from the
        headers, so they are looked up now)."""
        limit = self.settings.max_upload_bytes
        try:
            # A big message (attachments) is parsed off the event loop, which also serves
            # the API when the sync runs inside `portico serve`.
            if len(raw) > PARSE_IN_THREAD_BYTES:
                parsed = await asyncio.to_thread(parse_message, raw, max_attachment_bytes=limit)
            else:
                parsed = parse_message(raw, max_attachment_bytes=limit)
        except Exception:
            log.exception("mailbox %s: UID %s could not be parsed", self.mailbox.pk, uid)
            self.result.unreadable += 1
            return None
        if unclear:
            missing = [a for a in parsed.participants if a not in synced]
            synced.update(await synced_accounts(self.scope, missing))
        account_ids = {a for p in parsed.participants for a in synced.get(p, ())}
        if not account_ids:
            self.result.skipped += 1
            return None
        return parsed, account_ids


def _by_size(uids: Sequence[int], sizes: dict[int, int], budget: int) -> list[list[int]]:
    """`uids` in order, in runs of at most `budget` bytes (a bigger message goes alone; an
    unknown size counts as nothing)."""
    runs: list[list[int]] = []
    run: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if run and total + size > budget:
            runs.append(run)
            run, total = [], 0
        run.append(uid)
        total += size
    if run:
        runs.append(run)
    return runs


async def _cursor(mailbox: Mailbox, role: str, name: str) -> MailboxFolder:
    """The folder's cursor, one per role; a folder under a new name starts from scratch."""
    cursor = await MailboxFolder.get_or_none(mailbox_id=mailbox.pk, role=role)
    if cursor is None:
        return await MailboxFolder.create(mailbox_id=mailbox.pk, role=role, name=name)
    if cursor.name != name:
        cursor.name, cursor.uidvalidity, cursor.last_uid = name, None, 0
    return cursor


# Storing ------------------------------------------------------------------------------------


async def synced_accounts(scope: FirmScope, addresses: Iterable[str]) -> dict[str, set[int]]:
    """For each of `addresses` (bare, lower-cased) with EMAIL SYNC on somewhere in the firm,
    the accounts where it is on."""
    wanted = list(set(addresses))
    if not wanted:
        return {}
    rows = await (
        scope.query(AccountEmail)
        .filter(email_sync=True, email_address__address_normalized__in=wanted)
        .values_list("email_address__address_normalized", "account_id")
    )
    found: dict[str, set[int]] = {}
    for address, account_id in rows:
        found.setdefault(address, set()).add(account_id)
    return found


async def store_message(
    scope: FirmScope,
    parsed: ParsedMessage,
    account_ids: Iterable[int],
    own_addresses: Iterable[str] = (),
    mailbox_id: int | None = None,
    *,
    settings: Settings | None = None,
    auto_save_since: datetime | None = None,
) -> StoreOutcome:
    """Stores `parsed` once per firm and links it to `account_ids`; a message already stored
        (same key) only gains the accounts it lacks. Each write is one short transaction.

        With `settings`, a message stored for the first time keeps its attachments (files written
        before its transaction). With `auto_save_since` too, for a message sent since then, each
    account linked by this call whose
        auto-save attachments option is on gets the kept attachments among its Documents."""
    accounts = set(account_ids)
    existing = await scope.query(Message).get_or_none(message_key=parsed.message_key)
    if existing is None:
        thread_key = await thread_key_for(scope, parsed)
        fields = _message_fields(scope, parsed, set(own_addresses), mailbox_id)
        kept = await attachments.keep(parsed.attachments, settings) if settings else []
        try:
            async with in_transaction():
                message = await Message.create(**fields, thread_key=thread_key)
                await _link(scope, message, sorted(accounts))
                await attachments.record(scope, message.pk, kept)
                if settings is not None and kept and _auto_saves(parsed, auto_save_since):
                    await attachments.auto_save(scope, message.pk, accounts, settings)
            return StoreOutcome(message, True, sorted(accounts))
        except IntegrityError:
            # Stored meanwhile by another pass (another mailbox with the same message).
            existing = await scope.query(Message).get(message_key=parsed.message_key)
    linked = set(
        await MessageAccount.filter(message_id=existing.pk).values_list("account_id", flat=True)
    )
    new = sorted(accounts - linked)
    if new:
        async with in_transaction():
            await _link(scope, existing, new, ignore_conflicts=True)
            if settings is not None and _auto_saves(parsed, auto_save_since):
                await attachments.auto_save(scope, existing.pk, new, settings)
    return StoreOutcome(existing, False, new)


async def store_messages(
    scope: FirmScope,
    items: Sequence[tuple[ParsedMessage, set[int]]],
    own_addresses: Iterable[str] = (),
    mailbox_id: int | None = None,
    *,
    settings: Settings | None = None,
    auto_save_since: datetime | None = None,
) -> list[StoreOutcome]:
    """`store_message` for many messages (one fetched chunk) with few statements: the new
    ones are stored in one transaction. A message already stored, or seen twice in `items`,
    goes through `store_message`; so do all of them when another pass stored one meanwhile
    (the transaction is then rolled back whole and nothing is half-written)."""
    existing = set(
        await scope.query(Message)
        .filter(message_key__in=[parsed.message_key for parsed, _ in items])
        .values_list("message_key", flat=True)
    )
    fresh: dict[str, tuple[ParsedMessage, set[int]]] = {}
    later: list[tuple[ParsedMessage, set[int]]] = []
    for parsed, accounts in items:
        if parsed.message_key in existing or parsed.message_key in fresh:
            later.append((parsed, accounts))
        else:
            fresh[parsed.message_key] = (parsed, accounts)
    outcomes: list[StoreOutcome] = []
    if fresh:
        try:
            outcomes = await _store_new(
                scope,
                list(fresh.values()),
                set(own_addresses),
                mailbox_id,
                settings,
                auto_save_since,
            )
        except (IntegrityError, OperationalError):
            # Raced with another pass (a duplicate key; on PostgreSQL maybe a deadlock of the
            # two transactions): rolled back whole, then one by one, as it sorts them out.
            later = list(items)
    for parsed, accounts in later:
        outcomes.append(
            await store_message(
                scope,
                parsed,
                accounts,
                own_addresses,
                mailbox_id,
                settings=settings,
                auto_save_since=auto_save_since,
            )
        )
    return outcomes


async def _store_new(
    scope: FirmScope,
    items: Sequence[tuple[ParsedMessage, set[int]]],
    own: set[str],
    mailbox_id: int | None,
    settings: Settings | None,
    auto_save_since: datetime | None,
) -> list[StoreOutcome]:
    """Messages none of which is stored yet, in one transaction (IntegrityError when another
    pass stored one meanwhile)."""
    threads = await _thread_keys(scope, [parsed for parsed, _ in items])
    kept = [
        await attachments.keep(parsed.attachments, settings) if settings else []
        for parsed, _ in items
    ]
    outcomes: list[StoreOutcome] = []
    async with in_transaction():
        for (parsed, accounts), thread_key, files in zip(items, threads, kept, strict=True):
            message = await Message.create(
                **_message_fields(scope, parsed, own, mailbox_id), thread_key=thread_key
            )
            await attachments.record(scope, message.pk, files)
            if settings is not None and files and _auto_saves(parsed, auto_save_since):
                await attachments.auto_save(scope, message.pk, accounts, settings)
            outcomes.append(StoreOutcome(message, True, sorted(accounts)))
        await MessageAccount.bulk_create(
            [
                _link_row(scope, outcome.message, account_id)
                for outcome in outcomes
                for account_id in outcome.new_account_ids
            ]
        )
    return outcomes


def _auto_saves(parsed: ParsedMessage, since: datetime | None) -> bool:
    """Whether the message is "future synced mail" whose attachments are auto-saved: sent
    since `since`, give or take AUTO_SAVE_SLACK (the Date header is the sender's clock, and
    mail may take a while to arrive)."""
    return since is not None and parsed.sent_at >= since - AUTO_SAVE_SLACK


def _message_fields(
    scope: FirmScope, parsed: ParsedMessage, own: set[str], mailbox_id: int | None
) -> dict[str, object]:
    from_us = bool(parsed.from_address) and parsed.from_address in own
    return {
        "firm_id": scope.firm_id,
        "message_id": parsed.message_id,
        "message_key": parsed.message_key,
        "subject": parsed.subject,
        "from_address": parsed.from_address,
        "to_addresses": parsed.to,
        "cc_addresses": parsed.cc,
        "sent_at": parsed.sent_at,
        "text_body": parsed.text_body,
        "html_body": parsed.html_body,
        "direction": OUTBOUND if from_us else INBOUND,
        "references": parsed.reference_chain,
        "mailbox_id": mailbox_id,
    }


def _link_row(scope: FirmScope, message: Message, account_id: int) -> MessageAccount:
    return MessageAccount(
        firm_id=scope.firm_id, message_id=message.pk, account_id=account_id, sent_at=message.sent_at
    )


async def _link(
    scope: FirmScope, message: Message, account_ids: Sequence[int], ignore_conflicts: bool = False
) -> None:
    await MessageAccount.bulk_create(
        [_link_row(scope, message, account_id) for account_id in account_ids],
        ignore_conflicts=ignore_conflicts,
    )


async def thread_key_for(scope: FirmScope, parsed: ParsedMessage) -> str:
    """The thread of the oldest message of its References/In-Reply-To chain the firm has,
    else same normalised subject and same participants."""
    [key] = await _thread_keys(scope, [parsed])
    return key


async def _thread_keys(scope: FirmScope, messages: Sequence[ParsedMessage]) -> list[str]:
    """`thread_key_for` of each of `messages` in one query; a message may answer one before
    it in the list (they are stored in that order)."""
    chains = [[message_key(mid) for mid in parsed.reference_chain] for parsed in messages]
    wanted = {key for chain in chains for key in chain}
    known: dict[str, str] = {}
    if wanted:
        known = dict(
            await scope.query(Message)
            .filter(message_key__in=list(wanted))
            .values_list("message_key", "thread_key")
        )
    threads: list[str] = []
    for parsed, chain in zip(messages, chains, strict=True):
        thread = next((known[key] for key in chain if key in known), None)
        thread = thread or subject_thread_key(parsed.subject, parsed.participants)
        known.setdefault(parsed.message_key, thread)
        threads.append(thread)
    return threads


# IMAP ---------------------------------------------------------------------------------------

_LIST_LINE = re.compile(rb'^\((?P<flags>[^)]*)\) (?P<delim>NIL|"(?:[^"\\]|\\.)*") (?P<name>.*)$')
_LITERAL = re.compile(rb"^\{(\d+)\+?\}$")
_FETCH_START = re.compile(rb"^\d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")


async def guarded(command: Awaitable[T], lost: asyncio.Event, where: str, what: str) -> T:
    """The IMAP command's answer, or MailSyncError as soon as the connection drops (`lost` is
    set by the protocol), the server does not answer in time, or the command fails."""
    task = asyncio.ensure_future(command)
    lost_wait = asyncio.ensure_future(lost.wait())
    try:
        done, _ = await asyncio.wait({task, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        lost_wait.cancel()
    if task not in done:
        task.cancel()
        raise MailSyncError(f"The IMAP server {where} closed the connection ({what}).")
    try:
        return task.result()
    except (TimeoutError, aioimaplib.CommandTimeout):
        raise MailSyncError(f"The IMAP server {where} did not answer ({what}).") from None
    except aioimaplib.AioImapException as exc:
        raise MailSyncError(f"IMAP error from {where} ({what}): {exc}") from None
    except OSError as exc:
        raise MailSyncError(f"Connection to {where} failed ({what}): {exc}") from None


class ImapSession:
    """A logged-in aioimaplib client whose every command fails fast when the connection drops
    (aioimaplib alone would wait for its timeout)."""

    def __init__(self, client: aioimaplib.IMAP4, where: str) -> None:
        self.client = client
        self.where = where
        self.lost = asyncio.Event()
        client.protocol.conn_lost_cb = lambda _exc: self.lost.set()

    @classmethod
    async def open(cls, mailbox: Mailbox, password: str) -> ImapSession:
        """Logs in as connectMailbox checked it (services/mail/mailboxes.open_imap)."""
        server = MailServer(mailbox.imap_host, mailbox.imap_port, mailbox.imap_tls)
        try:
            client = await open_imap(server, mailbox.username, password, wait=IMAP_TIMEOUT)
        except MailLoginError as exc:
            raise MailSyncError(str(exc)) from None
        return cls(client, str(server))

    async def call(self, what: str, command: Awaitable[T]) -> T:
        return await guarded(command, self.lost, self.where, what)

    async def folders(self) -> list[tuple[str, str]]:
        """(role, name) of INBOX and, when there is one, the Sent folder."""
        args = ['""', '"*"']
        if self.client.has_capability("SPECIAL-USE") and self.client.has_capability(
            "LIST-EXTENDED"
        ):
            args += ["RETURN", "(SPECIAL-USE)"]
        command = self.client.protocol.simple_command("LIST", *args)
        response = await self.call("LIST", asyncio.wait_for(command, IMAP_TIMEOUT))
        if response.result != "OK":
            raise MailSyncError(f"The IMAP server {self.where} refused LIST: {_text(response)}")
        listed = _list_entries(response.lines)
        found = [(INBOX, "INBOX")]
        sent = _sent_folder(listed)
        if sent is not None:
            found.append((SENT, sent))
        return found

    async def select(self, name: str) -> tuple[int | None, int | None]:
        """Selects the folder; its UIDVALIDITY and UIDNEXT (None when not given)."""
        response = await self.call(f"SELECT {name}", self.client.select(aioimaplib.quoted(name)))
        if response.result != "OK":
            raise MailSyncError(
                f"The IMAP server {self.where} refused to open {name}: {_text(response)}"
            )
        return folder_status(response)

    async def uids_after(self, last_uid: int) -> list[int]:
        command = self.client.uid_search("UID", f"{last_uid + 1}:*", charset=None)
        response = await self.call("UID SEARCH", command)
        if response.result != "OK":
            raise MailSyncError(f"The IMAP server {self.where} refused SEARCH: {_text(response)}")
        uids: set[int] = set()
        for line in response.lines[:-1]:
            if isinstance(line, bytes):
                uids.update(int(u) for u in re.findall(rb"\d+", line))
        return sorted(uids)

    async def search_participants(self, addresses: Sequence[str]) -> list[int]:
        """UIDs in the selected folder with any of `addresses` in From, To or Cc."""
        uids: set[int] = set()
        for address in addresses:
            quoted = aioimaplib.quoted(address)
            criteria = ("OR", "FROM", quoted, "OR", "TO", quoted, "CC", quoted)
            command = self.client.uid_search(*criteria, charset=None)
            response = await self.call("UID SEARCH", command)
            if response.result != "OK":
                raise MailSyncError(
                    f"The IMAP server {self.where} refused SEARCH: {_text(response)}"
                )
            for line in response.lines[:-1]:
                if isinstance(line, bytes):
                    uids.update(int(u) for u in re.findall(rb"\d+", line))
        return sorted(uids)

    async def fetch(
        self, uids: Sequence[int], parts: str
    ) -> tuple[dict[int, bytes], dict[int, int]]:
        """UID FETCH of `parts` (one literal per message): the literal of each UID, and the
        RFC822.SIZE of each when asked for."""
        message_set = ",".join(str(u) for u in uids)
        response = await self.call("UID FETCH", self.client.uid("fetch", message_set, parts))
        if response.result != "OK":
            raise MailSyncError(f"The IMAP server {self.where} refused FETCH: {_text(response)}")
        return _fetched(response.lines), _sizes(response.lines)

    async def close(self) -> None:
        try:
            if not self.lost.is_set():
                await asyncio.wait_for(self.client.logout(), LOGOUT_SECONDS)
        except Exception as exc:  # logging out of a broken connection: it is gone anyway
            log.debug("IMAP logout from %s: %s", self.where, exc)
        finally:
            close_imap(self.client)


def folder_status(response: aioimaplib.Response) -> tuple[int | None, int | None]:
    """UIDVALIDITY and UIDNEXT from a SELECT or EXAMINE answer (None when not given)."""
    uidvalidity = uidnext = None
    for line in response.lines:
        if isinstance(line, bytes):
            if match := _UIDVALIDITY.search(line):
                uidvalidity = int(match.group(1))
            if match := _UIDNEXT.search(line):
                uidnext = int(match.group(1))
    return uidvalidity, uidnext


def _text(response: aioimaplib.Response) -> str:
    """The server's words in a tagged answer."""
    lines = [line for line in response.lines if isinstance(line, bytes)]
    return lines[-1].decode(errors="replace")[:300] if lines else response.result


def _list_entries(lines: Sequence[bytes | bytearray]) -> list[tuple[set[str], str, str]]:
    """(flags, delimiter, name) of each folder in a LIST answer (names as the server sent
    them: modified UTF-7, unquoted)."""
    entries: list[tuple[set[str], str, str]] = []
    for index, line in enumerate(lines):
        if not isinstance(line, bytes) or not (match := _LIST_LINE.match(line)):
            continue
        flags = {f.lower() for f in match.group("flags").decode(errors="replace").split()}
        delim = _unquote(match.group("delim"))
        raw_name = match.group("name").strip()
        if _LITERAL.match(raw_name):
            following = lines[index + 1] if index + 1 < len(lines) else b""
            name = bytes(following).decode(errors="replace")
        else:
            name = _unquote(raw_name)
        if "\\noselect" in flags or "\\nonexistent" in flags:
            continue
        entries.append((flags, "" if delim == "NIL" else delim, name))
    return entries


def _unquote(value: bytes) -> str:
    text = value.decode(errors="replace")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _sent_folder(entries: Sequence[tuple[set[str], str, str]]) -> str | None:
    for flags, _, name in entries:
        if "\\sent" in flags:
            return name
    by_name: dict[str, str] = {}
    for _, delim, name in entries:
        leaf = name.rsplit(delim, 1)[-1] if delim else name
        by_name.setdefault(leaf.casefold(), name)
    for candidate in SENT_NAMES:
        if candidate in by_name:
            return by_name[candidate]
    return None


def _fetched(lines: Sequence[bytes | bytearray]) -> dict[int, bytes]:
    """{uid: literal} from the lines of a UID FETCH answer (UID before or after the data)."""
    found: dict[int, bytes] = {}
    uid: int | None = None
    data: bytes | None = None

    def keep() -> None:
        if uid is not None and data is not None:
            found[uid] = data

    for line in lines:
        if isinstance(line, bytearray):
            data = bytes(line)
            continue
        if _FETCH_START.match(line):
            keep()
            uid, data = None, None
        if uid is None and (match := _UID.search(line)):
            uid = int(match.group(1))
    keep()
    return found


def _sizes(lines: Sequence[bytes | bytearray]) -> dict[int, int]:
    """{uid: RFC822.SIZE} from the FETCH lines of an answer that carries both."""
    found: dict[int, int] = {}
    for line in lines:
        if isinstance(line, bytes) and _FETCH_START.match(line):
            uid, size = _UID.search(line), _SIZE.search(line)
            if uid and size:
                found[int(uid.group(1))] = int(size.group(1))
    return found
