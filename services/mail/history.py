"""EMAIL SYNC history: turning EMAIL SYNC on for an address imports its earlier mail from
every connected mailbox of the firm, in the background (services/mail/sync_engine.import_history).

Queuing (`queue`, called inside the transaction that turns EMAIL SYNC on, so a toggle never
commits without its imports): one PENDING HistoryImport per (mailbox, address). A PENDING
import of the same pair is enough and none is added. A RUNNING one is not enough: its
earlier batches were linked before this account had EMAIL SYNC on, so a new one is queued.

Running (`run_due_imports`, from the background loop of `portico serve` / `portico worker`):
- due are PENDING imports, RUNNING ones whose lease ran out (their process died), and
  FAILED ones worth another try (below);
- the due imports of one mailbox are claimed together by a conditional UPDATE (status and
  lease still as read), so on SQLite and PostgreSQL alike two processes never run the same
  import; the lease value carries random microseconds and is the claim's token: progress and
  outcome are written only while the row still holds it;
- their addresses are imported in one IMAP login per mailbox and round; an address whose
  EMAIL SYNC is off everywhere by then is finished at once (nothing of it would be kept);
- progress (found, imported) is written once each folder is searched and after every
  batch, renewing the lease;
- `stop` set mid-import ends it after the current batch (or search) and puts the imports back
  to PENDING for the next round or another process (so does cancelling the task, as far as
  the database still answers): what was stored stays, and is found again by its key.
- a mailbox disconnected mid-import (its imports are deleted with it) ends the import at
  its next progress write, after the current batch.

Counts: `found` is what the server matched in the import's last run (for every address of
that run when several of one mailbox were imported together; known once a folder is searched,
so it shows the import's size while it runs), `imported` the messages with that address
stored or newly linked to an account, over all runs. Both are written after each folder's
search and after every batch.

Addresses are isolated: a non-ASCII address is searched with CHARSET UTF-8, and an address the
server refuses to search (no UTF-8 search, say) fails alone with the server's words as its
last_error; the other addresses of the same login are imported and DONE.

A FAILED import is tried again once RETRY_AFTER has passed, but only when the mailbox has
synced successfully since it failed (so a wrong password is not tried over and over, which
could lock the mailbox), and only for GIVE_UP_AFTER after it was queued. Turning EMAIL SYNC
off and on again always queues a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from tortoise.expressions import Case, F, Q, When
from tortoise.functions import Count, Max

from models import HistoryImport, HistoryStatus, Mailbox, Message
from portico.settings import Settings
from services.mail import store, sync_engine
from services.shared.leases import lease_token
from services.shared.scope import FirmScope

log = logging.getLogger(__name__)

LEASE_SECONDS = 120  # renewed after every batch: a killed worker holds the import this long
RELEASE_SECONDS = 5.0  # putting rows back when cancelled: the process is going away
RETRY_AFTER = timedelta(minutes=15)
GIVE_UP_AFTER = timedelta(days=7)
MAX_ADDRESSES_PER_LOGIN = 200  # a few grouped SEARCHes a folder: keeps a run within its lease
UNFINISHED = (HistoryStatus.PENDING, HistoryStatus.RUNNING)


# Queuing ------------------------------------------------------------------------------------


async def queue(scope: FirmScope, addresses: Iterable[str]) -> int:
    """Queues the history import of each of `addresses` from every mailbox of the firm; how
    many were queued. Call it inside the transaction that turns EMAIL SYNC on, and
    notify wakeups.HISTORY after it commits."""
    wanted = sorted({a.strip().lower() for a in addresses if a.strip()})
    if not wanted:
        return 0
    mailbox_ids = list(await scope.query(Mailbox).values_list("id", flat=True))
    if not mailbox_ids:
        return 0  # a mailbox connected later reads all its mail in its first sync
    # Locked (PostgreSQL) so that a process claiming one of them waits for this transaction
    # and then reads the accounts it turned on.
    pending = (
        await scope.query(HistoryImport)
        .filter(status=HistoryStatus.PENDING, address_normalized__in=wanted)
        .select_for_update()
    )
    waiting = {(row.mailbox_id, row.address_normalized) for row in pending}
    rows = [
        HistoryImport(firm_id=scope.firm_id, mailbox_id=mailbox_id, address_normalized=address)
        for mailbox_id in mailbox_ids
        for address in wanted
        if (mailbox_id, address) not in waiting
    ]
    if rows:
        await HistoryImport.bulk_create(rows)
    return len(rows)


# Reading ------------------------------------------------------------------------------------


async def latest_by_mailbox(
    scope: FirmScope, mailbox_ids: Sequence[int], first: int
) -> dict[int, list[HistoryImport]]:
    """For each mailbox, the latest import of each address, newest first, at most `first`."""
    found: dict[int, list[HistoryImport]] = {m: [] for m in mailbox_ids}
    if not mailbox_ids or first <= 0:
        return found
    latest = await (
        scope.query(HistoryImport)
        .filter(mailbox_id__in=list(mailbox_ids))
        .annotate(last_id=Max("id"))
        .group_by("mailbox_id", "address_normalized")
        .values_list("mailbox_id", "last_id")
    )
    newest: dict[int, list[int]] = defaultdict(list)
    for mailbox_id, last_id in latest:
        newest[mailbox_id].append(last_id)
    wanted = [i for ids in newest.values() for i in sorted(ids, reverse=True)[:first]]
    if not wanted:
        return found
    for row in await scope.query(HistoryImport).filter(id__in=wanted).order_by("-id"):
        found[row.mailbox_id].append(row)
    return found


async def unfinished_by_mailbox(scope: FirmScope, mailbox_ids: Sequence[int]) -> dict[int, int]:
    """For each mailbox, how many imports are waiting or running."""
    counts = {m: 0 for m in mailbox_ids}
    if not mailbox_ids:
        return counts
    rows = await (
        scope.query(HistoryImport)
        .filter(mailbox_id__in=list(mailbox_ids), status__in=list(UNFINISHED))
        .annotate(n=Count("id"))
        .group_by("mailbox_id")
        .values_list("mailbox_id", "n")
    )
    counts.update(dict(rows))
    return counts


# Running ------------------------------------------------------------------------------------


async def run_due_imports(settings: Settings, stop: asyncio.Event | None = None) -> int:
    """Runs the pending history imports this process can claim; how many it ran."""
    ran = 0
    tried: set[int] = set()  # each mailbox once per round: one login per mailbox
    while stop is None or not stop.is_set():
        claim = await _claim_next(tried)
        if claim is None:
            break
        if len(claim.rows) < MAX_ADDRESSES_PER_LOGIN:  # else more may wait: log in again
            tried.add(claim.mailbox_id)
        if claim.rows:
            ran += await claim.run(settings, stop)
    return ran


def _now() -> datetime:
    return datetime.now(UTC)


def _new_lease(now: datetime) -> datetime:
    return lease_token(now, LEASE_SECONDS)


def _due(now: datetime) -> Q:
    """Due by the row alone (the claim's condition)."""
    return (
        Q(status=HistoryStatus.PENDING)
        | Q(status=HistoryStatus.RUNNING, lease_until__isnull=True)
        | Q(status=HistoryStatus.RUNNING, lease_until__lt=now)
        | Q(
            status=HistoryStatus.FAILED,
            finished_at__lt=now - RETRY_AFTER,
            created_at__gt=now - GIVE_UP_AFTER,
        )
    )


def _worth_retrying() -> Q:
    """A FAILED import waits until its mailbox has synced successfully since."""
    return ~Q(status=HistoryStatus.FAILED) | Q(mailbox__last_synced_at__gt=F("finished_at"))


async def _claim_next(tried: set[int]) -> _Claim | None:
    """Claims the due imports of the mailbox with the oldest one; None when nothing is due.
    The claim's rows are empty when another process claimed them first."""
    now = _now()
    candidates = HistoryImport.filter(_due(now), _worth_retrying())
    if tried:
        candidates = candidates.exclude(mailbox_id__in=list(tried))
    oldest = await candidates.order_by("id").first()
    if oldest is None:
        return None
    mailbox_id = oldest.mailbox_id
    ids = list(
        await candidates.filter(mailbox_id=mailbox_id)
        .order_by("id")
        .limit(MAX_ADDRESSES_PER_LOGIN)
        .values_list("id", flat=True)
    )
    lease = _new_lease(now)
    await HistoryImport.filter(_due(now), id__in=ids).update(
        status=HistoryStatus.RUNNING, lease_until=lease
    )
    rows = await HistoryImport.filter(id__in=ids, status=HistoryStatus.RUNNING, lease_until=lease)
    return _Claim(mailbox_id, list(rows), lease)


class _Claim:
    """Imports of one mailbox claimed by this process, and their run."""

    def __init__(self, mailbox_id: int, rows: list[HistoryImport], lease: datetime) -> None:
        self.mailbox_id = mailbox_id
        self.rows = rows
        # The lease values the rows may hold: a renewal's joins before it is written, and
        # stays alone once it returned; cancelled meanwhile, either may be the rows' (the
        # release after a cancellation must still find them).
        self.leases = [lease]
        self.imported: dict[str, int] = {row.address_normalized: 0 for row in rows}
        self.held = True  # False once another process has taken the rows over
        self.stop: asyncio.Event | None = None

    @property
    def ids(self) -> list[int]:
        return [row.pk for row in self.rows]

    async def run(self, settings: Settings, stop: asyncio.Event | None) -> int:
        """Runs the import; how many of the claimed imports finished (DONE or FAILED)."""
        self.stop = stop
        mailbox = await Mailbox.get_or_none(pk=self.mailbox_id)
        if mailbox is None:
            return 0  # removed meanwhile: its imports went with it
        scope = FirmScope(mailbox.firm_id)
        addresses = sorted(self.imported)
        synced = await store.synced_accounts(scope, addresses)
        gone = [a for a in addresses if a not in synced]
        if gone:  # EMAIL SYNC is off everywhere by now: nothing of theirs would be kept
            await self._finish(mailbox, None, found=0, only=gone)
        active = [a for a in addresses if a in synced]
        if not active:
            return len(self.rows)
        try:
            # No event per message: an import can bring thousands at once, and live clients
            # would drop most of them anyway; historyPending tells them to refetch.
            result = await sync_engine.import_history(
                scope, mailbox, settings, active, None, self._progress
            )
        except _Stopped:
            await self._release()
            return len(gone)
        except asyncio.CancelledError:
            # Cancelled: put the rows back if the database still answers, then go.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._release(), RELEASE_SECONDS)
            raise
        await self._count(result)
        # An address the server refused to search fails alone: the others' imports are done.
        refused = {a: e for a, e in result.address_errors.items() if a in active}
        await self._finish(
            mailbox, result.error, found=result.total, only=[a for a in active if a not in refused]
        )
        for address, error in refused.items():
            await self._finish(mailbox, error, found=0, only=[address])
        log.info(
            "history import from mailbox %s of %s: %s (%d found, %d stored, %d linked)",
            mailbox.pk,
            ", ".join(active),
            "failed" if result.error else "done",
            result.fetched,
            result.stored,
            result.linked,
        )
        return len(self.rows)

    async def _progress(self, result: sync_engine.SyncResult) -> None:
        """After each folder's search and every batch: counts shown on the mailbox, the lease
        renewed, and the end of the import when `stop` is set."""
        await self._count(result)
        if self.held:
            await self._save(result)
        if self.stop is not None and self.stop.is_set():
            raise _Stopped  # between batches: no message is half written

    async def _save(self, result: sync_engine.SyncResult) -> None:
        lease = _new_lease(_now())
        self.leases.append(lease)
        # Each row's own count, in the same statement: one UPDATE a batch, however many rows.
        imported = Case(
            *(When(id=row.pk, then=self._imported(row)) for row in self.rows),
            default=F("imported"),
        )
        renewed = await HistoryImport.filter(id__in=self.ids, lease_until__in=self.leases).update(
            lease_until=lease, found=result.total, imported=imported
        )
        if not renewed:
            self.held = False
            if not await HistoryImport.filter(id__in=self.ids).exists():
                # Their mailbox was disconnected (the rows went with it): nothing more is
                # read or stored through it.
                log.info("history imports %s: mailbox %s disconnected", self.ids, self.mailbox_id)
                raise _Stopped
            log.warning("history imports %s were taken over by another process", self.ids)
            return
        self.leases = [lease]

    def _imported(self, row: HistoryImport) -> int:
        """The row's count over all its runs: earlier runs' and this one's so far."""
        return row.imported + self.imported[row.address_normalized]

    async def _count(self, result: sync_engine.SyncResult) -> None:
        """Adds the messages stored or linked since the last call to their addresses (taken
        out of the result, which holds only those not yet counted)."""
        new = list(result.message_ids)
        result.message_ids.clear()
        if not new:
            return
        people = await Message.filter(id__in=new).values_list(
            "from_address", "to_addresses", "cc_addresses"
        )
        for sender, to, cc in people:
            for address in {sender, *(to or []), *(cc or [])} & set(self.imported):
                self.imported[address] += 1

    async def _finish(
        self, mailbox: Mailbox, error: str | None, *, found: int, only: Sequence[str]
    ) -> None:
        if not self.held:
            return
        status = HistoryStatus.FAILED if error else HistoryStatus.DONE
        now = _now()
        for row in self.rows:
            if row.address_normalized not in only:
                continue
            await HistoryImport.filter(id=row.pk, lease_until__in=self.leases).update(
                status=status,
                found=found,
                imported=self._imported(row),
                last_error=error,
                lease_until=None,
                finished_at=now,
            )
        if error:
            log.warning("history import from mailbox %s failed: %s", mailbox.pk, error)

    async def _release(self) -> None:
        """Stopped midway: the rows wait for the next round (what was stored stays)."""
        if self.held:
            await HistoryImport.filter(
                id__in=self.ids, lease_until__in=self.leases, status=HistoryStatus.RUNNING
            ).update(status=HistoryStatus.PENDING, lease_until=None)


class _Stopped(BaseException):
    """Ends an import from its progress callback, between two batches (or a search and a
    batch). A BaseException, as CancelledError is: the import's own error handling (which
    records failures) lets it by. An import stops between batches, each stored whole."""
