"""EMAIL SYNC, the engine: one pass over a connected mailbox's INBOX and Sent folders.

`sync_mailbox` logs in over IMAP (services/mail/imap.ImapSession), finds INBOX and the Sent
folder, and for each folder reads only the UIDs above its cursor (MailboxFolder: UIDVALIDITY
and the last UID seen). A changed UIDVALIDITY resets the cursor and rescans the folder;
nothing is stored twice, as a message is found again by its key. `import_history` reads
earlier mail of some addresses the same way (IMAP SEARCH instead of the cursor). Both share
one set-up (`_run`: the password, the firm's own addresses, the session, the pass).

What is read, and how:
- Each batch of new UIDs (FETCH_BATCH, fewer when their headers are long: HEADER_BATCH_BYTES)
  is read in two steps: first only the From, To, Cc and Content-Type headers (and each
  message's size), HEADER_BATCH a round trip, then the whole message (BODY.PEEK[]) of those
  with a participant whose address has EMAIL SYNC on in an account of the firm. The bodies
  of other people's mail are never downloaded, let alone stored (privacy).
- Whole messages are downloaded a few at a time, up to BODY_BATCH_BYTES a round trip, and
  each raw message is let go once parsed. (A message whose participants cannot be read from
  its headers is downloaded whole to find them.)
- Size limit: a message whose RFC822.SIZE is over `sync_max_message_bytes` is never
  downloaded: its header block alone (BODY.PEEK[HEADER]) is stored, with `content_skipped`
  saying why ("larger than 50 MB: body and attachments not stored"). A message whose size the
  server did not give is read in parts of READ_BYTES (BODY.PEEK[]<offset.length>) and
  handled as oversize as soon as it passes the limit, so at most the limit is ever held. A
  part after the first that fails (refused, hung up on, not answered) is the message's
  failure: nothing of it is stored, never a message cut short.
- Header reads are partial (<0.HEADER_BYTES>), the participants' fields and an oversize
  message's header block alike: a message of header lines alone is never read whole. A block
  cut short loses its last field (the cut may have split it); the fields before it count.
- Bounces: a DSN (Content-Type multipart/report; report-type=delivery-status, seen in the
  header step, once: again only when that step got its headers cut short) is read even
  when no participant syncs, at most DSN_MAX_BYTES of it, for
  services/mail/bounces to mark the outbox message it reports FAILED; it is stored only when a
  participant syncs, as any message.
- Every read is a PEEK: the sync never sets \\Seen, and never stores flags, deletes, moves or
  expunges anything on the server.

What is kept, and how, is services/mail/store's: the new messages of one downloaded chunk are
written in one transaction (`store.store_messages`), and an event per message goes out on
the bus after the commit (services/mail/events). A chunk is stored while the next one is
downloaded and parsed, so the database's work overlaps the server's and the parsing; one
store runs at a time, in the order the chunks were read. A sync pass auto-saves attachments
for mail sent since the mailbox was connected; so the first pass of a new mailbox, a rescan
and a history import (earlier mail) keep attachments but save none into Documents.

Failures of one message (services/mail/skips): the server refuses to FETCH it (NO or BAD, or
sends nothing for a UID it still has; in a batch, each missing UID is asked for alone to find
it), parsing raises, or storing it fails on its data (a chunk that fails is stored again one
message at a time to find the culprit). The failure is recorded in MailboxSkip and the pass
goes on with the rest; the message is tried first on the next passes, and skipped until
retry_after once it has failed sync_max_failures times (failures are told apart by folder
and UID). A server that hangs up on a message (BYE, then closes: Dovecot, when it cannot read
one) or does not answer its FETCH in time is logged into again, at most MAX_HANGUPS times a
pass, and the message it hangs up on (or times out on) again gets the failure.
Failures of the pass: a connection lost without BYE, a login or server failure, or the
database failing (its connection, not one message's data) end the pass with the mailbox
FAILED and a readable `last_error` (never the password). The cursor moves once a batch's
last chunk is stored, and after each stored chunk of a batch the pass could not finish (the
store in flight finishes first, unless the pass itself is cancelled), so the next pass takes
up after what was stored; a message stored twice over is found again by its key, never
doubled.

Progress: Mailbox.sync_done (UIDs read) and sync_total (UIDs to read, known folder by folder)
are written with each lease renewal, so after every batch at no extra statement.
Memory: nothing of a pass grows with the mailbox but the list of new UIDs of the folder (a
few bytes each); `SyncResult.message_ids` holds the last batch's only.

One pass at a time per mailbox: the pass claims the mailbox through `lease_until` (a
conditional UPDATE, so it holds on SQLite and PostgreSQL alike; services/shared/leases), renews it
after each batch, and a second caller meanwhile gets `busy` back. A pass that dies leaves a
lease that runs out after LEASE_SECONDS; a pass that ran past its lease finds its renewal
refused (another process took over) and stops without touching the mailbox row. After a
batch the renewal and the folder's cursor are written in one transaction (one commit). The
lease is also checked before each folder and before each chunk is stored, so a pass of a mailbox
disconnected meanwhile (the row is gone) stops there with `gone` set. `stop` ends a pass
between batches: the cursor stands after what was stored, the mailbox is left IDLE, but
last_synced_at is not set (the pass did not get through the mailbox). Set while an IMAP
command is in flight (a large FETCH), it abandons the command at once (imap.SyncStopped;
the connection is closed without LOGOUT) and the pass hands its lease back (lease_until
cleared) after the chunk it may be storing: the bound is one chunk's store, not a batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum

import asyncpg
from cryptography.fernet import InvalidToken
from tortoise.exceptions import DBConnectionError, TransactionManagementError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from models import Mailbox, MailboxFolder, SyncStatus
from portico.settings import Settings
from services.mail import bounces, skips, store
from services.mail.events import announce_message
from services.mail.imap import (
    Fetched,
    ImapSession,
    MailSyncError,
    ServerHungUp,
    ServerTimedOut,
    SyncStopped,
)
from services.mail.mailboxes import mailbox_password
from services.mail.parse import ParsedMessage, parse_participants
from services.mail.quick_parse import parse_message
from services.outbound.transport import scrub
from services.shared.errors import ErrorCode, input_error
from services.shared.leases import lease_token
from services.shared.pubsub import EventBus
from services.shared.scope import FirmScope

log = logging.getLogger(__name__)

# A batch: the UIDs read, stored and then committed with the cursor together. Its header step
# asks for HEADER_BATCH UIDs a round trip and ends the batch early once HEADER_BATCH_BYTES of
# headers came (a hostile mailbox's long headers), so what a batch holds is bounded in bytes:
# at most HEADER_BATCH_BYTES plus one FETCH of HEADER_BATCH partial headers, then bodies in
# round trips of BODY_BATCH_BYTES by their RFC822.SIZE. Big batches for plain mail: each one
# costs a few commits and statements whatever its size (bench.mail_sync).
FETCH_BATCH = 1000
HEADER_BATCH = 50  # UIDs per FETCH of the participants' headers
HEADER_BATCH_BYTES = 1024 * 1024
# A pass renews its claim before each folder, before each chunk it stores and after every
# batch, so the lease only has to outlast one FETCH; a worker killed mid-pass holds its mailbox
# from the other workers this long at most.
LEASE_SECONDS = 120
# The header step of a big batch is many FETCHes: the lease is renewed between them once it
# is this old, so a slow server cannot outlast it before the batch's first store.
RENEW_AFTER = LEASE_SECONDS / 4
MAX_ERROR = 1000  # characters of last_error
PARSE_IN_THREAD_BYTES = 256 * 1024
BODY_BATCH_BYTES = 16 * 1024 * 1024  # whole messages per round trip (at least one)
YIELD_EVERY = 20  # messages parsed between turns of the event loop
READ_BYTES = 4 * 1024 * 1024  # a message of unknown size is read this much at a time
MAX_HANGUPS = 10  # per pass: logins again after the server hung up (or timed out) on one
# Header reads are partial: a message of header lines alone (a million To: lines) is never
# read whole. The parts of a header cut there that came are used (From, To, Cc come early).
HEADER_BYTES = 256 * 1024

# Content-Type tells a bounce (DSN) from other mail before anything is downloaded.
PARTICIPANT_FIELDS = (
    f"(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO CC CONTENT-TYPE)]<0.{HEADER_BYTES}>)"
)
MESSAGE_FIELDS = "(UID BODY.PEEK[])"
HEADER_FIELDS = f"(UID BODY.PEEK[HEADER]<0.{HEADER_BYTES}>)"  # what of an oversize one is read

# The database itself failing (not one message's data): a pass fails rather than skip.
_ASYNCPG_CONNECTION = (
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


@dataclass
class SyncResult:
    mailbox_id: int
    status: SyncStatus
    fetched: int = 0  # new messages seen on the server (their participants read)
    stored: int = 0  # messages stored for the first time
    linked: int = 0  # messages already stored that gained accounts
    skipped: int = 0  # no participant with EMAIL SYNC on: not stored (nor downloaded)
    unreadable: int = 0  # could not be parsed at all: skipped, the sync went on
    failed: int = 0  # attempts that failed (fetch, parse, store): recorded in MailboxSkip
    oversize: int = 0  # over sync_max_message_bytes: headers stored, content skipped
    bounced: int = 0  # outbox messages a DSN marked FAILED
    total: int = 0  # UIDs the pass (or import) had to read, as far as known
    error: str | None = None  # the mailbox's last_error when the pass failed
    busy: bool = False  # another pass of this mailbox was running: nothing was done
    gone: bool = False  # the mailbox was disconnected during the pass, which stopped
    stopped: bool = False  # `stop` ended the pass early (the cursor after what was stored)
    # Messages stored or newly linked by the last batch only (a whole pass's would grow
    # with the mailbox): a history import takes them after every batch.
    message_ids: list[int] = field(default_factory=list)
    # A history import: the addresses the server refused to search, with its words.
    address_errors: dict[str, str] = field(default_factory=dict)


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
    held = _Held([lease])

    async def folders(pass_: _Pass) -> None:
        pass_.lease, pass_.stop = held, stop
        # A stop set mid-FETCH abandons it (SyncStopped): the lease is handed back at once.
        pass_.session.stop = stop
        try:
            for role, name in await pass_.session.folders():
                if result.stopped:
                    break  # stopped in the last folder: the next is left for the next pass
                await pass_.folder(role, name)
        except SyncStopped:
            result.stopped = True

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
        await _finish(scope, mailbox, held.tokens, result, "The sync was interrupted.")
        raise
    await _finish(scope, mailbox, held.tokens, result, result.error)
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
    message both store is found again by its key). `progress` is awaited after each
    folder's search and after every batch.
    Failures are reported in the result (`error`), not raised and not set on the mailbox; an
    address the server refused to search is reported in `address_errors` alone."""
    _check_firm(scope, mailbox)
    result = SyncResult(mailbox.pk, SyncStatus.SYNCING)
    wanted = sorted({a.strip().lower() for a in addresses if a.strip()})

    async def search(pass_: _Pass) -> None:
        for _role, name in await pass_.session.folders():
            await pass_.select(name)
            found = await pass_.session.search_participants(wanted)
            for address, reason in found.refused.items():  # the others are imported
                result.address_errors.setdefault(address, reason)
            uids = found.uids
            result.total += len(uids)
            if progress is not None and uids:
                await progress(result)  # the import's size, shown before its first batch
            start = 0
            while start < len(uids):
                start += await pass_.batch(uids[start : start + FETCH_BATCH])
                await pass_.settle()  # the batch's messages are counted
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

        async def login() -> ImapSession:
            return await ImapSession.open(mailbox, password, settings)

        pass_ = _Pass(scope, mailbox, await login(), own, bus, result, settings, auto_save_since)
        pass_.login = login
        try:
            await work(pass_)
        except (MailSyncError, SyncStopped):
            await pass_.settle()  # what was read is stored before the pass ends
            raise
        except BaseException as exc:
            await pass_.abandon(cancel=isinstance(exc, asyncio.CancelledError))
            raise
        finally:
            await pass_.session.close()  # (the last one, when it logged in again)
    except SyncStopped:  # stopping: not a failure (the cursor stands after what was stored)
        result.stopped = True
    except MailSyncError as exc:
        result.error = _scrub(str(exc), password)
    except Exception as exc:  # a bug or a database failure: logged with its trace
        log.exception("%s mailbox %s failed", what, mailbox.pk)
        result.error = _scrub(f"Unexpected error: {type(exc).__name__}: {exc}", password)


@dataclass
class _Held:
    """A pass's claim on its mailbox: the lease values its row may hold, renewed after every
    batch. A renewal's value joins them before it is written, and stays alone once it is
    known committed: a renewal cancelled, or rolled back with its transaction, leaves both
    possible, and the next renewal or the release takes either (each is this pass's own)."""

    tokens: list[datetime]


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
        .update(sync_status=SyncStatus.SYNCING, lease_until=lease, sync_done=0, sync_total=0)
    )
    if not claimed:
        return None
    mailbox.sync_status = SyncStatus.SYNCING
    return lease


async def _renew(scope: FirmScope, mailbox: Mailbox, lease: _Held, result: SyncResult) -> datetime:
    """A fresh lease value, only while this pass still holds the mailbox; the pass's progress
    is written with it (read so far, of the total known so far)."""
    renewed = lease_token(_now(), LEASE_SECONDS)
    lease.tokens.append(renewed)  # known to be the row's only once committed
    held = (
        await scope.query(Mailbox)
        .filter(id=mailbox.pk, lease_until__in=lease.tokens)
        .update(lease_until=renewed, sync_done=result.fetched, sync_total=result.total)
    )
    if not held:
        raise _LeaseLost
    return renewed


async def _finish(
    scope: FirmScope,
    mailbox: Mailbox,
    tokens: list[datetime],
    result: SyncResult,
    error: str | None,
) -> None:
    values: dict[str, object] = {"lease_until": None}
    if error is None and result.stopped:
        # Stopped midway: not through the mailbox, so not "synced" (nor failed).
        values.update(sync_status=SyncStatus.IDLE)
    elif error is None:
        values.update(sync_status=SyncStatus.IDLE, last_synced_at=_now(), last_error=None)
    else:
        result.error = error[:MAX_ERROR]
        values.update(sync_status=SyncStatus.FAILED, last_error=result.error)
    held = await scope.query(Mailbox).filter(id=mailbox.pk, lease_until__in=tokens).update(**values)
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
        self.renewed = time.monotonic()  # when the lease was last renewed
        self.renewing = asyncio.Lock()  # one renewal at a time: each needs the last one's token
        self.stop: asyncio.Event | None = None
        # The selected folder (failures are recorded against it), and the highest UID of it
        # below which every message of the pass is handled (stored, not wanted, or failed).
        self.folder_name: str | None = None
        self.uidvalidity: int | None = None
        self.reached = 0
        self.failures: set[tuple[str | None, int]] = set()  # (folder, UID) failed this pass
        self.login: Callable[[], Awaitable[ImapSession]] | None = None
        self.hangups = 0
        # The DSNs of the batch in hand, told by their Content-Type in the header step, so a
        # message's headers are looked at for it once (again only when they came cut short).
        self.dsns: set[int] = set()
        # A unit's store runs while the next unit is read (the database's work and the IMAP
        # server's overlap with parsing); `settle` waits for it. The cursor of the batch it
        # ends moves once it is through.
        self.storing: _Storing | None = None
        self.due: tuple[MailboxFolder, int] | None = None

    async def hold(self) -> None:
        """A sync pass renews its lease (and shows its progress): it stops here (_LeaseLost)
        once another process took the mailbox over or the mailbox was disconnected. A history
        import has no lease."""
        if self.lease is not None:
            async with self.renewing:  # a store in flight renews it too
                self.lease_committed(
                    await _renew(self.scope, self.mailbox, self.lease, self.result)
                )

    def lease_committed(self, renewed: datetime) -> None:
        """The renewal that wrote `renewed` is committed."""
        assert self.lease is not None
        self.lease.tokens, self.renewed = [renewed], time.monotonic()

    async def keep(self) -> None:
        """Renews the lease when it was last renewed RENEW_AFTER ago (or longer)."""
        if self.lease is not None and time.monotonic() - self.renewed >= RENEW_AFTER:
            await self.hold()

    async def advance(self, cursor: MailboxFolder, last_uid: int) -> None:
        """After a batch: the lease renewed and the cursor moved in one transaction (one
        commit, not two). A refused renewal (_LeaseLost) rolls the cursor back with it, as
        the pass no longer holds the mailbox."""
        cursor.last_uid = last_uid
        if self.lease is None:
            await cursor.save(update_fields=["last_uid"])
            return
        async with self.renewing, in_transaction():
            renewed = await _renew(self.scope, self.mailbox, self.lease, self.result)
            await cursor.save(update_fields=["last_uid"])
        self.lease_committed(renewed)  # not before: rolled back, the row still holds the last one

    async def select(self, name: str) -> int | None:
        """Selects the folder; its UIDNEXT."""
        uidvalidity, uidnext = await self.session.select(name)
        self.folder_name, self.uidvalidity, self.reached = name, uidvalidity, 0
        return uidnext

    async def folder(self, role: str, name: str) -> None:
        await self.hold()  # before its cursor row is made: the mailbox may be gone
        cursor = await _cursor(self.mailbox, role, name)
        uidnext = await self.select(name)
        uidvalidity = self.uidvalidity
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
            await skips.forget_other_uidvalidity(self.mailbox.pk, name, uidvalidity)
        retry, recorded = await skips.of_folder(self.mailbox.pk, name, uidvalidity)
        uids: list[int] = []
        if uidnext is None or uidnext > cursor.last_uid + 1:
            found = await self.session.uids_after(cursor.last_uid)
            # A message with a failure recorded is read with the retries (when due), not here.
            uids = [u for u in found if u > cursor.last_uid and u not in recorded]
            del found
        if not retry and not uids:
            return  # nothing new since the last pass
        self.result.total += len(retry) + len(uids)
        await self.hold()  # shows the pass's total
        reading_new = False  # retried UIDs may lie above the cursor (a history import's)
        try:
            # Messages that failed before go first; they are no longer due once through.
            start = 0
            while start < len(retry):
                start += await self.batch(retry[start : start + FETCH_BATCH])
            await self.settle()
            await skips.cleared(
                self.mailbox.pk,
                name,
                uidvalidity,
                [u for u in retry if (name, u) not in self.failures],
            )
            self.reached, reading_new = 0, True
            start = 0
            while start < len(uids):
                if self.stop is not None and self.stop.is_set():
                    await self.settle()
                    self.result.stopped = True  # not through the mailbox: no last_synced_at
                    return  # the cursor stands after what was stored
                start += await self.batch(uids[start : start + FETCH_BATCH])
                self.due = (cursor, uids[start - 1])
                if self.storing is None:
                    await self.settle()  # nothing in flight: the cursor moves now
            await self.settle()
        except (MailSyncError, SyncStopped):
            # The server went away or the process is stopping mid-batch: the store in flight
            # finishes, and the cursor moves past the chunks that were stored, no further.
            await self.settle()
            if reading_new and self.reached > cursor.last_uid:
                cursor.last_uid = self.reached
                await cursor.save(update_fields=["last_uid"])
            raise

    async def batch(self, uids: Sequence[int]) -> int:
        """Reads and stores messages of the selected folder (those with a participant whose
        EMAIL SYNC is on), and the bounces among them: the first of `uids`, all of them
        unless their headers passed HEADER_BATCH_BYTES first. Returns how many it read (at
        least one)."""
        self.result.message_ids.clear()  # the caller took those of the last batch
        participants: dict[int, list[str]] = {}
        unclear: set[int] = set()  # who it concerns is known only once it is read whole
        dsns: set[int] = set()
        sizes: dict[int, int] = {}
        taken = header_bytes = 0
        while taken < len(uids) and header_bytes < HEADER_BATCH_BYTES:
            if taken:
                await self.keep()
            asked = uids[taken : taken + HEADER_BATCH]
            taken += len(asked)
            self.result.fetched += len(asked)
            head = await self.fetch(asked, PARTICIPANT_FIELDS)
            sizes.update(head.sizes)
            for uid in asked:
                headers = head.data.pop(uid, None)
                if headers is None:
                    continue  # failed (recorded) or expunged meanwhile
                header_bytes += len(headers)
                if len(headers) >= HEADER_BYTES:
                    # Cut short: who else it concerns is known once it is read (whole, or its
                    # header block alone when oversize); the complete fields count already.
                    headers = _complete_fields(headers)
                    unclear.add(uid)
                if bounces.is_dsn(headers):
                    dsns.add(uid)
                try:
                    participants[uid] = parse_participants(headers)
                except Exception:
                    log.warning("mailbox %s: UID %s: unreadable headers", self.mailbox.pk, uid)
                    unclear.add(uid)
        uids = uids[:taken]
        self.dsns = dsns
        synced = await store.synced_accounts(
            self.scope, {a for people in participants.values() for a in people}
        )
        wanted = [
            uid
            for uid in uids
            if uid in unclear or any(a in synced for a in participants.get(uid, ()))
        ]
        self.result.skipped += len(participants.keys() | unclear) - len(wanted)
        mine = set(wanted)
        bounced = [uid for uid in uids if uid in dsns and uid not in mine]
        if bounced:  # read for their report alone: a bounded read, never stored
            await self.bounces(bounced)
        for kind, unit in _units(wanted, sizes, self.settings.sync_max_message_bytes):
            if kind is _Unit.OVERSIZE:
                items = await self.oversize(unit, synced)
            elif kind is _Unit.UNKNOWN:
                items = await self.unknown_size(unit[0], synced, unit[0] in unclear)
            else:
                items = await self.whole(unit, synced, unclear)
            await self.settle()  # one store at a time, in order
            self.storing = _Storing(asyncio.create_task(self.store(items)), unit[-1])
        return taken

    async def settle(self) -> None:
        """Waits for the store in flight: the UIDs up to its unit's end are then handled, and
        the cursor due at the end of its batch moves (with the lease renewed)."""
        storing, self.storing = self.storing, None
        due, self.due = self.due, None  # not moved if the store fails
        if storing is not None:
            try:
                await storing.task
            except asyncio.CancelledError:
                storing.task.cancel()  # cancelled, as it was when it ran in the pass's task
                storing.task.add_done_callback(_retrieved)
                raise
            self.reached = max(self.reached, storing.last_uid)
        if due is not None:
            cursor, self.reached = due
            await self.advance(cursor, self.reached)

    async def abandon(self, *, cancel: bool) -> None:
        """The pass ends on another error than the server's or a stop: the store in flight
        is cancelled with a cancelled pass (its transaction rolls back, the cursor stands
        before it), else waited for, as it was through before any later error when stores
        ran in the pass's own task. Its own failure is logged; the pass's error is told."""
        storing, self.storing = self.storing, None
        if storing is None:
            return
        if cancel:
            storing.task.cancel()
        await asyncio.wait([storing.task])
        if not storing.task.cancelled() and storing.task.exception() is not None:
            log.warning(
                "mailbox %s: a store ended with the pass: %r",
                self.mailbox.pk,
                storing.task.exception(),
            )

    async def fetch(self, uids: Sequence[int], parts: str) -> Fetched:
        """UID FETCH of `parts`; a UID that comes back without data (the server refused it,
        or sent nothing) is asked for alone, and failing again counts as its failure (unless
        it was expunged meanwhile).

        A server may hang up on a FETCH it refuses (Dovecot says BYE and closes the
        connection when it cannot read a message), or not answer it in time: the pass logs
        in again and asks for each message alone, and the one it hangs up on (or times out
        on) again gets the failure. A connection lost without a BYE is no message's fault:
        the pass fails (MailSyncError)."""
        try:
            got = await self.session.fetch(uids, parts)
        except (ServerHungUp, ServerTimedOut) as exc:
            await self.log_in_again(exc)
            if len(uids) == 1:
                await self.failed(uids[0], _fetch_failure(exc))
                return Fetched()
            got = Fetched(refused=str(exc))  # nothing usable came: each is asked alone
        missing = [uid for uid in uids if uid not in got.data]
        if not missing:
            return got
        for uid in missing:
            if len(uids) == 1:
                one = got
            else:
                try:
                    one = await self.session.fetch([uid], parts)
                except (ServerHungUp, ServerTimedOut) as exc:
                    await self.log_in_again(exc)
                    await self.failed(uid, _fetch_failure(exc))
                    continue
            if uid in one.data:
                got.data[uid] = one.data[uid]
                got.sizes.update(one.sizes)
            elif one.refused is not None:
                await self.failed(uid, f"The server refused to fetch it: {one.refused}")
            elif await self.session.uid_exists(uid):
                await self.failed(uid, "The server sent nothing for it.")
        return got

    async def log_in_again(self, hung_up: MailSyncError) -> None:
        """A new session on the same folder after the server hung up or did not answer (at
        most MAX_HANGUPS times a pass; then, or when the folder changed meanwhile, the pass
        fails)."""
        if self.login is None or self.folder_name is None or self.hangups >= MAX_HANGUPS:
            raise hung_up
        self.hangups += 1
        await self.session.close()
        self.session = await self.login()
        self.session.stop = self.stop
        uidvalidity, _ = await self.session.select(self.folder_name)
        if uidvalidity != self.uidvalidity:
            raise MailSyncError(f"{self.folder_name} changed on the server during the sync.")

    async def bounces(self, uids: Sequence[int]) -> None:
        """Reads the report of each DSN in `uids` (at most DSN_MAX_BYTES of it) and marks the
        outbox messages it reports as failed."""
        # HEADER_BATCH a round trip, as the header step: a batch of up to FETCH_BATCH small
        # DSNs must not become one FETCH of FETCH_BATCH x DSN_MAX_BYTES.
        for start in range(0, len(uids), HEADER_BATCH):
            if start:
                await self.keep()
            chunk = uids[start : start + HEADER_BATCH]
            got = await self.fetch(chunk, f"(UID BODY.PEEK[]<0.{bounces.DSN_MAX_BYTES}>)")
            for uid in chunk:
                raw = got.data.pop(uid, None)
                if raw is not None:
                    self.result.bounced += await bounces.apply(self.scope, raw)

    async def whole(
        self, uids: Sequence[int], synced: dict[str, set[int]], unclear: set[int]
    ) -> list[_Item]:
        """Downloads messages of known size, under the limit, in one round trip."""
        bodies = (await self.fetch(uids, MESSAGE_FIELDS)).data
        items: list[_Item] = []
        for n, uid in enumerate(uids, 1):
            raw = bodies.pop(uid, None)  # let go of each message once it is parsed
            if raw is None:
                continue  # failed (recorded) or expunged meanwhile
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # the store in flight (and the API) go on meanwhile
            item = await self.message(uid, raw, synced, uid in unclear)
            if item is not None:
                items.append(item)
        return items

    async def unknown_size(
        self, uid: int, synced: dict[str, set[int]], unclear: bool
    ) -> list[_Item]:
        """A message whose size the server did not say: read in parts of READ_BYTES, and
        handled as oversize as soon as it passes the limit (never read whole). Any part the
        server refuses, hangs up on or does not answer is the message's failure: nothing of
        it is stored (never a message cut short)."""
        limit = self.settings.sync_max_message_bytes
        parts: list[bytes] = []
        total = 0
        while True:
            length = min(READ_BYTES, limit + 1 - total)
            parts_asked = f"(UID BODY.PEEK[]<{total}.{length}>)"
            if total == 0:  # a failure to read it at all is its failure
                piece = (await self.fetch([uid], parts_asked)).data.get(uid)
            else:
                piece = await self.later_part(uid, parts_asked)
            if piece is None:
                return []  # failed (recorded) or expunged meanwhile
            parts.append(piece)
            total += len(piece)
            if total > limit:
                del parts
                return await self.oversize([uid], synced)
            if len(piece) < length:
                break
        item = await self.message(uid, b"".join(parts), synced, unclear)
        return [item] if item is not None else []

    async def later_part(self, uid: int, parts_asked: str) -> bytes | None:
        """A later part of a message read in parts: b"" past its end (the server sends an
        empty string, not a literal); None when it failed (recorded) or is gone."""
        try:
            got = await self.session.fetch([uid], parts_asked)
        except (ServerHungUp, ServerTimedOut) as exc:
            await self.log_in_again(exc)
            await self.failed(uid, _fetch_failure(exc))
            return None
        if uid in got.data:
            return got.data[uid]
        if got.refused is not None:
            await self.failed(uid, f"The server refused to fetch it: {got.refused}")
        elif uid in got.empty:
            return b""
        elif await self.session.uid_exists(uid):
            await self.failed(uid, "The server sent nothing for part of it.")
        return None

    async def oversize(self, uids: Sequence[int], synced: dict[str, set[int]]) -> list[_Item]:
        """Messages over sync_max_message_bytes: their headers are stored, with the reason
        their body and attachments are not (neither is ever downloaded)."""
        reason = f"larger than {_size_text(self.settings.sync_max_message_bytes)}: body and " + (
            "attachments not stored"
        )
        headers = (await self.fetch(uids, HEADER_FIELDS)).data
        items: list[_Item] = []
        for uid in uids:
            raw = headers.pop(uid, None)
            if raw is None:
                continue
            if len(raw) >= HEADER_BYTES:  # cut short: its complete fields are read
                raw = _complete_fields(raw)
            item = await self.message(uid, raw, synced, True)
            if item is not None:
                item = _Item(uid, replace(item.parsed, content_skipped=reason), item.accounts)
                items.append(item)
        self.result.oversize += len(items)
        return items

    async def store(self, items: list[_Item]) -> None:
        """Stores one downloaded chunk in one transaction. When that fails on the data (not
        the database connection), its messages are stored one by one to find the culprit,
        whose failure is recorded while the others are kept."""
        if not items:
            return
        await self.hold()  # nothing is stored for a mailbox disconnected meanwhile
        try:
            outcomes = await self._store(items)
        except Exception as exc:
            if _connection_failure(exc):
                raise  # the database's failure, as it is (a lease check would hide it)
            # Disconnected between the check and the store (the rows' mailbox is gone, so
            # the database refused them): the pass stops as disconnected, not failed.
            await self.hold()
            if len(items) == 1:
                await self.failed(items[0].uid, _store_error(exc))
                return
            log.warning("mailbox %s: a chunk failed to store, one by one now", self.mailbox.pk)
            outcomes = []
            for item in items:
                try:
                    outcomes += await self._store([item])
                except Exception as one:
                    if _connection_failure(one):
                        raise
                    await self.failed(item.uid, _store_error(one))
        for outcome in outcomes:
            await self.count(outcome)

    async def _store(self, items: Sequence[_Item]) -> list[store.StoreOutcome]:
        return await store.store_messages(
            self.scope,
            [(item.parsed, item.accounts) for item in items],
            self.own_addresses,
            mailbox_id=self.mailbox.pk,
            settings=self.settings,
            auto_save_since=self.auto_save_since,
        )

    async def failed(self, uid: int, reason: str) -> None:
        """One failed attempt at a message: recorded (services/mail/skips); the pass goes on."""
        self.result.failed += 1
        self.failures.add((self.folder_name, uid))
        log.warning("mailbox %s, %s, UID %s: %s", self.mailbox.pk, self.folder_name, uid, reason)
        if self.folder_name is not None:
            await skips.failed(
                self.scope,
                self.mailbox.pk,
                self.folder_name,
                self.uidvalidity,
                uid,
                reason,
                self.settings,
            )

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
    ) -> _Item | None:
        """Parses one downloaded message: with the accounts it goes to, or None when it goes
        nowhere or cannot be read (`unclear`: its participants were not known from the
        headers, so they are looked up now). A DSN's report is applied on the way."""
        limit = self.settings.max_upload_bytes
        try:
            # Told in the header step, unless its headers came cut short (or unreadable).
            dsn = bounces.is_dsn(_header_block(raw)) if unclear else uid in self.dsns
            if dsn:
                self.result.bounced += await bounces.apply(self.scope, raw)
            # A big message (attachments) is parsed off the event loop, which also serves
            # the API when the sync runs inside `portico serve`.
            if len(raw) > PARSE_IN_THREAD_BYTES:
                parsed = await asyncio.to_thread(parse_message, raw, max_attachment_bytes=limit)
            else:
                parsed = parse_message(raw, max_attachment_bytes=limit)
        except Exception as exc:
            log.exception("mailbox %s: UID %s could not be parsed", self.mailbox.pk, uid)
            self.result.unreadable += 1
            await self.failed(uid, f"Could not be read: {type(exc).__name__}: {exc}")
            return None
        if unclear:
            missing = [a for a in parsed.participants if a not in synced]
            synced.update(await store.synced_accounts(self.scope, missing))
        account_ids = {a for p in parsed.participants for a in synced.get(p, ())}
        if not account_ids:
            self.result.skipped += 1
            return None
        return _Item(uid, parsed, account_ids)


def _retrieved(task: asyncio.Task[None]) -> None:
    """Takes a cancelled store's outcome (no "exception never retrieved" in the log)."""
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True)
class _Storing:
    """The store of a unit, running while the next unit is read."""

    task: asyncio.Task[None]
    last_uid: int


@dataclass(frozen=True)
class _Item:
    """A parsed message of the folder, with the accounts it goes to."""

    uid: int
    parsed: ParsedMessage
    accounts: set[int]


class _Unit(Enum):
    WHOLE = "whole"  # known sizes under the limit: downloaded together
    UNKNOWN = "unknown"  # no RFC822.SIZE: read in bounded parts
    OVERSIZE = "oversize"  # over the limit: headers only


def _units(uids: Sequence[int], sizes: dict[int, int], limit: int) -> list[tuple[_Unit, list[int]]]:
    """The wanted `uids` in order, in the round trips that read them: runs of messages under
    the limit of at most BODY_BATCH_BYTES, and each message of unknown size or over the
    limit apart (so a unit ends only where every UID below it is handled)."""
    units: list[tuple[_Unit, list[int]]] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            units.extend((_Unit.WHOLE, r) for r in _by_size(run, sizes, BODY_BATCH_BYTES))
            run.clear()

    for uid in uids:
        size = sizes.get(uid)
        if size is not None and size <= limit:
            run.append(uid)
            continue
        flush()
        units.append((_Unit.UNKNOWN if size is None else _Unit.OVERSIZE, [uid]))
    flush()
    return units


def _header_block(raw: bytes) -> bytes:
    """The header lines of a raw message (a copy of those alone, not of the body)."""
    end = raw.find(b"\r\n\r\n")
    return raw if end < 0 else raw[:end]


def _complete_fields(header: bytes) -> bytes:
    """A header block cut short, without its last field, which the cut may have split (or
    whose folded lines may go on): ended as a header block is. A field cut midway could
    read as wrong addresses, and a list ending in a comma costs the stdlib's address parser
    seconds on 256 KB."""
    end = len(header)
    while (end := header.rfind(b"\n", 0, end)) >= 0:
        following = header[end + 1 : end + 2]
        if following and following not in (b" ", b"\t"):
            return header[: end + 1] + b"\r\n"
    return b"\r\n"


def _fetch_failure(exc: MailSyncError) -> str:
    if isinstance(exc, ServerHungUp):
        return f"The server refused to fetch it: {exc.reason}"
    return f"The server did not answer when asked for it: {exc}"


def _size_text(limit: int) -> str:
    """50 MB, 97.7 KB: a limit as people read it."""
    if limit >= 1024 * 1024:
        return f"{limit / (1024 * 1024):.3g} MB"
    return f"{limit / 1024:.3g} KB"


def _store_error(exc: Exception) -> str:
    return f"Could not be stored: {type(exc).__name__}: {exc}"


def _connection_failure(exc: BaseException) -> bool:
    """Whether a failed store is the database's (connection lost, server shutting down,
    SQLite locked), not one message's data: the pass then fails, as before."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError | DBConnectionError | TransactionManagementError):
            return True
        if isinstance(current, _ASYNCPG_CONNECTION):
            return True
        text = str(current).lower()
        if "database is locked" in text or (
            "connection" in text and ("closed" in text or "lost" in text or "terminat" in text)
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


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
