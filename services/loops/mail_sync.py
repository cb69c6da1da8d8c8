"""EMAIL SYNC, kept running: every connected mailbox of every firm stays in sync until stopped.

`run_sync_loop` is a supervisor: at start and then every PORTICO_SYNC_INTERVAL_SECONDS (or at
once when services/shared/wakeups.MAIL_SYNC says a mailbox was connected, changed or
disconnected) it lists the mailboxes, starts one task per new mailbox and ends the tasks of
disconnected ones. A mailbox whose login changed (updateMailbox) gets a fresh task once its
old one has ended: its next pass starts at once with the new login, whatever backoff the old
login's failures had built up. Beside them
a history task runs the queued history imports (services/mail/history), woken at once
(wakeups.HISTORY) when one is queued in this process.

Each mailbox task repeats: a sync pass (services/mail/sync_engine.sync_mailbox), then a wait.
- The wait is an IMAP IDLE on INBOX, on a connection of its own (services/mail/idle), where
  the server offers IDLE (and PORTICO_SYNC_IDLE is on): new mail (EXISTS) ends it and the
  next pass starts at once.
  It also ends after one interval, so INBOX and Sent are passed over at least that often
  (the interval is always well below RFC 2177's 29 minutes, or IDLE is renewed before them).
  Without IDLE the task simply polls every interval.
- A failed pass (server down, wrong password) is retried after a doubling wait with jitter,
  from PORTICO_SYNC_RETRY_BASE_SECONDS up to PORTICO_SYNC_RETRY_MAX_SECONDS. The mailbox shows
  FAILED and its last error meanwhile. An unexpected exception is logged and handled the same
  way: nothing leaks out of a task, and no task depends on another.
- A busy pass (another process holds the mailbox's lease) drops its IDLE connection and waits
  for the next interval: that process is keeping the mailbox in sync meanwhile. The lease is
  what makes several workers on one PostgreSQL database safe.
- Stopping (SIGTERM) interrupts the waits at once (IDLE is ended and the watcher logs out);
  a pass in flight abandons its IMAP command at once and hands its lease back (lease_until
  cleared) once the chunk it may be storing is written, so the mailbox is claimable at once
  and the next pass stores the rest, each message once; it is cancelled if that takes more
  than STOP_GRACE_SECONDS (the cancelled pass still clears its lease).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from models import Mailbox, MailboxFolder
from portico.settings import Settings
from services.mail import history, sync_engine
from services.mail.idle import IDLE_MAX_SECONDS, IdleWatcher, Woken
from services.mail.imap import INBOX, MailSyncError
from services.mail.mailboxes import mailbox_password
from services.shared import backoff
from services.shared.outage import in_own_task
from services.shared.pubsub import EventBus
from services.shared.scope import FirmScope
from services.shared.wakeups import HISTORY, MAIL_SYNC, wait_any

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0  # a pass in flight may finish its work before it is cancelled
# An IDLE connection lost sooner than this after it opened is not reopened at once: a server
# that drops idle clients would otherwise be logged into over and over.
MIN_IDLE_SECONDS = 30.0
MAX_CONCURRENT_PASSES = 8  # per process: many mailboxes do not all log in at the same moment
# What a mailbox logs in with, and whose its mail is (its visibility: a pass stores mail
# private or not by the row it started with): when any of it changes, its task starts afresh.
# updateMailbox encrypts the password anew every time, so each update is seen.
LOGIN_FIELDS = (
    "imap_host",
    "imap_port",
    "imap_tls",
    "smtp_host",
    "smtp_port",
    "smtp_tls",
    "username",
    "password_encrypted",
    "visibility",
)


def retry_delay(settings: Settings, failures: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after the `failures`-th failed pass or round in a row
    (services/shared/backoff, with the sync's base and maximum)."""
    return backoff.retry_delay(
        settings.sync_retry_base_seconds, settings.sync_retry_max_seconds, failures, rng
    )


# The supervisor -----------------------------------------------------------------------------


async def run_sync_loop(settings: Settings, bus: EventBus | None, stop: asyncio.Event) -> None:
    """Keep every connected mailbox in sync, and run queued history imports, until `stop` is
    set. Never ends on an error: a failing database is retried after a doubling wait."""
    log.info(
        "mailbox sync started (a pass every %g s, IDLE %s)",
        settings.sync_interval_seconds,
        "on" if settings.sync_idle else "off",
    )
    passes = asyncio.Semaphore(MAX_CONCURRENT_PASSES)
    syncs: dict[int, _MailboxSync] = {}
    leaving: list[_MailboxSync] = []  # halted (disconnected or changed), still ending
    background = [asyncio.create_task(_run_history(settings, stop), name="history imports")]
    failures = 0
    try:
        with MAIL_SYNC.listen() as wake:
            while not stop.is_set():
                wake.clear()
                try:
                    rows = await Mailbox.all().values_list("id", *LOGIN_FIELDS)
                    current = {row[0]: tuple(row[1:]) for row in rows}
                    failures = 0
                except Exception:
                    failures += 1
                    log.exception("listing mailboxes failed (%s in a row); trying again", failures)
                    current = None
                if current is not None:
                    leaving = [s for s in leaving if not s.task.done()]
                    for gone in syncs.keys() - current.keys():
                        leaving.append(syncs.pop(gone).halt())  # disconnected
                    for mailbox_id in sorted(current):
                        sync = syncs.get(mailbox_id)
                        if sync is not None and sync.login != current[mailbox_id]:
                            # Changed (updateMailbox): a fresh task with the new login and no
                            # backoff left from the old one; it starts once the old one ended.
                            leaving.append(sync.halt())
                        elif sync is not None and not sync.task.done():
                            continue
                        syncs[mailbox_id] = _MailboxSync(
                            mailbox_id, current[mailbox_id], settings, bus, passes, after=sync
                        )
                timeout = (
                    retry_delay(settings, failures) if failures else settings.sync_interval_seconds
                )
                await wait_any(stop, timeout, wake)
    finally:
        for sync in [*syncs.values(), *leaving]:
            sync.stop.set()
        await _shut_down([*background, *(s.task for s in [*syncs.values(), *leaving])])
        log.info("mailbox sync stopped")


async def _shut_down(tasks: list[asyncio.Task[None]]) -> None:
    """Tasks see `stop` themselves; a pass in flight gets a grace period, then is cancelled."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_SECONDS)
    for task in pending:
        task.cancel()
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, Exception):
            log.error("mailbox sync task ended with %r", result)


async def _run_history(settings: Settings, stop: asyncio.Event) -> None:
    """Queued history imports: every interval, and at once when one is queued here."""
    failures = 0
    with HISTORY.listen() as wake:
        while not stop.is_set():
            wake.clear()  # an import queued during the round below starts another round
            try:
                await in_own_task(history.run_due_imports(settings, stop), "history imports")
                failures = 0
            except Exception:
                failures += 1
                log.exception("history imports failed (%s in a row); trying again", failures)
            timeout = (
                retry_delay(settings, failures) if failures else settings.sync_interval_seconds
            )
            await wait_any(stop, timeout, wake)


# One mailbox --------------------------------------------------------------------------------


class _MailboxSync:
    """Keeps one mailbox in sync: pass, wait (IDLE or poll), pass again; backoff on failure.
    Runs as its own task from construction until `stop` (its own: set by `halt` or when the
    loop stops) or the mailbox is gone."""

    def __init__(
        self,
        mailbox_id: int,
        login: tuple[object, ...],
        settings: Settings,
        bus: EventBus | None,
        passes: asyncio.Semaphore,
        after: _MailboxSync | None = None,
    ) -> None:
        self.mailbox_id = mailbox_id
        self.login = login  # the LOGIN_FIELDS it was started with
        self.settings = settings
        self.bus = bus
        self.stop = asyncio.Event()
        self.passes = passes
        self.failures = 0
        self.watcher: IdleWatcher | None = None
        self.idle_usable = settings.sync_idle  # off for good once the server shows no IDLE
        self.poll_once = False  # the last IDLE connection dropped early: poll this time
        # The INBOX state (UIDVALIDITY, UIDNEXT) that last started a pass: seen again, it is
        # not new mail (e.g. the newest messages were expunged and the cursor stays below).
        self.last_hint: tuple[int | None, int | None] | None = None
        self.task = asyncio.create_task(
            self.run(after.task if after else None), name=f"mailbox sync {mailbox_id}"
        )

    def halt(self) -> _MailboxSync:
        """Ends the task: at once when it waits (IDLE is ended, its connection closed), after
        the batch in hand when a pass runs, cancelled if that takes over STOP_GRACE_SECONDS."""
        self.stop.set()
        asyncio.get_running_loop().call_later(STOP_GRACE_SECONDS, self.task.cancel)
        return self

    async def run(self, after: asyncio.Task[None] | None = None) -> None:
        if after is not None:  # the same mailbox's previous task: one at a time
            await asyncio.wait([after])
        try:
            while not self.stop.is_set():
                try:
                    if not await self.round():
                        return  # the mailbox is gone
                except Exception:
                    self.failures += 1
                    log.exception(
                        "mailbox %s: sync round failed unexpectedly (%s in a row)",
                        self.mailbox_id,
                        self.failures,
                    )
                    await self.drop_watcher()
                    await wait_any(self.stop, retry_delay(self.settings, self.failures))
        finally:
            await self.drop_watcher()

    async def round(self) -> bool:
        """One pass and the wait after it; False when the mailbox no longer exists."""
        mailbox = await Mailbox.get_or_none(pk=self.mailbox_id)
        if mailbox is None:
            log.info("mailbox %s: deleted, its sync ends", self.mailbox_id)
            return False
        async with self.passes:
            if self.stop.is_set():
                return True
            sync = sync_engine.sync_mailbox(
                FirmScope(mailbox.firm_id), mailbox, self.settings, self.bus, self.stop
            )
            result = await in_own_task(sync, f"sync of mailbox {self.mailbox_id}")
        if result.gone:
            return False  # disconnected during the pass
        if result.error is not None:
            self.failures += 1
            delay = retry_delay(self.settings, self.failures)
            log.warning(
                "mailbox %s: sync failed (%s in a row), next attempt in %.1f s: %s",
                self.mailbox_id,
                self.failures,
                delay,
                result.error,
            )
            await self.drop_watcher()  # it is likely as broken as the pass was
            await wait_any(self.stop, delay)
            return True
        if self.failures:
            log.info("mailbox %s: sync recovered", self.mailbox_id)
            self.failures = 0
        if result.busy:
            # Another process is passing over it (and so keeps it in sync, IDLE included):
            # look again later, holding no connection of ours meanwhile.
            await self.drop_watcher()
            await wait_any(self.stop, self.settings.sync_interval_seconds)
            return True
        if self.stop.is_set():
            return True  # ending: no IDLE connection to open
        await self.wait_for_mail(mailbox)
        return True

    async def wait_for_mail(self, mailbox: Mailbox) -> None:
        """Until new mail in INBOX (IDLE), one interval, `stop`, or a lost IDLE connection."""
        interval = self.settings.sync_interval_seconds
        watcher = await self.watch(mailbox) if self.idle_usable and not self.poll_once else None
        self.poll_once = False
        if watcher is None:
            await wait_any(self.stop, interval)
            return
        remaining = interval
        while remaining > 0:
            started = time.monotonic()
            woken = await self.watch_once(watcher, mailbox, min(remaining, IDLE_MAX_SECONDS))
            if woken is Woken.TIMEOUT:
                remaining -= time.monotonic() - started
                continue  # renewing IDLE before RFC 2177's limit: the interval is not over
            if woken is Woken.LOST:
                self.poll_once = time.monotonic() - watcher.opened < MIN_IDLE_SECONDS
                log.info("mailbox %s: IDLE connection lost", self.mailbox_id)
                await self.drop_watcher()
            return

    async def watch(self, mailbox: Mailbox) -> IdleWatcher | None:
        """The open IDLE connection, opened if needed; None when IDLE is not to be had."""
        if self.watcher is not None and not self.watcher.lost.is_set():
            return self.watcher
        await self.drop_watcher()
        try:
            password = mailbox_password(self.settings, mailbox)
            watcher = await IdleWatcher.open(mailbox, password, self.settings)
        except Exception as exc:  # the pass just logged in: a passing failure, poll this time
            log.info("mailbox %s: no IDLE connection this time: %s", self.mailbox_id, exc)
            return None
        if not watcher.can_idle:
            log.info("mailbox %s: the server has no IDLE, polling", self.mailbox_id)
            self.idle_usable = False
            await watcher.close()
            return None
        self.watcher = watcher
        return watcher

    async def watch_once(self, watcher: IdleWatcher, mailbox: Mailbox, seconds: float) -> Woken:
        try:
            hint = await watcher.examine_inbox()
            if await self.behind(mailbox, hint) and hint != self.last_hint:
                self.last_hint = hint  # mail came in between the pass and this look
                return Woken.MAIL
            woken = await watcher.idle(seconds, self.stop, f"mailbox {mailbox.pk}")
        except MailSyncError as exc:
            log.info("mailbox %s: IDLE ended: %s", self.mailbox_id, exc)
            return Woken.LOST
        if woken is Woken.MAIL:
            self.last_hint = None
        return woken

    async def behind(self, mailbox: Mailbox, hint: tuple[int | None, int | None]) -> bool:
        """Whether INBOX has mail the cursor has not reached (or a new UIDVALIDITY)."""
        uidvalidity, uidnext = hint
        cursor = await MailboxFolder.get_or_none(mailbox_id=mailbox.pk, role=INBOX)
        if cursor is None or uidvalidity is None or cursor.uidvalidity != uidvalidity:
            return True
        return uidnext is not None and uidnext > cursor.last_uid + 1

    async def drop_watcher(self) -> None:
        if self.watcher is not None:
            watcher, self.watcher = self.watcher, None
            await watcher.close()
