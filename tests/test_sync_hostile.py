"""Hostile and broken mail in the sync (issue 14, goals 4, 6, 7, 8) against a real Dovecot.

- A message the server will not FETCH, that cannot be parsed or cannot be stored is retried
  on the next passes, then skipped for a while; the rest of the mailbox syncs on, and the
  skipped messages are shown on the mailbox (Mailbox.skippedMessages).
- A message over the size limit is never downloaded: its headers are stored with the reason.
  One whose size the server does not say is read in bounded parts (a proxy in front of
  Dovecot takes RFC822.SIZE out of its answers).
- A bounce (DSN) for an outbox message marks it FAILED, even when no participant syncs.
- Progress of a pass is shown on the mailbox (syncProgress).
- A stop during a large FETCH hands the mailbox back at once; the IMAP connection cut in the
  middle of a large FETCH fails the pass readably, and the next pass stores the rest, each
  message once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import imaplib
import re
import signal
import time
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from models import (
    DeliveryStatus,
    Mailbox,
    MailboxFolder,
    MailboxSkip,
    Message,
    OutboundEmail,
    SyncStatus,
)
from schema import ids
from services.mail import bounces, sync_engine
from services.mail import imap as imap_session
from services.mail import store as message_store
from services.mail.imap import Fetched, ImapSession, ServerHungUp, ServerTimedOut
from services.outbound import outbox
from tests.support.api import api_for
from tests.support.imap import PASSWORD, ImapServer, imap_fixture  # noqa: F401
from tests.support.imap_proxy import ImapProxy, imap_proxy
from tests.support.mail import add_mailbox, mail, when_asked_for
from tests.support.sqlcount import count_sql
from tests.test_mailsync import (
    JANE,
    STRANGER,
    World,
    mailbox_with_letters,
    stored,
    sync,
    world_fixture,  # noqa: F401  (the `world` fixture)
)

SKIPPED_STATEMENTS = 3  # the mailboxes page with skippedMessages, for 1 mailbox as for 4
SKIPPED = """{ mailboxes { id skippedMessages { folder uid reason attempts firstSeenAt
  lastAttemptAt skippedAt retryAfter } syncProgress { done total } } }"""


def maildir_file(imap: ImapServer, user: str, marker: str) -> Path:
    """The file of the message in `user`'s INBOX whose text holds `marker` (Dovecot may move
    it from new/ to cur/ meanwhile: looked for again then)."""
    maildir = imap.folder / "home" / user / "Maildir"
    for _ in range(20):
        for sub in ("cur", "new"):
            for path in (maildir / sub).iterdir():
                with suppress(FileNotFoundError):
                    if marker.encode() in path.read_bytes():
                        return path
        time.sleep(0.05)
    raise AssertionError(f"no message with {marker!r}")


def with_settings(world: World, **changes: Any) -> World:
    return dataclasses.replace(world, settings=world.settings.model_copy(update=changes))


async def through_proxy(mailbox: Mailbox, proxy: ImapProxy) -> None:
    mailbox.imap_host, mailbox.imap_port = proxy.host, proxy.port
    await mailbox.save()


# Skips --------------------------------------------------------------------------------------


async def test_a_message_the_server_will_not_fetch_is_retried_then_skipped_and_shown(
    world: World, imap: ImapServer, client: Any
) -> None:
    mailbox = await mailbox_with_letters(world, imap, 3)
    maildir_file(imap, mailbox.username, "Letter 1").chmod(
        0
    )  # Dovecot (user dovecot) cannot read it: FETCH fails, then it hangs up
    api = await api_for(client, world.owner)
    try:
        # Dovecot says BYE and hangs up: the pass logs in again, reads the others one by one,
        # and counts the failure on the one it hangs up on again.
        first = await sync(world, mailbox)
        assert (first.status, first.error, first.stored, first.failed) == (
            SyncStatus.IDLE,
            None,
            2,
            1,
        )
        assert sorted(m.subject for m in await stored(world)) == ["Letter 0", "Letter 2"]
        [row] = await MailboxSkip.all()
        assert (row.folder, row.uid, row.attempts, row.skipped_at) == ("INBOX", 2, 1, None)
        assert "refused to fetch it: FETCH failed: Internal error" in row.reason

        # Tried again on each pass until the third failure, then skipped for a day.
        for attempts in (2, 3):
            again = await sync(world, mailbox)
            assert (again.status, again.fetched, again.failed) == (SyncStatus.IDLE, 1, 1)
            await row.refresh_from_db()
            assert row.attempts == attempts
        assert row.skipped_at is not None and row.retry_after is not None
        expected = row.skipped_at + timedelta(hours=world.settings.sync_skip_retry_hours)
        assert abs((row.retry_after - expected).total_seconds()) < 1
        assert (await sync(world, mailbox)).fetched == 0  # not read again before retry_after
        await row.refresh_from_db()
        assert row.attempts == 3

        [shown] = (await api.data(SKIPPED))["mailboxes"]
        assert shown["id"] == ids.encode("Mailbox", mailbox.pk)
        [skipped] = shown["skippedMessages"]
        assert (skipped["folder"], skipped["uid"], skipped["attempts"]) == ("INBOX", 2, 3)
        assert skipped["skippedAt"] and skipped["retryAfter"] and skipped["firstSeenAt"]
        assert "refused to fetch" in skipped["reason"]
    finally:
        maildir_file(imap, mailbox.username, "Letter 1").chmod(0o644)  # (moved to cur/)

    # Its retry time comes: it is read, stored, and no longer listed.
    await MailboxSkip.filter(pk=row.pk).update(retry_after=datetime.now(UTC) - timedelta(1))
    retried = await sync(world, mailbox)
    assert (retried.stored, retried.failed) == (1, 0)
    assert await MailboxSkip.all().count() == 0
    assert sorted(m.subject for m in await stored(world)) == [f"Letter {n}" for n in range(3)]
    assert (await api.data(SKIPPED))["mailboxes"][0]["skippedMessages"] == []


async def test_a_message_that_fails_to_parse_or_store_is_found_and_the_rest_is_stored(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = await mailbox_with_letters(world, imap, 5)
    parse = sync_engine.parse_message
    store = message_store._store_new

    def parse_fails_on_2(raw: bytes, *args: Any, **kwargs: Any) -> Any:
        if b"Letter 2" in raw:
            raise RecursionError("maximum recursion depth exceeded")  # a hostile structure
        return parse(raw, *args, **kwargs)

    async def store_refuses_4(scope: Any, items: Any, *args: Any, **kwargs: Any) -> Any:
        if any(parsed.subject == "Letter 4" for parsed, _ in items):
            raise ValueError("a value the database refuses")  # a data error, not the connection
        return await store(scope, items, *args, **kwargs)

    monkeypatch.setattr(sync_engine, "parse_message", parse_fails_on_2)
    monkeypatch.setattr(message_store, "_store_new", store_refuses_4)
    result = await sync(world, mailbox)

    assert (result.status, result.stored, result.failed) == (SyncStatus.IDLE, 3, 2)
    assert sorted(m.subject for m in await stored(world)) == ["Letter 0", "Letter 1", "Letter 3"]
    skips = {row.uid: row.reason for row in await MailboxSkip.all()}
    assert sorted(skips) == [3, 5]
    assert skips[3].startswith("Could not be read: RecursionError")
    assert skips[5].startswith("Could not be stored: ValueError")
    inbox = await MailboxFolder.get(mailbox_id=mailbox.pk, role="INBOX")
    assert inbox.last_uid == 5  # the failures are held in their rows, not by the cursor

    monkeypatch.setattr(sync_engine, "parse_message", parse)
    monkeypatch.setattr(message_store, "_store_new", store)
    fixed = await sync(world, mailbox)
    assert (fixed.fetched, fixed.stored, fixed.failed) == (2, 2, 0)
    assert len(await stored(world)) == 5 and await MailboxSkip.all().count() == 0


async def test_a_database_connection_failure_fails_the_pass_and_records_no_skip(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    imap.append(mailbox.username, mail(JANE, mailbox.address, "Letter"))
    store = message_store._store_new

    async def connection_lost(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionResetError("connection was closed in the middle of operation")

    monkeypatch.setattr(message_store, "_store_new", connection_lost)
    failed = await sync(world, mailbox)
    assert failed.status == SyncStatus.FAILED and "connection" in (failed.error or "")
    assert await MailboxSkip.all().count() == 0
    monkeypatch.setattr(message_store, "_store_new", store)
    assert (await sync(world, mailbox)).stored == 1


async def test_a_failure_in_inbox_does_not_keep_the_same_uid_of_sent_failing(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Failures are told apart by folder and UID: INBOX UID 1 failing must not keep the row of
    # Sent UID 1 (a history import's failure) once Sent UID 1 went through.
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    imap.append(mailbox.username, mail(JANE, mailbox.address, "Bad letter"))
    client = imaplib.IMAP4(imap.host, imap.port)
    client.login(mailbox.username, PASSWORD)
    client.create("Sent")
    client.logout()
    imap.append(mailbox.username, mail(mailbox.address, JANE, "Good sent"), folder="Sent")
    parse = sync_engine.parse_message

    def fails_on_bad(raw: bytes, *args: Any, **kwargs: Any) -> Any:
        if b"Bad letter" in raw:
            raise ValueError("hostile")
        return parse(raw, *args, **kwargs)

    monkeypatch.setattr(sync_engine, "parse_message", fails_on_bad)
    first = await sync(world, mailbox)
    assert (first.error, first.failed, first.stored) == (None, 1, 1)
    sent = await MailboxFolder.get(mailbox_id=mailbox.pk, role="SENT")
    await MailboxSkip.create(
        firm_id=world.scope.firm_id,
        mailbox_id=mailbox.pk,
        folder=sent.name,
        uidvalidity=sent.uidvalidity,
        uid=1,
        reason="The server sent nothing for it.",
        last_attempt_at=datetime.now(UTC),
    )
    second = await sync(world, mailbox)
    assert (second.error, second.failed) == (None, 1)  # INBOX UID 1 again
    assert await MailboxSkip.filter(folder=sent.name).count() == 0
    assert await MailboxSkip.filter(folder="INBOX", uid=1).count() == 1


async def test_skipped_messages_of_many_mailboxes_in_one_statement(
    world: World, imap: ImapServer, client: Any
) -> None:
    api = await api_for(client, world.owner)

    async def statements() -> int:
        with count_sql() as sql:
            shown = (await api.data(SKIPPED))["mailboxes"]
        assert all(len(box["skippedMessages"]) == 1 for box in shown)
        return len(sql)

    counts = []
    for n in range(4):
        box = await add_mailbox(world.scope.firm_id, imap, world.settings)
        await MailboxSkip.create(
            firm_id=world.scope.firm_id,
            mailbox_id=box.pk,
            folder="INBOX",
            uidvalidity=1,
            uid=n + 1,
            reason="Could not be read: ValueError",
            last_attempt_at=datetime.now(UTC),
        )
        if n in (0, 3):
            counts.append(await statements())
    assert counts == [SKIPPED_STATEMENTS, SKIPPED_STATEMENTS]  # 1 mailbox, then 4


# Size limit ---------------------------------------------------------------------------------


def big_mail(sender: str, to: str, subject: str, size: int) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = f"<{subject.replace(' ', '.')}@client.example>"
    msg.set_content("See the scan attached.")
    msg.add_attachment(
        b"%PDF" + b"x" * size, maintype="application", subtype="pdf", filename="scan.pdf"
    )
    return bytes(msg)


async def test_a_message_over_the_size_limit_keeps_its_headers_only(
    world: World, imap: ImapServer, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = with_settings(world, sync_max_message_bytes=100_000)
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    imap.append(mailbox.username, big_mail(JANE, mailbox.address, "Huge scan", 300_000))
    imap.append(mailbox.username, mail(JANE, mailbox.address, "Small note"))
    fetch = ImapSession.fetch
    asked: list[str] = []

    async def seen(session: ImapSession, uids: Any, parts: str) -> Any:
        asked.append(parts)
        return await fetch(session, uids, parts)

    monkeypatch.setattr(ImapSession, "fetch", seen)
    result = await sync(small, mailbox)

    assert (result.stored, result.oversize) == (2, 1)
    huge, note = await stored(world)
    assert huge.subject == "Huge scan" and huge.from_address == JANE.lower()
    assert huge.content_skipped == "larger than 97.7 KB: body and attachments not stored"
    assert huge.text_body is None and huge.html_body is None
    assert note.content_skipped is None and note.text_body
    assert sync_engine.HEADER_FIELDS in asked
    # The big one was never asked for whole (the small one alone was).
    assert asked.count(sync_engine.MESSAGE_FIELDS) == 1
    # The firm sees why in the inbox.
    api = await api_for(client, world.owner)
    edges = (await api.data("{ inbox(first: 10) { edges { node { subject contentSkipped } } } }"))[
        "inbox"
    ]["edges"]
    assert {e["node"]["subject"]: e["node"]["contentSkipped"] for e in edges} == {
        "Huge scan": "larger than 97.7 KB: body and attachments not stored",
        "Small note": None,
    }


async def test_a_message_of_unknown_size_is_read_in_bounded_parts(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = with_settings(world, sync_max_message_bytes=200_000)
    monkeypatch.setattr(sync_engine, "READ_BYTES", 64 * 1024)
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    imap.append(mailbox.username, big_mail(JANE, mailbox.address, "Huge scan", 1_000_000))
    imap.append(mailbox.username, big_mail(JANE, mailbox.address, "Medium scan", 100_000))
    async with imap_proxy(imap.host, imap.port) as proxy:
        proxy.strip_sizes = True  # the server does not say how large they are
        await through_proxy(mailbox, proxy)
        result = await sync(small, mailbox)
    assert (result.error, result.stored, result.oversize) == (None, 2, 1)
    huge, medium = await stored(world)
    assert huge.content_skipped and huge.content_skipped.startswith("larger than")
    assert medium.content_skipped is None
    partial = [line for line in proxy.sent_lines if b"BODY.PEEK[]<" in line]
    # The huge one was read up to the limit and no further (4 parts of 64 KB), the medium one
    # in 3 parts: never a whole-message FETCH.
    assert not [line for line in proxy.sent_lines if b"BODY.PEEK[])" in line]
    assert len(partial) == 4 + 3


async def test_a_message_of_header_lines_is_read_in_part_only(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Oversize by its header lines alone: neither its participants' headers nor its header
    # block is read whole (partial FETCHes of HEADER_BYTES); what came is used.
    small = with_settings(world, sync_max_message_bytes=100_000)
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    # Header lines after From, To, Subject, Date and Message-ID: 900 KB of them, and Cc lines
    # of 400 KB (so the participants' headers are cut short too).
    filler = "".join(f"X-Filler-{n}: {'y' * 900}\r\n" for n in range(1000)).encode()
    crowd = ",\r\n ".join(f"person{n:05}@crowd.example" for n in range(15_000)).encode()
    for subject, extra in (("Header bomb", filler), ("Crowd", b"Cc: " + crowd + b"\r\n")):
        raw = mail(JANE, mailbox.address, subject)
        imap.append(mailbox.username, raw.replace(b"Content-Type:", extra + b"Content-Type:", 1))
    fetch = ImapSession.fetch
    biggest = 0

    async def seen(session: ImapSession, uids: Any, parts: str) -> Any:
        nonlocal biggest
        got = await fetch(session, uids, parts)
        biggest = max([biggest, *(len(v) for v in got.data.values())])
        return got

    monkeypatch.setattr(ImapSession, "fetch", seen)
    result = await sync(small, mailbox)

    assert (result.error, result.stored, result.oversize) == (None, 2, 2)
    assert 0 < biggest <= sync_engine.HEADER_BYTES
    for row, subject in zip(await stored(world), ("Header bomb", "Crowd"), strict=True):
        # What came before the cut is kept; body and attachments are skipped.
        assert (row.subject, row.from_address) == (subject, JANE.lower())
        assert row.content_skipped and row.content_skipped.startswith("larger than")


async def test_a_message_of_unknown_size_ending_at_a_part_is_stored_whole(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The part after its end comes back as an empty string, not a refusal: stored, no failure.
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    imap.append(mailbox.username, big_mail(JANE, mailbox.address, "Medium scan", 100_000))
    client = imaplib.IMAP4(imap.host, imap.port)
    client.login(mailbox.username, PASSWORD)
    client.select("INBOX")
    _, [answer] = client.fetch("1", "(RFC822.SIZE)")
    client.logout()
    size = int(re.search(rb"RFC822\.SIZE (\d+)", answer).group(1))  # type: ignore[union-attr]
    monkeypatch.setattr(sync_engine, "READ_BYTES", size)  # one part, all of it
    async with imap_proxy(imap.host, imap.port) as proxy:
        proxy.strip_sizes = True
        await through_proxy(mailbox, proxy)
        result = await sync(world, mailbox)
    assert (result.error, result.stored, result.failed) == (None, 1, 0)
    partial = [line for line in proxy.sent_lines if b"BODY.PEEK[]<" in line]
    assert len(partial) == 2  # all of it, then one past its end
    [row] = await stored(world)
    assert row.subject == "Medium scan" and row.content_skipped is None


async def refuse_later_parts(
    monkeypatch: pytest.MonkeyPatch, failure: Exception | None = None
) -> None:
    """The server refuses (or with `failure`: hangs up on, times out on) every part of a
    message read in parts but the first."""
    fetch = ImapSession.fetch

    async def later_parts_fail(session: ImapSession, uids: Any, parts: str) -> Any:
        if "BODY.PEEK[]<" in parts and "<0." not in parts:
            if failure is not None:
                raise failure
            return Fetched(refused="NO [SERVERBUG] Internal error")
        return await fetch(session, uids, parts)

    monkeypatch.setattr(ImapSession, "fetch", later_parts_fail)


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (None, "The server refused to fetch it: NO [SERVERBUG] Internal error"),
        (
            ServerHungUp("dovecot", "FETCH failed: Internal error occurred"),
            "The server refused to fetch it: FETCH failed: Internal error occurred",
        ),
        (
            ServerTimedOut("The IMAP server dovecot did not answer (UID FETCH)."),
            "The server did not answer when asked for it",
        ),
    ],
    ids=["refused", "hung-up", "timed-out"],
)
async def test_a_later_part_that_fails_is_the_messages_failure_and_nothing_is_stored(
    world: World,
    imap: ImapServer,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception | None,
    reason: str,
) -> None:
    # Never a message stored cut short; the rest of the folder syncs on, pass after pass.
    small = with_settings(world, sync_max_message_bytes=1_000_000)
    monkeypatch.setattr(sync_engine, "READ_BYTES", 64 * 1024)
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    imap.append(mailbox.username, big_mail(JANE, mailbox.address, "Medium scan", 200_000))
    imap.append(mailbox.username, mail(JANE, mailbox.address, "Later letter"))
    await refuse_later_parts(monkeypatch, failure)
    async with imap_proxy(imap.host, imap.port) as proxy:
        proxy.strip_sizes = True
        await through_proxy(mailbox, proxy)
        first = await sync(small, mailbox)
        assert (first.error, first.failed, first.stored) == (None, 1, 1)
        assert [m.subject for m in await stored(world)] == ["Later letter"]
        [row] = await MailboxSkip.all()
        assert (row.uid, row.attempts) == (1, 1) and row.reason.startswith(reason)
        again = await sync(small, mailbox)
        assert (again.error, again.fetched, again.failed, again.stored) == (None, 1, 1, 0)
    await row.refresh_from_db()
    assert row.attempts == 2
    assert [m.subject for m in await stored(world)] == ["Later letter"]


# Bounces ------------------------------------------------------------------------------------


def dsn(
    original_id: str,
    status: str,
    sender_to: str,
    recipient: str = "nobody@client.example",
    original_recipient: str | None = None,
) -> bytes:
    original = f"Original-Recipient: rfc822; {original_recipient}\r\n" if original_recipient else ""
    report = (
        "Reporting-MTA: dns; mx.client.example\r\n\r\n"
        f"{original}Final-Recipient: rfc822; {recipient}\r\n"
        f"Action: {'failed' if status.startswith('5') else 'delayed'}\r\n"
        f"Status: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} <nobody@client.example>: user unknown\r\n"
    )
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.client.example>\r\n"
        f"To: {sender_to}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <dsn-{status}-{time.monotonic_ns()}@mx.client.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nThis is the mail system.\r\n"
        f"--B\r\nContent-Type: message/delivery-status\r\n\r\n{report}\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: {sender_to}\r\nTo: nobody@client.example\r\nMessage-ID: {original_id}\r\n"
        "Subject: Your invitation\r\n\r\n--B--\r\n"
    ).encode()


async def sent_invitations(world: World, count: int) -> list[OutboundEmail]:
    """`count` invitations the server took, to an address that will bounce."""
    return [
        await OutboundEmail.create(
            firm_id=world.scope.firm_id,
            kind="invitation",
            to_address="nobody@client.example",
            from_name="Acme",
            subject="Your invitation",
            body_encrypted="x",
            message_id=outbox.new_message_id(world.settings, "acme.example"),
            status=DeliveryStatus.SENT,
            next_attempt_at=datetime.now(UTC),
        )
        for _ in range(count)
    ]


async def test_a_bounce_marks_the_outbox_message_failed_without_being_stored(
    world: World, imap: ImapServer
) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    rows = await sent_invitations(world, 3)
    imap.append(mailbox.username, dsn(rows[0].message_id, "5.1.1", mailbox.address))
    imap.append(mailbox.username, dsn(rows[1].message_id, "4.4.1", mailbox.address))  # delayed
    result = await sync(world, mailbox)

    assert (result.bounced, result.stored) == (1, 0)  # no participant syncs: not stored
    assert await Message.all().count() == 0
    failed, delayed, untouched = [await OutboundEmail.get(pk=row.pk) for row in rows]
    assert failed.status == DeliveryStatus.FAILED
    assert failed.last_error == (
        "Bounced: 5.1.1 smtp; 550 5.1.1 <nobody@client.example>: user unknown"
    )
    assert (delayed.status, delayed.last_error) == (DeliveryStatus.SENT, None)
    assert untouched.status == DeliveryStatus.SENT


async def test_a_batch_reads_its_bounces_header_batch_at_a_time(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small DSNs fill a whole batch before its header budget: their reports (up to
    # DSN_MAX_BYTES each) are read HEADER_BATCH a FETCH, never the whole batch's in one.
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    rows = await sent_invitations(world, 5)
    for row in rows:
        imap.append(mailbox.username, dsn(row.message_id, "5.1.1", mailbox.address))
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 100)
    monkeypatch.setattr(sync_engine, "HEADER_BATCH", 2)
    report_fetches: list[int] = []
    fetch = ImapSession.fetch

    async def recorded_fetch(self: ImapSession, uids: Any, parts: str) -> Fetched:
        if "BODY.PEEK[]<0." in parts:
            report_fetches.append(len(uids))
        return await fetch(self, uids, parts)

    monkeypatch.setattr(ImapSession, "fetch", recorded_fetch)
    result = await sync(world, mailbox)
    assert (result.bounced, result.stored, report_fetches) == (5, 0, [2, 2, 1])
    for row in rows:
        assert (await OutboundEmail.get(pk=row.pk)).status == DeliveryStatus.FAILED


# Progress -----------------------------------------------------------------------------------


async def test_progress_is_written_per_batch_and_shown(
    world: World, imap: ImapServer, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    api = await api_for(client, world.owner)
    assert (await api.data(SKIPPED))["mailboxes"][0]["syncProgress"] is None
    for n in range(5):
        imap.append(mailbox.username, mail(JANE, mailbox.address, f"Letter {n}"))
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 2)
    store = message_store.store_messages
    seen: list[dict[str, int]] = []

    async def watched(*args: Any, **kwargs: Any) -> Any:
        seen.append((await api.data(SKIPPED))["mailboxes"][0]["syncProgress"])
        return await store(*args, **kwargs)

    monkeypatch.setattr(message_store, "store_messages", watched)
    await sync(world, mailbox)
    # As each batch's messages are stored: the first batch's read, or the second's too
    # (it is read while the first is stored), never less than before.
    assert len(seen) == 3 and all(s["total"] == 5 for s in seen)
    done = [s["done"] for s in seen]
    assert done == sorted(done) and done[0] in (2, 4) and done[-1] in (4, 5)
    assert (await api.data(SKIPPED))["mailboxes"][0]["syncProgress"] == {"done": 5, "total": 5}


# Stopping and faults ------------------------------------------------------------------------


async def fill(imap: ImapServer, user: str, count: int, size: int = 20_000) -> None:
    """`count` messages from Jane, written straight to Maildir (fast)."""
    imap.append(user, mail(JANE, user, "Letter 000"))  # creates the Maildir
    for n in range(1, count):
        imap.deliver_to_maildir(user, mail(JANE, user, f"Letter {n:03}", body="x" * size))


async def test_a_batch_ends_early_once_its_headers_pass_the_byte_budget(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch reads its participants' headers HEADER_BATCH UIDs a FETCH and ends once
    HEADER_BATCH_BYTES of them came; the cursor moves (one commit) after each batch."""
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    await fill(imap, mailbox.username, 7, size=100)
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 100)
    monkeypatch.setattr(sync_engine, "HEADER_BATCH", 2)
    monkeypatch.setattr(sync_engine, "HEADER_BATCH_BYTES", 1)  # every header FETCH ends one
    advanced: list[int] = []
    header_fetches: list[int] = []
    advance, fetch = sync_engine._Pass.advance, ImapSession.fetch

    async def recorded_advance(self: Any, cursor: MailboxFolder, last_uid: int) -> None:
        advanced.append(last_uid)
        await advance(self, cursor, last_uid)

    async def recorded_fetch(self: ImapSession, uids: Any, parts: str) -> Fetched:
        if parts == sync_engine.PARTICIPANT_FIELDS:
            header_fetches.append(len(uids))
        return await fetch(self, uids, parts)

    monkeypatch.setattr(sync_engine._Pass, "advance", recorded_advance)
    monkeypatch.setattr(ImapSession, "fetch", recorded_fetch)
    first = await sync(world, mailbox)
    assert (first.status, first.fetched, first.stored) == (SyncStatus.IDLE, 7, 7)
    assert (advanced, header_fetches) == ([2, 4, 6, 7], [2, 2, 2, 1])

    # Short headers under the budget: the five new ones are one batch, in three header FETCHes.
    monkeypatch.setattr(sync_engine, "HEADER_BATCH_BYTES", 1024 * 1024)
    for n in range(7, 12):
        imap.deliver_to_maildir(mailbox.username, mail(JANE, mailbox.username, f"Letter {n:03}"))
    advanced.clear()
    header_fetches.clear()
    second = await sync(world, await Mailbox.get(pk=mailbox.pk))
    assert (second.status, second.fetched, second.stored) == (SyncStatus.IDLE, 5, 5)
    assert (advanced, header_fetches) == ([12], [2, 2, 1])
    subjects = [m.subject for m in await stored(world)]
    assert sorted(subjects) == [f"Letter {n:03}" for n in range(12)]  # each once


async def test_a_long_header_step_renews_the_lease_between_its_fetches(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    await fill(imap, mailbox.username, 7, size=100)
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 100)
    monkeypatch.setattr(sync_engine, "HEADER_BATCH", 2)  # one batch, four header FETCHes
    renewals: list[int] = []
    renew = sync_engine._renew

    async def counted(*args: Any) -> Any:
        renewals.append(1)
        return await renew(*args)

    monkeypatch.setattr(sync_engine, "_renew", counted)
    monkeypatch.setattr(sync_engine, "RENEW_AFTER", 0)  # as if each FETCH took that long
    slow = await sync(world, mailbox)
    assert (slow.status, slow.stored) == (SyncStatus.IDLE, 7)
    with_renewals = len(renewals)

    monkeypatch.setattr(sync_engine, "RENEW_AFTER", 30)  # quick FETCHes: none between them
    for n in range(7, 14):
        imap.deliver_to_maildir(mailbox.username, mail(JANE, mailbox.username, f"Letter {n:03}"))
    renewals.clear()
    quick = await sync(world, await Mailbox.get(pk=mailbox.pk))
    assert (quick.status, quick.stored) == (SyncStatus.IDLE, 7)
    assert with_renewals - len(renewals) == 3  # before the second, third and fourth FETCH


async def test_a_stop_during_a_large_fetch_hands_the_mailbox_back_at_once(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    await fill(imap, mailbox.username, 120)
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 40)
    stop = asyncio.Event()
    async with imap_proxy(imap.host, imap.port) as proxy:
        await through_proxy(mailbox, proxy)
        store = message_store.store_messages
        first_stored = asyncio.Event()

        def hold_the_answer() -> None:  # of the second batch's bodies: slow to come
            proxy.body_fetch_seen.clear()
            proxy.hold_body_fetch = True

        when_asked_for(monkeypatch, sync_engine.PARTICIPANT_FIELDS, 2, hold_the_answer)

        async def second_batch_held(*args: Any, **kwargs: Any) -> Any:
            stored = await store(*args, **kwargs)
            first_stored.set()
            return stored

        monkeypatch.setattr(message_store, "store_messages", second_batch_held)
        running = asyncio.create_task(
            sync_engine.sync_mailbox(world.scope, mailbox, world.settings, stop=stop)
        )
        await asyncio.wait_for(first_stored.wait(), 30)
        await asyncio.wait_for(proxy.body_fetch_seen.wait(), 30)
        await asyncio.sleep(0.2)  # the second batch's FETCH is in flight, its answer held
        stop.set()  # SIGTERM
        started = time.monotonic()
        result = await asyncio.wait_for(running, 10)
        assert time.monotonic() - started < 2  # not the IMAP timeout
    monkeypatch.setattr(message_store, "store_messages", store)

    assert (result.status, result.error, result.stopped) == (SyncStatus.IDLE, None, True)
    assert result.stored == 40
    row = await Mailbox.get(pk=mailbox.pk)
    assert row.lease_until is None
    assert row.last_synced_at is None  # it did not get through the mailbox
    assert await sync_engine._claim(world.scope, row) is not None  # claimable at once
    await Mailbox.filter(pk=mailbox.pk).update(lease_until=None)
    inbox = await MailboxFolder.get(mailbox_id=mailbox.pk, role="INBOX")
    assert inbox.last_uid == 40

    row.imap_host, row.imap_port = imap.host, imap.port
    await row.save()
    rest = await sync(world, row)
    assert (rest.fetched, rest.stored) == (80, 80)
    subjects = [m.subject for m in await stored(world)]
    assert sorted(subjects) == [f"Letter {n:03}" for n in range(120)]


async def test_the_imap_connection_cut_mid_fetch_fails_readably_and_the_next_pass_resumes(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    await fill(imap, mailbox.username, 150)
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 50)
    monkeypatch.setattr(sync_engine, "BODY_BATCH_BYTES", 200_000)  # about 10 a round trip
    async with imap_proxy(imap.host, imap.port) as proxy:
        await through_proxy(mailbox, proxy)
        store = message_store.store_messages
        chunks = 0

        async def cut_in_the_second_batch(*args: Any, **kwargs: Any) -> Any:
            nonlocal chunks
            stored = await store(*args, **kwargs)
            chunks += 1
            if chunks == 7:  # in the second batch: its next FETCH is cut midway
                proxy.cut_body_fetch_after = 100_000
            return stored

        monkeypatch.setattr(message_store, "store_messages", cut_in_the_second_batch)
        failed = await sync(world, mailbox)
        assert proxy.cuts == 1
    monkeypatch.setattr(message_store, "store_messages", store)

    assert failed.status == SyncStatus.FAILED
    assert failed.error and "closed the connection (UID FETCH)" in failed.error
    kept = await Message.all().count()
    inbox = await MailboxFolder.get(mailbox_id=mailbox.pk, role="INBOX")
    assert 50 < kept < 150
    assert inbox.last_uid == kept  # after what was stored, mid-batch, and no further
    row = await Mailbox.get(pk=mailbox.pk)
    assert (row.sync_status, row.lease_until) == (SyncStatus.FAILED, None)

    row.imap_host, row.imap_port = imap.host, imap.port  # the server is back
    await row.save()
    resumed = await sync(world, row)
    assert (resumed.status, resumed.fetched, resumed.stored) == (
        SyncStatus.IDLE,
        150 - kept,
        150 - kept,
    )
    subjects = [m.subject for m in await stored(world)]
    assert sorted(subjects) == [f"Letter {n:03}" for n in range(150)]  # each once
    assert STRANGER not in subjects


def test_a_bounce_finds_its_original_in_a_returned_message_or_in_reply_to() -> None:
    returned = dsn("<outbox.1@acme.example>", "5.2.2", "office@acme.example").replace(
        b"Content-Type: text/rfc822-headers", b"Content-Type: message/rfc822"
    )
    bounce = bounces.read(returned)
    assert bounce is not None
    assert (bounce.message_id, bounce.status) == ("<outbox.1@acme.example>", "5.2.2")
    # No returned headers at all: what the DSN answers.
    bare = dsn("<x@y>", "5.1.1", "office@acme.example").split(b"--B\r\nContent-Type: text/rfc822")[
        0
    ]
    answered = bare.replace(
        b"MIME-Version", b"In-Reply-To: <outbox.2@acme.example>\r\nMIME-Version"
    )
    assert bounces.read(answered + b"--B--\r\n").message_id == "<outbox.2@acme.example>"
    # Never References: anyone in a thread knows its ids.
    referring = bare.replace(
        b"MIME-Version", b"References: <outbox.2@acme.example>\r\nMIME-Version"
    )
    assert bounces.read(referring + b"--B--\r\n").message_id is None
    assert bounces.read(mail(JANE, "office@acme.example", "Not a bounce")) is None
    delayed = bounces.read(dsn("<outbox.3@acme.example>", "4.4.7", "office@acme.example"))
    assert delayed is not None and delayed.status is None  # only 5.x.x counts


async def test_a_bounce_fails_only_a_sent_row_to_the_recipient_it_names(world: World) -> None:
    # Anyone can send what looks like a DSN: it may fail only the SENT row with the returned
    # Message-ID whose recipient it names.
    async def row(to: str, status: DeliveryStatus) -> OutboundEmail:
        return await OutboundEmail.create(
            firm_id=world.scope.firm_id,
            kind="invitation",
            to_address=to,
            from_name="Acme",
            subject="Your invitation",
            body_encrypted="x",
            message_id=outbox.new_message_id(world.settings, "acme.example"),
            status=status,
            next_attempt_at=datetime.now(UTC),
        )

    sent = await row("Nobody@Client.example", DeliveryStatus.SENT)
    queued = await row("nobody@client.example", DeliveryStatus.QUEUED)
    other = await row("c1@client.example", DeliveryStatus.SENT)
    office = "office@acme.example"

    # References naming every row of a thread, no returned message: nothing.
    forged = dsn("<x@y>", "5.1.1", office).split(b"--B\r\nContent-Type: text/rfc822")[0]
    ids_ = " ".join(r.message_id for r in (sent, queued, other)).encode()
    forged = forged.replace(b"MIME-Version", b"References: " + ids_ + b"\r\nMIME-Version")
    assert await bounces.apply(world.scope, forged + b"--B--\r\n") == 0
    # A QUEUED row has not been sent: no bounce is about it.
    assert await bounces.apply(world.scope, dsn(queued.message_id, "5.1.1", office)) == 0
    # Another recipient than the row's: nothing.
    assert await bounces.apply(world.scope, dsn(other.message_id, "5.1.1", office)) == 0
    assert [(await OutboundEmail.get(pk=r.pk)).status for r in (sent, queued, other)] == [
        DeliveryStatus.SENT,
        DeliveryStatus.QUEUED,
        DeliveryStatus.SENT,
    ]
    # The row's recipient as Original-Recipient (the Final one rewritten), without case.
    named = dsn(sent.message_id, "5.1.1", office, "mbox42@relay.example", "NOBODY@client.EXAMPLE")
    assert await bounces.apply(world.scope, named) == 1
    failed = await OutboundEmail.get(pk=sent.pk)
    assert failed.status == DeliveryStatus.FAILED and failed.last_error
    assert failed.last_error.startswith("Bounced: 5.1.1 smtp; 550")
    assert await bounces.apply(world.scope, named) == 0  # done: not failed twice


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["shut-down", "killed"])
async def test_the_dovecot_session_killed_mid_fetch_blames_no_message(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch, how: signal.Signals
) -> None:
    # The Dovecot process serving the pass is stopped (BYE first) or killed (no word) while
    # it writes a large answer: no message's fault, so no failure is recorded; the next pass
    # stores the rest, each once.
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    # A batch's answer (30 x 300 KB) is more than Dovecot's send buffer holds (up to 4 MB).
    await fill(imap, mailbox.username, 60, size=300_000)
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 30)
    async with imap_proxy(imap.host, imap.port) as proxy:
        await through_proxy(mailbox, proxy)
        store = message_store.store_messages
        first_stored = asyncio.Event()

        def hold_the_answer() -> None:  # of the second batch's bodies
            proxy.body_fetch_seen.clear()
            proxy.hold_body_fetch = True

        when_asked_for(monkeypatch, sync_engine.PARTICIPANT_FIELDS, 2, hold_the_answer)

        async def then_hold(*args: Any, **kwargs: Any) -> Any:
            stored = await store(*args, **kwargs)
            first_stored.set()
            return stored

        monkeypatch.setattr(message_store, "store_messages", then_hold)
        running = asyncio.create_task(sync(world, mailbox))
        await asyncio.wait_for(first_stored.wait(), 30)
        await asyncio.wait_for(proxy.body_fetch_seen.wait(), 30)
        await asyncio.to_thread(imap.end_sessions, mailbox.username, how)  # mid-FETCH
        proxy.release.set()
        failed = await asyncio.wait_for(running, 30)
    monkeypatch.setattr(message_store, "store_messages", store)

    assert failed.status == SyncStatus.FAILED and failed.stored == 30
    assert failed.error and "closed the connection" in failed.error
    assert await MailboxSkip.all().count() == 0
    inbox = await MailboxFolder.get(mailbox_id=mailbox.pk, role="INBOX")
    assert inbox.last_uid == 30
    row = await Mailbox.get(pk=mailbox.pk)
    row.imap_host, row.imap_port = imap.host, imap.port
    await row.save()
    rest = await sync(world, row)
    assert (rest.status, rest.stored) == (SyncStatus.IDLE, 30)
    assert sorted(m.subject for m in await stored(world)) == [f"Letter {n:03}" for n in range(60)]


async def test_a_stop_between_batches_is_no_sync_of_the_mailbox(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = await mailbox_with_letters(world, imap, 5)
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 2)
    stop = asyncio.Event()
    store = message_store.store_messages

    async def stop_after_first(*args: Any, **kwargs: Any) -> Any:
        stop.set()  # SIGTERM while the first batch is stored
        return await store(*args, **kwargs)

    monkeypatch.setattr(message_store, "store_messages", stop_after_first)
    result = await sync_engine.sync_mailbox(world.scope, mailbox, world.settings, stop=stop)
    assert (result.status, result.error, result.stopped, result.stored) == (
        SyncStatus.IDLE,
        None,
        True,
        2,
    )
    row = await Mailbox.get(pk=mailbox.pk)
    assert (row.last_synced_at, row.lease_until, row.sync_status) == (None, None, SyncStatus.IDLE)

    monkeypatch.setattr(message_store, "store_messages", store)
    done = await sync(world, mailbox)
    assert (done.stopped, done.stored) == (False, 3)
    assert (await Mailbox.get(pk=mailbox.pk)).last_synced_at is not None


class _WithoutByeHook:
    """An aioimaplib protocol as a later aioimaplib might have it: no `_untagged_response`."""

    def __init__(self, protocol: object) -> None:
        object.__setattr__(self, "_protocol", protocol)

    def __getattr__(self, name: str) -> Any:
        if name == "_untagged_response":
            raise AttributeError(name)
        return getattr(self._protocol, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._protocol, name, value)


async def test_the_session_works_without_aioimaplibs_private_hook(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The BYE capture wraps a private method of aioimaplib (pinned <3): were it gone, the
    # session still works; only a hang-up's reason would be lost.
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    imap.append(mailbox.username, mail(JANE, mailbox.address, "Letter"))
    open_imap = imap_session.open_imap
    sessions: list[Any] = []

    async def without_hook(*args: Any, **kwargs: Any) -> Any:
        client = await open_imap(*args, **kwargs)
        client.protocol = _WithoutByeHook(client.protocol)
        sessions.append(client)
        return client

    monkeypatch.setattr(imap_session, "open_imap", without_hook)
    result = await sync(world, mailbox)
    assert (result.error, result.stored) == (None, 1)
    assert sessions and [m.subject for m in await stored(world)] == ["Letter"]
