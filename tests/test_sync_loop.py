"""The continuous mailbox sync (services/loops/mail_sync.py) against a real Dovecot (tests/support/imap.py):
mail arrives without syncMailbox, by polling and by IMAP IDLE; an IMAP outage is survived;
one failing mailbox never holds up another; two loops never pass over a mailbox at once;
stop is prompt; `portico worker` runs it.

Each test has IMAP users of its own. Waits are for conditions, with generous deadlines.
The wrong-password test comes last: Dovecot slows down logins from an address after a failed
one, which would slow every test after it on the module's server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from models import AccountEmail, Mailbox, Message, SyncStatus
from portico.settings import Settings
from services.loops import delivery, mail_sync
from services.mail import store as message_store
from services.mail import sync_engine
from services.shared import backoff
from services.shared.pubsub import InProcessBus
from tests.support import server
from tests.support.api import Firm, eventually
from tests.support.imap import PASSWORD, ImapServer, imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.login import invitee
from tests.support.mail import (
    ANNA,
    CONNECT,
    add_mailbox,
    imap_user,
    mail,
    mailbox_input,
    when_asked_for,
)
from tests.support.smtp import SmtpServer, smtp_fixture  # noqa: F401  (the `smtp` fixture)
from tests.support.worker import start_worker

DEADLINE = 20.0  # seconds: far more than any wait here needs, far less than a poll interval
SLOW = 300.0  # an interval no test waits for: what arrives sooner came another way

INBOX = "{ inbox(first: 50) { totalCount edges { node { subject } } } }"


def loop_settings(settings: Settings, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "sync_interval_seconds": SLOW,
        "sync_retry_base_seconds": 0.2,
        "sync_retry_max_seconds": 1.0,
    }
    values.update(changes)
    return settings.model_copy(update=values)


async def synced_address(firm: Firm) -> None:
    """Anna (the sender of `mail` by default), a client with EMAIL SYNC on: her mail is kept."""
    await invitee(firm.api, "Miller Family", ANNA)
    await AccountEmail.all().update(email_sync=True)


@contextlib.asynccontextmanager
async def running(settings: Settings, bus: InProcessBus | None = None) -> AsyncIterator[Any]:
    """The sync loop as a task; stopped (and checked to end cleanly) when the block ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(mail_sync.run_sync_loop(settings, bus, stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def subjects(firm_id: int) -> list[str]:
    return sorted(await Message.filter(firm_id=firm_id).values_list("subject", flat=True))


def idle_records(caplog: pytest.LogCaptureFixture, mailbox: Mailbox) -> int:
    return sum(
        1
        for r in caplog.records
        if r.name == "services.mail.idle"
        and r.getMessage().startswith(f"mailbox {mailbox.pk}: IDLE on INBOX")
    )


# Mail arrives by itself ---------------------------------------------------------------------


async def test_polling_brings_new_mail_into_the_inbox_without_sync_mailbox(
    acme: Firm, imap: ImapServer, smtp: SmtpServer, settings: Settings
) -> None:
    await synced_address(acme)
    user = imap_user()
    body = await acme.api.post(CONNECT, {"input": mailbox_input(imap, smtp, user)})
    assert body["data"]["connectMailbox"]["errors"] == [], body
    # Without IDLE, and every 0.2 s: the poll is what brings the mail in.
    polling = loop_settings(settings, sync_idle=False, sync_interval_seconds=0.2)
    async with running(polling) as task:
        imap.append(user, mail(to=user, subject="Polled"))
        imap.append(user, mail("stranger@else.example", user, "Not kept"))

        async def in_inbox() -> bool:
            return (await acme.api.data(INBOX))["inbox"]["totalCount"] >= 1

        await eventually(in_inbox, "the mail is in the inbox", DEADLINE)
        imap.append(user, mail(to=user, subject="Polled again"))

        async def both() -> bool:
            return (await acme.api.data(INBOX))["inbox"]["totalCount"] >= 2

        await eventually(both, "the second mail is in the inbox", DEADLINE)
        assert not task.done()
    inbox = (await acme.api.data(INBOX))["inbox"]
    assert sorted(e["node"]["subject"] for e in inbox["edges"]) == ["Polled", "Polled again"]
    [row] = await Mailbox.all()
    assert row.sync_status == SyncStatus.IDLE and row.last_error is None


async def test_idle_brings_new_mail_long_before_the_poll_interval(
    acme: Firm, imap: ImapServer, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="services.mail.idle")
    await synced_address(acme)
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    bus = InProcessBus()
    async with running(loop_settings(settings, sync_interval_seconds=SLOW), bus):
        seen = 0  # IDLEs begun before the last append: the next one follows its pass
        for n in (1, 2):
            # Only once the loop idles on INBOX: the mail must come through the push.

            async def idling(seen: int = seen) -> bool:
                return idle_records(caplog, mailbox) > seen

            await eventually(idling, "the loop idles on INBOX", DEADLINE)
            seen = idle_records(caplog, mailbox)
            imap.append(mailbox.username, mail(to=mailbox.address, subject=f"Pushed {n}"))

            async def arrived(n: int = n) -> bool:
                return len(await subjects(acme.owner.firm_id)) >= n

            # The poll is 300 s away: arriving within 20 s proves IDLE.
            await eventually(arrived, f"message {n} arrives through IDLE", DEADLINE)
    assert await subjects(acme.owner.firm_id) == ["Pushed 1", "Pushed 2"]


async def test_stop_ends_the_loop_promptly_and_logs_out(
    acme: Firm, imap: ImapServer, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="services.mail.idle")
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(
        mail_sync.run_sync_loop(loop_settings(settings, sync_interval_seconds=SLOW), None, stop)
    )
    try:

        async def idling() -> bool:
            return idle_records(caplog, mailbox) > 0

        await eventually(idling, "the loop idles on INBOX", DEADLINE)
    finally:
        stop.set()
    started = time.monotonic()
    await asyncio.wait_for(task, DEADLINE)  # the IDLE and the interval are 300 s long
    assert task.exception() is None
    assert time.monotonic() - started < DEADLINE
    await mailbox.refresh_from_db()
    assert mailbox.sync_status == SyncStatus.IDLE and mailbox.lease_until is None
    # The IDLE connection logged out: no Dovecot process serves the user any more.

    async def logged_out() -> bool:
        return not imap.sessions(mailbox.username)

    await eventually(logged_out, "the IDLE connection logs out", DEADLINE)


# Failures -----------------------------------------------------------------------------------


async def test_the_server_stopping_mid_sync_fails_then_the_loop_reconnects(
    acme: Firm, imap: ImapServer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await synced_address(acme)
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    for n in range(3):
        imap.append(mailbox.username, mail(to=mailbox.address, subject=f"Before {n}"))
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 1)

    def server_gone() -> None:  # as the second message is asked for
        imap.stop()
        imap.end_sessions(mailbox.username)

    when_asked_for(monkeypatch, sync_engine.PARTICIPANT_FIELDS, 2, server_gone)
    try:
        async with running(loop_settings(settings)) as task:

            async def failed_again() -> bool:
                # FAILED, and retried since: the error of a new attempt is a refused connection.
                row = await Mailbox.get(pk=mailbox.pk)
                return row.sync_status == SyncStatus.FAILED and (row.last_error or "").startswith(
                    "Could not connect to the IMAP server"
                )

            await eventually(failed_again, "the mailbox shows FAILED, retried", DEADLINE)
            row = await Mailbox.get(pk=mailbox.pk)
            assert f"{imap.host}:{imap.port}" in (row.last_error or "")
            assert PASSWORD not in (row.last_error or "")
            assert await subjects(acme.owner.firm_id) == ["Before 0"]

            # Mail delivered while the server is down, then the server comes back.
            imap.deliver_to_maildir(mailbox.username, mail(to=mailbox.address, subject="Meanwhile"))
            imap.start()

            async def recovered() -> bool:
                row = await Mailbox.get(pk=mailbox.pk)
                return (
                    len(await subjects(acme.owner.firm_id)) == 4
                    and row.sync_status == SyncStatus.IDLE
                    and row.last_error is None
                )

            await eventually(recovered, "the loop reconnects and catches up", DEADLINE)
            assert not task.done()
    finally:
        imap.ensure_running()
    assert await subjects(acme.owner.firm_id) == ["Before 0", "Before 1", "Before 2", "Meanwhile"]
    assert await Message.all().count() == 4  # nothing stored twice


async def test_two_loops_never_sync_one_mailbox_at_once(
    acme: Firm, imap: ImapServer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await synced_address(acme)
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    for n in range(10):
        imap.append(mailbox.username, mail(to=mailbox.address, subject=f"Message {n}"))
    # Watch the engine's lease: who holds it, and who was turned away.
    claim, finish = sync_engine._claim, sync_engine._finish
    holders = 0
    most = 0
    refused = 0
    granted = 0

    async def watched_claim(*args: Any) -> bool:
        nonlocal holders, most, refused, granted
        claimed = await claim(*args)
        if claimed:
            granted += 1
            holders += 1
            most = max(most, holders)
        else:
            refused += 1
        return claimed

    async def watched_finish(*args: Any) -> None:
        nonlocal holders
        holders -= 1
        await finish(*args)

    store = message_store.store_messages

    async def slow_store(*args: Any, **kwargs: Any) -> list[message_store.StoreOutcome]:
        await asyncio.sleep(0.05)  # long passes: the two loops keep running into each other
        return await store(*args, **kwargs)

    monkeypatch.setattr(sync_engine, "_claim", watched_claim)
    monkeypatch.setattr(sync_engine, "_finish", watched_finish)
    monkeypatch.setattr(message_store, "store_messages", slow_store)
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 2)
    polling = loop_settings(settings, sync_idle=False, sync_interval_seconds=0.05)
    async with running(polling), running(polling):

        async def contended() -> bool:
            stored = len(await subjects(acme.owner.firm_id))
            return stored == 10 and refused >= 1 and granted >= 3

        await eventually(contended, "both loops have synced and met", DEADLINE)
    assert most == 1, "two passes over one mailbox at once"
    assert await Message.all().count() == 10
    await mailbox.refresh_from_db()
    assert mailbox.sync_status == SyncStatus.IDLE and mailbox.lease_until is None


async def test_portico_worker_processes_sync_each_message_once(
    acme: Firm, imap: ImapServer, settings: Settings, tmp_path: Path
) -> None:
    """One `portico worker` on SQLite; two on PostgreSQL, sharing the mailbox."""
    count = 2 if settings.resolved_database_url.startswith("postgres") else 1
    secret = "sync-workers-secret"
    keyed = settings.model_copy(update={"secret_key": secret})
    await synced_address(acme)
    mailbox = await add_mailbox(acme.owner.firm_id, imap, keyed)
    logs = [tmp_path / f"worker-{n}.log" for n in range(count)]
    url = keyed.resolved_database_url
    workers = [
        start_worker(
            log,
            database_url=url,
            secret_key=secret,  # the key the mailbox password was encrypted with
            var_dir=tmp_path / "var",
            sync_interval_seconds=0.5,
            sync_idle=0,  # each worker polls: they meet on the mailbox all the time
        )
        for log in logs
    ]
    try:

        async def started() -> bool:
            for worker, log in zip(workers, logs, strict=True):
                assert worker.poll() is None, log.read_text(errors="replace")
            return all("mailbox sync started" in log.read_text(errors="replace") for log in logs)

        await eventually(started, "the workers sync", 60)
        for n in range(20):
            imap.append(mailbox.username, mail(to=mailbox.address, subject=f"Message {n}"))

        async def all_stored() -> bool:
            return len(await subjects(acme.owner.firm_id)) == 20

        await eventually(all_stored, "the workers store all 20 messages", 60)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(worker.wait, 30) for worker in workers]
    assert codes == [0] * count  # SIGTERM is a clean stop
    assert await Message.all().count() == 20
    passes = [
        log.read_text(errors="replace").count(f"mail sync of mailbox {mailbox.pk}:") for log in logs
    ]
    assert min(passes) > 0, passes  # each took part
    await mailbox.refresh_from_db()
    assert mailbox.lease_until is None and mailbox.sync_status == SyncStatus.IDLE


def test_portico_serve_runs_the_sync_in_process(tmp_path: Path) -> None:
    live = server.start_server(tmp_path)
    try:
        deadline = time.monotonic() + DEADLINE
        while "mailbox sync started" not in live.log():
            assert time.monotonic() < deadline, live.log()
            time.sleep(0.05)
    finally:
        live.stop()
    # SIGTERM: the lifespan stopped the loop and finished (uvicorn then re-raises the signal).
    assert "mailbox sync stopped" in live.log(), live.log()
    assert "Application shutdown complete" in live.log(), live.log()


# Last: a failed login slows Dovecot's later logins from this address (see the docstring).
async def test_a_mailbox_with_a_wrong_password_does_not_stop_the_others(
    acme: Firm, imap: ImapServer, settings: Settings
) -> None:
    await synced_address(acme)
    wrong = await add_mailbox(acme.owner.firm_id, imap, settings, password="not-the-password-42")
    good = await add_mailbox(acme.owner.firm_id, imap, settings)
    # A long retry: one failed login only, so Dovecot's penalty stays small.
    slow_retry = loop_settings(settings, sync_retry_base_seconds=SLOW, sync_retry_max_seconds=SLOW)
    async with running(slow_retry) as task:

        async def wrong_failed() -> bool:
            row = await Mailbox.get(pk=wrong.pk)
            return row.sync_status == SyncStatus.FAILED

        await eventually(wrong_failed, "the wrong password fails", 60)
        imap.append(good.username, mail(to=good.address, subject="Still arrives"))

        async def arrived() -> bool:
            return await subjects(acme.owner.firm_id) == ["Still arrives"]

        await eventually(arrived, "the other mailbox's mail arrives", 60)
        assert not task.done()
    row = await Mailbox.get(pk=wrong.pk)
    assert "refused the username or password" in (row.last_error or "")
    assert "not-the-password-42" not in (row.last_error or "")
    await good.refresh_from_db()
    assert good.sync_status == SyncStatus.IDLE and good.last_error is None


def test_a_failed_pass_waits_the_sync_backoff_not_the_delivery_one() -> None:
    """One backoff (services/shared/backoff) for both loops, each with its own numbers."""
    settings = Settings(
        sync_retry_base_seconds=5,
        sync_retry_max_seconds=300,
        mail_retry_base_seconds=30,
        mail_retry_max_seconds=3600,
        _env_file=None,
    )
    rng = random.Random(11)
    for failures, nominal in [(1, 5), (2, 10), (3, 20), (6, 160)]:
        delays = [mail_sync.retry_delay(settings, failures, rng) for _ in range(500)]
        assert nominal * 0.8 <= min(delays) and max(delays) <= nominal * 1.2
        assert max(delays) - min(delays) > nominal * 0.3  # really spread
    capped = [mail_sync.retry_delay(settings, 12, rng) for _ in range(500)]
    assert min(capped) >= 300 * 0.8 and max(capped) <= 300
    # The same draw gives each caller its own base and maximum.
    sync = mail_sync.retry_delay(settings, 2, random.Random(3))
    mail = delivery.retry_delay(settings, 2, random.Random(3))
    assert sync == backoff.retry_delay(5, 300, 2, random.Random(3))
    assert mail == backoff.retry_delay(30, 3600, 2, random.Random(3))
