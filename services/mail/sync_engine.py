"""EMAIL SYNC, the engine: one pass over a connected mailbox's INBOX and Sent folders.

`sync_mailbox` logs in over IMAP (services/mail/imap.ImapSession), finds INBOX and the Sent
folder, and for each folder reads only the UIDs above its cursor (MailboxFolder: UIDVALIDITY
and the last UID seen). A changed UIDVALIDITY resets the cursor and rescans the folder;
nothing is stored twice, as a message is found again by its key. `import_history` reads
earlier mail of some addresses the same way (IMAP SEARCH instead of the cursor). Both share
one set-up (`_run`: the password, the firm's own addresses, the session, the pass).

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

What is kept, and how, is services/mail/store's: the new messages of one downloaded chunk are
written in one transaction (`store.store_messages`), and an event per message goes out on
the bus after the commit (services/mail/events). A sync pass auto-saves attachments for mail
sent since the mailbox was connected; so the first pass of a new mailbox, a rescan and a
history import (earlier mail) keep attachments but save none into Documents.

Failures: a message that cannot be parsed is counted and skipped (parsing itself falls back
field by field, so this is rare); a connection, login or server failure ends the pass with the
mailbox FAILED and a readable `last_error` (never the password). The cursor only moves past
messages that were handled, so the next pass takes up where this one stopped.

One pass at a time per mailbox: the pass claims the mailbox through `lease_until` (a
conditional UPDATE, so it holds on SQLite and PostgreSQL alike; services/shared/leases), renews it
after each batch, and a second caller meanwhile gets `busy` back. A pass that dies leaves a
lease that runs out after LEASE_SECONDS; a pass that ran past its lease finds its renewal
refused (another process took over) and stops without touching the mailbox row. The lease is
also checked before each folder and before each chunk is stored, so a pass of a mailbox
disconnected meanwhile (the row is gone) stops there with `gone` set. `stop` ends a pass
between batches, as a success: the cursor stands after what was stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.fernet import InvalidToken
from tortoise.expressions import Q

from models import Mailbox, MailboxFolder, SyncStatus
from portico.settings import Settings
from services.mail import store
from services.mail.events import announce_message
from services.mail.imap import ImapSession, MailSyncError
from services.mail.mailboxes import mailbox_password
from services.mail.parse import ParsedMessage, parse_message, parse_participants
from services.outbound.transport import scrub
from services.shared.errors import ErrorCode, input_error
from services.shared.leases import lease_token
from services.shared.pubsub import EventBus
from services.shared.scope import FirmScope

log = logging.getLogger(__name__)

FETCH_BATCH = 50  # UIDs per round trip (headers, then the kept messages' bodies)
LEASE_SECONDS = 900  # a pass renews its claim after every batch
MAX_ERROR = 1000  # characters of last_error
PARSE_IN_THREAD_BYTES = 256 * 1024
BODY_BATCH_BYTES = 16 * 1024 * 1024  # whole messages per round trip (at least one)

PARTICIPANT_FIELDS = "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO CC)])"
MESSAGE_FIELDS = "(UID BODY.PEEK[])"


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
    gone: bool = False  # the mailbox was disconnected during the pass, which stopped
    message_ids: list[int] = field(default_factory=list)  # stored or newly linked


# The pass -----------------------------------------------------------------------------------


async def sync_now(
    scope: FirmScope, mailbox_id: int | None, settings: Settings, bus: EventBus | None = None
) -> Mailbox:
    """Syncs one mailbox of the firm now (syncMailbox); returns it as the sync left it."""
    mailbox = await scope.get(Mailbox, mailbox_id, "id")
    await sync_mailbox(scope, mailbox, settings, bus)
    return await scope.get(Mailbox, mailbox.pk, "id")


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
    _check_firm(scope, mailbox)
    result = SyncResult(mailbox.pk, SyncStatus.SYNCING)
    lease = await _claim(scope, mailbox)
    if lease is None:
        current = await scope.query(Mailbox).get_or_none(pk=mailbox.pk)
        result.status = current.sync_status if current else mailbox.sync_status
        result.busy = True
        return result
    held = _Held(lease)

    async def folders(pass_: _Pass) -> None:
        pass_.lease, pass_.stop = held, stop
        for role, name in await pass_.session.folders():
            await pass_.folder(role, name)

    try:
        # Attachments of mail sent since the mailbox was connected are auto-saved.
        await _run(
            scope, mailbox, settings, bus, result, mailbox.created_at, folders, "mail sync of"
        )
    except _LeaseLost:
        if not await scope.query(Mailbox).filter(id=mailbox.pk).exists():
            log.info("mail sync of mailbox %s: disconnected, the pass stopped", mailbox.pk)
            result.gone = True
            return result
        log.warning("mail sync of mailbox %s ran past its lease: stopped", mailbox.pk)
        result.error = "Another process took this mailbox over."
        result.status = SyncStatus.SYNCING
        return result  # the row is the new holder's now: left alone
    except asyncio.CancelledError:
        await _finish(scope, mailbox, held.token, result, "The sync was interrupted.")
        raise
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
    _check_firm(scope, mailbox)
    result = SyncResult(mailbox.pk, SyncStatus.SYNCING)
    wanted = sorted({a.strip().lower() for a in addresses if a.strip()})

    async def search(pass_: _Pass) -> None:
        for _role, name in await pass_.session.folders():
            await pass_.session.select(name)
            uids = await pass_.session.search_participants(wanted)
            for start in range(0, len(uids), FETCH_BATCH):
                await pass_.batch(uids[start : start + FETCH_BATCH])
                if progress is not None:
                    await progress(result)

    # Earlier mail: its attachments are kept, not saved into Documents.
    await _run(scope, mailbox, settings, bus, result, None, search, "history import from")
    result.status = SyncStatus.FAILED if result.error is not None else SyncStatus.IDLE
    return result


def _check_firm(scope: FirmScope, mailbox: Mailbox) -> None:
    if mailbox.firm_id != scope.firm_id:
        raise input_error(ErrorCode.NOT_FOUND, "No such Mailbox.", "id")


async def _run(
    scope: FirmScope,
    mailbox: Mailbox,
    settings: Settings,
    bus: EventBus | None,
    result: SyncResult,
    auto_save_since: datetime | None,
    work: Callable[[_Pass], Awaitable[None]],
    what: str,
) -> None:
    """The set-up of a sync pass and a history import: logs in, runs `work` with a pass over
    `mailbox` that counts into `result`, logs out. A failure ends up in `result.error`
    (without the password), not raised; an unexpected one is logged with its trace."""
    password = ""
    try:
        password = _password(settings, mailbox)
        own = {mailbox.address_normalized.lower()}
        own.update(
            a.lower()
            for a in await scope.query(Mailbox).values_list("address_normalized", flat=True)
        )
        session = await ImapSession.open(mailbox, password, settings)
        try:
            await work(_Pass(scope, mailbox, session, own, bus, result, settings, auto_save_since))
        finally:
            await session.close()
    except MailSyncError as exc:
        result.error = _scrub(str(exc), password)
    except Exception as exc:  # a bug or a database failure: logged with its trace
        log.exception("%s mailbox %s failed", what, mailbox.pk)
        result.error = _scrub(f"Unexpected error: {type(exc).__name__}: {exc}", password)


@dataclass
class _Held:
    """A pass's claim on its mailbox: the lease value, renewed after every batch."""

    token: datetime


class _LeaseLost(BaseException):
    """The pass ran past its lease and another process claimed the mailbox. A BaseException,
    as CancelledError is: the pass's own error handling (which records failures) lets it by."""


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
    return scrub(text, password)[:MAX_ERROR]


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

    async def hold(self) -> None:
        """A sync pass renews its lease: it stops here (_LeaseLost) once another process took
        the mailbox over or the mailbox was disconnected. A history import has no lease."""
        if self.lease is not None:
            self.lease.token = await _renew(self.scope, self.mailbox, self.lease.token)

    async def folder(self, role: str, name: str) -> None:
        await self.hold()  # before its cursor row is made: the mailbox may be gone
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
            await self.hold()
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
        synced = await store.synced_accounts(
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
            await self.hold()  # nothing is stored for a mailbox disconnected meanwhile
            try:
                outcomes = await store.store_messages(
                    self.scope,
                    found,
                    self.own_addresses,
                    mailbox_id=self.mailbox.pk,
                    settings=self.settings,
                    auto_save_since=self.auto_save_since,
                )
            except Exception:
                # Disconnected between the check and the store (the rows' mailbox is gone, so
                # the database refused them): the pass stops as disconnected, not failed.
                await self.hold()
                raise
            for outcome in outcomes:
                await self.count(outcome)

    async def count(self, outcome: store.StoreOutcome) -> None:
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
            synced.update(await store.synced_accounts(self.scope, missing))
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
