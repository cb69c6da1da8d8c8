"""The EMAIL SYNC engine against a real Dovecot (tests/support/imap.py), at the service level.

Each test has IMAP users of its own (the static passdb accepts any name), so tests never see
each other's mail on the module's one server. The parser's own tests are in
tests/test_mail_parse.py.
"""

from __future__ import annotations

import asyncio
import gc
import imaplib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from tortoise.exceptions import OperationalError

from models import (
    Account,
    AccountEmail,
    AccountType,
    Mailbox,
    MailboxFolder,
    Message,
    MessageAccount,
    StaffMember,
    SyncStatus,
)
from portico.settings import Settings
from services.crm import records
from services.firm import firms
from services.mail import store as message_store
from services.mail import sync_engine
from services.mail.imap import ImapSession
from services.mail.parse import (
    parse_message,
    sanitize_html,
)
from services.portal.access import FlagChanges, set_email_flags
from services.shared import crypto
from services.shared.errors import InputError
from services.shared.pubsub import InProcessBus, Subscription, firm_channel
from services.shared.scope import FirmScope
from tests.support.api import PASSWORD as STAFF_PASSWORD
from tests.support.api import eventually
from tests.support.imap import PASSWORD, ImapServer, imap_fixture  # noqa: F401
from tests.support.mail import add_mailbox, mail, when_asked_for

JANE = "Jane.Doe@Client.example"  # as typed in the CRM; mail uses other cases too
BOB = "bob@client.example"
STRANGER = "someone@elsewhere.example"


@dataclass
class World:
    scope: FirmScope
    owner: StaffMember
    settings: Settings
    family: Account  # Jane, EMAIL SYNC on
    company: Account  # Jane and Bob, EMAIL SYNC on for Jane only
    trust: Account  # Jane, EMAIL SYNC off

    async def sync_on(self, account: Account, address: str) -> None:
        row = await AccountEmail.get(
            account_id=account.pk, email_address__address_normalized=address.lower()
        )
        await set_email_flags(
            self.scope,
            self.owner,
            row.pk,
            FlagChanges(email_sync=True),
            self.settings,
            send_invitation=False,
        )


@pytest.fixture(name="world")
async def world_fixture(settings: Settings) -> World:
    firm, owner = await firms.create_firm(
        "Acme LLP", "acme", "owner@acme.example", "Owner", STAFF_PASSWORD
    )
    scope = FirmScope(firm.pk)
    family = await records.create_account(scope, "Doe Family", AccountType.FAMILY)
    company = await records.create_account(scope, "Doe Ltd", AccountType.COMPANY)
    trust = await records.create_account(scope, "Doe Trust", AccountType.COMPANY)
    await records.create_contact(
        scope, "Jane", "Doe", [records.NewAddress(JANE)], [family.pk, company.pk, trust.pk]
    )
    await records.create_contact(scope, "Bob", "Doe", [records.NewAddress(BOB)], [company.pk])
    w = World(scope, owner, settings, family, company, trust)
    await w.sync_on(family, JANE)
    await w.sync_on(company, JANE)
    return w


async def sync(world: World, mailbox: Mailbox, bus: InProcessBus | None = None):
    result = await sync_engine.sync_mailbox(world.scope, mailbox, world.settings, bus)
    assert not result.busy
    return result


async def mailbox_with_letters(world: World, imap: ImapServer, count: int) -> Mailbox:
    """A connected mailbox whose INBOX holds `count` letters from JANE ("Letter 0" on)."""
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    for n in range(count):
        imap.append(mailbox.username, mail(JANE, mailbox.address, f"Letter {n}"))
    return mailbox


async def stored(world: World) -> list[Message]:
    return await world.scope.query(Message).order_by("id")


async def accounts_of(message: Message) -> set[int]:
    return set(
        await MessageAccount.filter(message_id=message.pk).values_list("account_id", flat=True)
    )


# What is kept -------------------------------------------------------------------------------


async def test_inbox_mail_from_a_synced_address_is_stored_and_linked(
    world: World, imap: ImapServer
) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    raw = mail(
        "Jane Doe <JANE.DOE@client.example>",
        f"Acme <{mailbox.address}>",
        "Figures",
        cc=[STRANGER],
        body="Grüße aus München",
        html="<p onclick='x()'>Grüße<script>alert(1)</script></p>",
        message_id="<first@client.example>",
    )
    imap.append(mailbox.username, raw)

    result = await sync(world, mailbox)

    assert (result.status, result.error) == (SyncStatus.IDLE, None)
    assert (result.fetched, result.stored, result.skipped, result.unreadable) == (1, 1, 0, 0)
    [message] = await stored(world)
    assert result.message_ids == [message.pk]
    assert message.message_id == "<first@client.example>"
    assert message.subject == "Figures"
    assert message.from_address == "jane.doe@client.example"
    assert message.to_addresses == [mailbox.address_normalized]
    assert message.cc_addresses == [STRANGER]
    assert message.sent_at == datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    assert message.direction == "INBOUND"
    assert "Grüße aus München" in (message.text_body or "")
    assert "<script>" in (message.html_body or "")  # stored as received
    assert "<script>" not in sanitize_html(message.html_body or "")
    # Linked to every account where Jane's address has EMAIL SYNC on, not the third one.
    assert await accounts_of(message) == {world.family.pk, world.company.pk}
    link = await MessageAccount.get(message_id=message.pk, account_id=world.family.pk)
    assert link.sent_at == message.sent_at and link.firm_id == world.scope.firm_id

    await mailbox.refresh_from_db()
    assert mailbox.sync_status == SyncStatus.IDLE and mailbox.last_error is None
    assert mailbox.last_synced_at is not None and mailbox.lease_until is None
    inbox = await MailboxFolder.get(mailbox_id=mailbox.pk, role="INBOX")
    assert inbox.name == "INBOX" and inbox.last_uid == 1 and inbox.uidvalidity
    sent = await MailboxFolder.get(mailbox_id=mailbox.pk, role="SENT")
    assert sent.name == "Sent"  # found by its SPECIAL-USE flag


async def test_rfc2047_subject_is_decoded(world: World, imap: ImapServer) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    raw = mail(JANE, mailbox.address, "Rückfrage zur Steuer", body="x")
    assert b"=?utf-8?" in raw  # the subject is encoded as RFC 2047 on the wire
    imap.append(mailbox.username, raw)
    await sync(world, mailbox)
    [message] = await stored(world)
    assert message.subject == "Rückfrage zur Steuer"


async def test_a_strangers_mail_is_not_stored(world: World, imap: ImapServer) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    imap.append(mailbox.username, mail(STRANGER, mailbox.address, "Lunch?"))
    # Bob is a contact of the firm, but his address has EMAIL SYNC off everywhere.
    imap.append(mailbox.username, mail(BOB, mailbox.address, "Private"))
    imap.append(mailbox.username, mail(STRANGER, [mailbox.address, "x@y.example"]))

    result = await sync(world, mailbox)

    assert (result.fetched, result.stored, result.skipped) == (3, 0, 3)
    assert await stored(world) == []
    assert await MessageAccount.all().count() == 0
    inbox = await MailboxFolder.get(mailbox_id=mailbox.pk, role="INBOX")
    assert inbox.last_uid == 3  # handled: not read again next time


async def test_sent_mail_to_a_synced_address_is_outbound(world: World, imap: ImapServer) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    imap.append(
        mailbox.username,
        mail(mailbox.address.upper(), [BOB, JANE.upper()], "Your documents"),
        "Sent",
    )
    imap.append(mailbox.username, mail(mailbox.address, STRANGER, "Not a client"), "Sent")

    result = await sync(world, mailbox)

    assert (result.stored, result.skipped) == (1, 1)
    [message] = await stored(world)
    assert message.direction == "OUTBOUND"
    assert message.to_addresses == [BOB, JANE.lower()]
    assert await accounts_of(message) == {world.family.pk, world.company.pk}
    sent = await MailboxFolder.get(mailbox_id=mailbox.pk, role="SENT")
    assert sent.last_uid == 2


async def test_resync_stores_nothing_twice_and_reads_only_new_mail(
    world: World, imap: ImapServer
) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    imap.append(mailbox.username, mail(JANE, mailbox.address, "One"))
    imap.append(mailbox.username, mail(mailbox.address, JANE, "Two"), "Sent")
    first = await sync(world, mailbox)
    assert first.stored == 2

    again = await sync(world, mailbox)
    assert (again.fetched, again.stored, again.linked) == (0, 0, 0)

    imap.append(mailbox.username, mail(JANE, mailbox.address, "Three"))
    third = await sync(world, mailbox)
    assert (third.fetched, third.stored) == (1, 1)
    assert [m.subject for m in await stored(world)] == ["One", "Two", "Three"]
    assert await MessageAccount.all().count() == 6


async def test_uidvalidity_change_rescans_without_duplicates(
    world: World, imap: ImapServer
) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    old = [mail(mailbox.address, JANE, f"Sent {i}") for i in range(2)]
    for raw in old:
        imap.append(mailbox.username, raw, "Sent")
    assert (await sync(world, mailbox)).stored == 2
    before = await MailboxFolder.get(mailbox_id=mailbox.pk, role="SENT")
    assert before.last_uid == 2

    # The folder is deleted and made again: new UIDVALIDITY, UIDs from 1 again.
    with imaplib.IMAP4(imap.host, imap.port) as client:
        client.login(mailbox.username, PASSWORD)
        assert client.delete("Sent")[0] == "OK"
        assert client.create("Sent")[0] == "OK"
        client.logout()
    for raw in [*old, mail(mailbox.address, JANE, "Sent 2")]:
        imap.append(mailbox.username, raw, "Sent")

    result = await sync(world, mailbox)

    after = await MailboxFolder.get(mailbox_id=mailbox.pk, role="SENT")
    assert after.uidvalidity != before.uidvalidity
    assert after.last_uid == 3
    assert (result.fetched, result.stored, result.linked) == (3, 1, 0)
    assert [m.subject for m in await stored(world)] == ["Sent 0", "Sent 1", "Sent 2"]


async def test_the_same_message_in_two_mailboxes_is_stored_once(
    world: World, imap: ImapServer
) -> None:
    first = await add_mailbox(world.scope.firm_id, imap, world.settings)
    second = await add_mailbox(world.scope.firm_id, imap, world.settings)
    raw = mail(JANE, [first.address, second.address], "To both of you")
    imap.append(first.username, raw)
    imap.append(second.username, raw)

    assert (await sync(world, first)).stored == 1
    result = await sync(world, second)

    assert (result.fetched, result.stored, result.linked) == (1, 0, 0)
    assert result.message_ids == []
    [message] = await stored(world)
    assert await accounts_of(message) == {world.family.pk, world.company.pk}


async def test_a_message_seen_again_gains_the_accounts_turned_on_since(
    world: World, imap: ImapServer
) -> None:
    first = await add_mailbox(world.scope.firm_id, imap, world.settings)
    second = await add_mailbox(world.scope.firm_id, imap, world.settings)
    raw = mail(JANE, [first.address, second.address], cc=[BOB])
    imap.append(first.username, raw)
    await sync(world, first)
    [message] = await stored(world)
    assert await accounts_of(message) == {world.family.pk, world.company.pk}

    await world.sync_on(world.trust, JANE)
    imap.append(second.username, raw)
    bus = InProcessBus()
    async with bus.subscribe(firm_channel(world.scope.firm_id)) as events:
        result = await sync(world, second, bus)
        assert (result.stored, result.linked, result.message_ids) == (0, 1, [message.pk])
        event = await next_event(events)
    assert event == {
        "kind": "message.synced",
        "messageId": message.pk,
        "accountIds": [world.trust.pk],
    }
    assert await accounts_of(message) == {world.family.pk, world.company.pk, world.trust.pk}
    assert await Message.all().count() == 1


async def test_a_malformed_message_is_stored_with_what_could_be_read(
    world: World, imap: ImapServer
) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    # No Message-ID, Date or To; an unknown charset in the subject and the body; 8-bit
    # header bytes; a NUL (PostgreSQL refuses it in text).
    broken = (
        b"From: =?x-unknown?q?Jane?= <" + JANE.encode() + b">\r\n"
        b"Subject: Caf\xc3\xa9 =?x-bogus?q?caf=E9?=\r\n"
        b"Cc: <broken, , @@\r\n"
        b"Content-Type: text/plain; charset=x-bogus\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"Caf\xe9 cr\xe8me \x00 br\xfbl\xe9e\r\n"
    )
    # A multipart whose boundary never comes, and a message with no headers at all.
    unterminated = (
        b"From: " + JANE.encode() + b"\r\nSubject: cut\r\n"
        b"Content-Type: multipart/mixed; boundary=zzz\r\n\r\n--zzz\r\n"
        b"Content-Type: text/html\r\n\r\n<p>half"
    )
    imap.append(mailbox.username, broken)
    imap.append(mailbox.username, b"\r\n\r\nno headers at all\r\n")
    imap.append(mailbox.username, unterminated)
    imap.append(mailbox.username, mail(JANE, mailbox.address, "After the broken ones"))

    result = await sync(world, mailbox)

    assert (result.status, result.error) == (SyncStatus.IDLE, None)
    assert (result.fetched, result.stored, result.skipped) == (4, 3, 1)
    bad, cut, good = await stored(world)
    assert bad.from_address == JANE.lower()
    assert bad.subject.startswith("Café")
    assert bad.message_id.startswith("sha256:")  # a stable hash of date, sender, subject
    assert bad.to_addresses == [] and bad.cc_addresses == []
    assert bad.text_body is not None and "Café crème" in bad.text_body
    assert "\x00" not in bad.text_body
    assert bad.sent_at.tzinfo is not None  # no Date: the time it was read
    assert cut.subject == "cut" and "half" in (cut.html_body or "")
    assert good.subject == "After the broken ones"

    # The hash is stable: found again, not stored twice, when seen through another mailbox.
    other = await add_mailbox(world.scope.firm_id, imap, world.settings)
    imap.append(other.username, broken)
    assert (await sync(world, other)).stored == 0
    assert await Message.all().count() == 3


async def test_synced_mail_stays_unseen_on_the_server(world: World, imap: ImapServer) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    imap.append(mailbox.username, mail(JANE, mailbox.address, "Unread"))
    imap.append(mailbox.username, mail(STRANGER, mailbox.address, "Unread too"))
    imap.append(mailbox.username, mail(mailbox.address, JANE, "Sent"), "Sent")
    await sync(world, mailbox)
    assert await Message.all().count() == 2

    with imaplib.IMAP4(imap.host, imap.port) as client:
        client.login(mailbox.username, PASSWORD)
        for folder, count in (("INBOX", 2), ("Sent", 1)):
            status, data = client.select(folder, readonly=True)
            assert status == "OK" and int(data[0]) == count  # nothing deleted or moved
            status, flags = client.fetch("1:*", "(FLAGS)")
            assert status == "OK" and len(flags) == count
            assert not any(b"\\Seen" in line for line in flags), flags
        client.logout()


# Threads ------------------------------------------------------------------------------------


async def test_threads_follow_references_then_subject_and_participants(
    world: World, imap: ImapServer
) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    me = mailbox.address
    original = mail(JANE, me, "Quarterly figures", message_id="<q1@client.example>")
    reply = mail(
        me,
        JANE,
        "Different subject entirely",
        message_id="<q2@acme.example>",
        in_reply_to="<q1@client.example>",
        references=["<q1@client.example>"],
    )
    # Answers q2 only through an unknown message: the chain's first known one is q1.
    late = mail(
        JANE,
        me,
        "Re: whatever",
        in_reply_to="<unknown@client.example>",
        references=["<q1@client.example>", "<unknown@client.example>"],
    )
    # No headers to follow: the normalised subject and the same people.
    loose = mail(JANE, me, "AW: Re: WG:  quarterly   FIGURES")
    other_people = mail(JANE, [me, BOB], "Re: Quarterly figures")
    for raw in (original, late, loose, other_people):
        imap.append(mailbox.username, raw)
    imap.append(mailbox.username, reply, "Sent")

    await sync(world, mailbox)

    messages = {m.subject: m for m in await stored(world)}
    thread = messages["Quarterly figures"].thread_key
    assert messages["Different subject entirely"].thread_key == thread
    assert messages["Re: whatever"].thread_key == thread
    assert messages["AW: Re: WG:  quarterly   FIGURES"].thread_key == thread
    assert messages["Re: Quarterly figures"].thread_key != thread


# Events -------------------------------------------------------------------------------------


async def next_event(events: Subscription) -> dict[str, Any]:
    async with asyncio.timeout(5):
        return await anext(events)


async def test_an_event_is_published_for_each_stored_message(
    world: World, imap: ImapServer
) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    imap.append(mailbox.username, mail(JANE, mailbox.address, "One"))
    imap.append(mailbox.username, mail(STRANGER, mailbox.address, "Not kept"))
    imap.append(mailbox.username, mail(mailbox.address, JANE, "Two"), "Sent")
    bus = InProcessBus()
    seen_in_db: list[bool] = []
    async with bus.subscribe(firm_channel(world.scope.firm_id)) as events:
        result = await sync(world, mailbox, bus)
        assert events.pending == 2
        received = [await next_event(events) for _ in range(2)]
        for event in received:  # published after the commit: the row is there
            seen_in_db.append(await Message.exists(pk=event["messageId"]))
        again = await sync(world, mailbox, bus)
        assert again.stored == 0 and events.pending == 0
    one, two = await stored(world)
    both = sorted([world.family.pk, world.company.pk])
    assert received == [
        {"kind": "message.synced", "messageId": one.pk, "accountIds": both},
        {"kind": "message.synced", "messageId": two.pk, "accountIds": both},
    ]
    assert seen_in_db == [True, True]
    assert result.message_ids == [two.pk]  # the last batch's (Sent) only: it does not grow


# Failures -----------------------------------------------------------------------------------


async def test_the_server_stopping_mid_sync_fails_then_a_new_sync_recovers(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    for i in range(3):
        imap.append(mailbox.username, mail(JANE, mailbox.address, f"Message {i}"))
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 1)

    def server_gone() -> None:  # as the second message is asked for
        imap.stop()
        imap.end_sessions(mailbox.username)

    when_asked_for(monkeypatch, sync_engine.PARTICIPANT_FIELDS, 2, server_gone)
    store = message_store.store_messages

    async def checked_store(*args: Any, **kwargs: Any) -> list[message_store.StoreOutcome]:
        outcome = await store(*args, **kwargs)
        during = await Mailbox.get(pk=mailbox.pk)
        assert during.sync_status == SyncStatus.SYNCING and during.lease_until is not None
        return outcome

    monkeypatch.setattr(message_store, "store_messages", checked_store)
    try:
        failed = await sync(world, mailbox)
        assert failed.status == SyncStatus.FAILED
        assert failed.error and "IMAP server" in failed.error
        assert PASSWORD not in failed.error
        assert failed.stored == 1
        await mailbox.refresh_from_db()
        assert mailbox.sync_status == SyncStatus.FAILED
        assert mailbox.last_error == failed.error and mailbox.lease_until is None
        inbox = await MailboxFolder.get(mailbox_id=mailbox.pk, role="INBOX")
        assert inbox.last_uid == 1  # the cursor stands after what was handled

        # Still down: a new attempt fails at once, with a connection error.
        down = await sync(world, mailbox)
        assert down.status == SyncStatus.FAILED and "Could not connect" in (down.error or "")
    finally:
        imap.ensure_running()

    monkeypatch.setattr(message_store, "store_messages", store)
    recovered = await sync(world, mailbox)
    assert (recovered.status, recovered.error) == (SyncStatus.IDLE, None)
    assert (recovered.fetched, recovered.stored) == (2, 2)
    assert [m.subject for m in await stored(world)] == [f"Message {i}" for i in range(3)]
    await mailbox.refresh_from_db()
    assert mailbox.sync_status == SyncStatus.IDLE and mailbox.last_error is None


async def test_tls_refused_by_the_server_is_reported(world: World, imap: ImapServer) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    mailbox.imap_tls = True  # the test server speaks plain IMAP only
    await mailbox.save()
    result = await sync(world, mailbox)
    assert result.status == SyncStatus.FAILED
    assert result.error and result.error.startswith(f"TLS with the IMAP server {imap.host}")


async def test_a_password_that_cannot_be_decrypted_is_reported(
    world: World, imap: ImapServer
) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    mailbox.password_encrypted = "not-a-fernet-token"  # e.g. PORTICO_SECRET_KEY changed
    await mailbox.save()
    result = await sync(world, mailbox)
    assert result.status == SyncStatus.FAILED
    assert result.error and "cannot be decrypted" in result.error


async def test_a_mailbox_being_synced_is_not_synced_twice_at_once(
    world: World, imap: ImapServer
) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    imap.append(mailbox.username, mail(JANE, mailbox.address))
    results = await asyncio.gather(*(sync_any(world, mailbox) for _ in range(3)))
    assert sorted(r.busy for r in results) == [False, True, True]
    assert sum(r.stored for r in results) == 1
    assert await Message.all().count() == 1


async def sync_any(world: World, mailbox: Mailbox) -> sync_engine.SyncResult:
    row = await Mailbox.get(pk=mailbox.pk)  # each caller with its own copy, as in the API
    return await sync_engine.sync_mailbox(world.scope, row, world.settings)


async def test_another_firms_mailbox_is_not_found(world: World, imap: ImapServer) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    other, _ = await firms.create_firm(
        "Globex LLP", "globex", "owner@globex.example", "Owner", STAFF_PASSWORD
    )
    with pytest.raises(InputError):
        await sync_engine.sync_mailbox(FirmScope(other.pk), mailbox, world.settings)


async def test_one_fetch_stores_a_thread_together_and_a_repeated_message_once(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One FETCH brings a message, its answer and a second copy of the message: they are
    # stored in one transaction, the answer in the first one's thread, the copy not at all.
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    first = mail(JANE, mailbox.address, "Receipts", message_id="<receipts@client.example>")
    answer = mail(
        mailbox.address,
        JANE,
        "Our figures",  # another subject: only In-Reply-To ties it to the first
        message_id="<answer@acme.example>",
        in_reply_to="<receipts@client.example>",
    )
    for raw in (first, answer, first):
        imap.append(mailbox.username, raw)
    alone: list[str] = []  # messages stored one by one, not with the batch
    store = message_store.store_message

    async def one_by_one(scope: FirmScope, parsed: Any, *args: Any, **kwargs: Any) -> Any:
        alone.append(parsed.subject)
        return await store(scope, parsed, *args, **kwargs)

    monkeypatch.setattr(message_store, "store_message", one_by_one)
    result = await sync(world, mailbox)

    assert (result.fetched, result.stored, result.linked) == (3, 2, 0)
    assert alone == ["Receipts"]  # only the copy, found stored by then
    messages = await stored(world)
    assert [m.subject for m in messages] == ["Receipts", "Our figures"]
    assert messages[0].thread_key == messages[1].thread_key
    assert messages[1].direction == "OUTBOUND"
    assert await accounts_of(messages[0]) == {world.family.pk, world.company.pk}


async def test_a_pass_that_ran_past_its_lease_stops_and_leaves_the_new_holder_alone(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = await mailbox_with_letters(world, imap, 3)
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 1)
    store = message_store.store_messages
    taken: list[datetime] = []

    async def stalled_then_overtaken(*args: Any, **kwargs: Any) -> list[message_store.StoreOutcome]:
        stored = await store(*args, **kwargs)
        if not taken:  # this pass stalls past its lease, and another process claims it
            await Mailbox.filter(pk=mailbox.pk).update(lease_until=datetime(2000, 1, 1, tzinfo=UTC))
            other = await Mailbox.get(pk=mailbox.pk)
            taken.append(await sync_engine._claim(world.scope, other))
        return stored

    monkeypatch.setattr(message_store, "store_messages", stalled_then_overtaken)
    result = await sync(world, mailbox)

    assert result.error == "Another process took this mailbox over."
    assert result.stored == 1  # it stopped at its next renewal
    row = await Mailbox.get(pk=mailbox.pk)
    assert (row.sync_status, row.lease_until) == (SyncStatus.SYNCING, taken[0])  # untouched
    inbox = await MailboxFolder.get(mailbox_id=mailbox.pk, role="INBOX")
    assert inbox.last_uid == 0  # the cursor is the new holder's to move


async def test_a_pass_stopped_before_its_first_command_makes_none(
    world: World, imap: ImapServer, recwarn: pytest.WarningsRecorder
) -> None:
    """The process is shutting down as the pass logs in: it ends before LIST, with nothing
    stored, and the command it did not send was never made (made and dropped, it was a
    coroutine never awaited: Python's RuntimeWarning)."""
    mailbox = await mailbox_with_letters(world, imap, 1)
    stop = asyncio.Event()
    stop.set()
    result = await sync_engine.sync_mailbox(world.scope, mailbox, world.settings, stop=stop)
    assert (result.stopped, result.error, result.stored) == (True, None, 0)

    # Nothing was abandoned: the pass said LOGOUT, as after any pass (Dovecot logs how the
    # session ended once it has closed it).
    def session_log() -> str:
        return (imap.folder / "dovecot.log").read_text().rsplit("Login: user=", 1)[1]

    await eventually(lambda: "Disconnected:" in session_log(), "Dovecot logs the session's end")
    assert "Disconnected: Logged out" in session_log(), session_log()
    gc.collect()
    assert [str(w.message) for w in recwarn if "never awaited" in str(w.message)] == []
    assert (await sync(world, mailbox)).stored == 1


async def test_stop_ends_a_pass_between_batches_with_the_cursor_after_them(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = await mailbox_with_letters(world, imap, 3)
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 1)
    stop = asyncio.Event()
    # The process is shutting down as the second batch is asked for (the first is stored
    # meanwhile): that FETCH is abandoned, the store finishes.
    when_asked_for(monkeypatch, sync_engine.PARTICIPANT_FIELDS, 2, stop.set)
    result = await sync_engine.sync_mailbox(world.scope, mailbox, world.settings, stop=stop)

    assert (result.status, result.error, result.stored) == (SyncStatus.IDLE, None, 1)
    row = await Mailbox.get(pk=mailbox.pk)
    assert (row.sync_status, row.lease_until) == (SyncStatus.IDLE, None)
    inbox = await MailboxFolder.get(mailbox_id=mailbox.pk, role="INBOX")
    assert inbox.last_uid == 1  # the next pass goes on from there
    assert (await sync(world, mailbox)).stored == 2


async def test_a_batch_is_stored_while_the_next_is_read_and_stores_keep_their_order(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = await mailbox_with_letters(world, imap, 3)
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 1)
    body_fetches = 0
    fetched = asyncio.Event()
    fetch = ImapSession.fetch

    async def watched_fetch(self: ImapSession, uids: Any, parts: str) -> Any:
        nonlocal body_fetches
        if parts == sync_engine.MESSAGE_FIELDS:
            body_fetches += 1
            fetched.set()
        return await fetch(self, uids, parts)

    store = message_store.store_messages
    order: list[list[str]] = []

    async def store_once_the_next_is_asked_for(*args: Any, **kwargs: Any) -> Any:
        order.append([parsed.subject for parsed, _ in args[1]])
        batch = len(order)
        # The next batch's bodies are asked for while this one waits to be stored (reading
        # one batch after the other would wait here for good).
        while batch < 3 and body_fetches <= batch:
            fetched.clear()
            await asyncio.wait_for(fetched.wait(), 10)
        return await store(*args, **kwargs)

    monkeypatch.setattr(ImapSession, "fetch", watched_fetch)
    monkeypatch.setattr(message_store, "store_messages", store_once_the_next_is_asked_for)
    result = await sync(world, mailbox)
    assert (result.status, result.error, result.stored) == (SyncStatus.IDLE, None, 3)
    assert order == [["Letter 0"], ["Letter 1"], ["Letter 2"]]
    assert [m.subject for m in await stored(world)] == ["Letter 0", "Letter 1", "Letter 2"]
    inbox = await MailboxFolder.get(mailbox_id=mailbox.pk, role="INBOX")
    assert inbox.last_uid == 3


async def test_a_pass_cancelled_while_a_store_is_in_flight_stores_nothing_of_it(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = await mailbox_with_letters(world, imap, 2)
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 1)
    storing, cancelled = asyncio.Event(), asyncio.Event()
    store = message_store.store_messages

    async def store_slowly(*args: Any, **kwargs: Any) -> Any:
        storing.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return await store(*args, **kwargs)

    monkeypatch.setattr(message_store, "store_messages", store_slowly)
    task = asyncio.create_task(sync(world, mailbox))
    await asyncio.wait_for(storing.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()  # with the pass, not left running on its own
    assert await stored(world) == []
    inbox = await MailboxFolder.get(mailbox_id=mailbox.pk, role="INBOX")
    assert inbox.last_uid == 0  # the cursor stands before the store that did not finish
    await mailbox.refresh_from_db()
    assert (mailbox.sync_status, mailbox.lease_until) == (SyncStatus.FAILED, None)
    monkeypatch.setattr(message_store, "store_messages", store)
    assert (await sync(world, mailbox)).stored == 2


@pytest.mark.parametrize("fault", ["cancelled", "failed"])
async def test_a_pass_stopped_while_its_cursor_moves_hands_the_mailbox_back(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """The cursor moves in one transaction with a lease renewal. Cancelled there (a worker's
    stop after its grace) or failing there (the database), the renewal rolls back with it,
    and the pass still hands the mailbox back with its error, so the next pass starts at
    once (before, it had kept the renewal's value, matched no row, and left the mailbox
    SYNCING until the lease ran out)."""
    mailbox = await mailbox_with_letters(world, imap, 2)
    moving = asyncio.Event()
    save = MailboxFolder.save

    async def stuck_save(self: MailboxFolder, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("update_fields") == ["last_uid"]:
            moving.set()
            if fault == "failed":
                raise OperationalError("disk I/O error")
            await asyncio.Event().wait()
        await save(self, *args, **kwargs)

    monkeypatch.setattr(MailboxFolder, "save", stuck_save)
    task = asyncio.create_task(sync(world, mailbox))
    await asyncio.wait_for(moving.wait(), 10)
    if fault == "cancelled":
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        error = "The sync was interrupted."
    else:
        assert (await task).status == SyncStatus.FAILED
        error = "Unexpected error: OperationalError: disk I/O error"
    await mailbox.refresh_from_db()
    assert (mailbox.sync_status, mailbox.lease_until) == (SyncStatus.FAILED, None)
    assert mailbox.last_error == error
    inbox = await MailboxFolder.get(mailbox_id=mailbox.pk, role="INBOX")
    assert inbox.last_uid == 0  # rolled back with the renewal
    monkeypatch.setattr(MailboxFolder, "save", save)
    again = await sync(world, mailbox)
    assert (again.status, again.busy) == (SyncStatus.IDLE, False)
    assert [m.subject for m in await stored(world)] == ["Letter 0", "Letter 1"]


async def test_a_pass_failing_while_a_store_is_in_flight_lets_it_finish(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = await mailbox_with_letters(world, imap, 3)
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 1)
    store = message_store.store_messages

    async def store_slowly(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.3)  # the second batch's read fails meanwhile
        return await store(*args, **kwargs)

    looked_up = message_store.synced_accounts
    calls = 0

    async def failing_second(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("a bug in the second batch")
        return await looked_up(*args, **kwargs)

    monkeypatch.setattr(message_store, "store_messages", store_slowly)
    monkeypatch.setattr(message_store, "synced_accounts", failing_second)
    failed = await sync(world, mailbox)
    assert failed.status == SyncStatus.FAILED
    assert "RuntimeError: a bug in the second batch" in (failed.error or "")
    # The first batch's store was through before the error when it ran in the pass's task.
    assert [m.subject for m in await stored(world)] == ["Letter 0"]
    monkeypatch.setattr(message_store, "store_messages", store)
    monkeypatch.setattr(message_store, "synced_accounts", looked_up)
    again = await sync(world, mailbox)
    assert (again.status, again.error) == (SyncStatus.IDLE, None)
    assert [m.subject for m in await stored(world)] == ["Letter 0", "Letter 1", "Letter 2"]


async def test_a_message_stored_meanwhile_by_another_pass_sends_the_fetch_one_by_one(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another pass stores the second message between this pass's look-up and its insert:
    # the batch's transaction fails whole, and each message is then stored (or linked) alone.
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    raws = [mail(JANE, mailbox.address, f"Letter {n}") for n in range(3)]
    for raw in raws:
        imap.append(mailbox.username, raw)
    thread_keys = message_store._thread_keys
    raced = False

    async def another_pass_first(scope: FirmScope, messages: Any) -> list[str]:
        nonlocal raced
        if not raced:
            raced = True
            await message_store.store_message(scope, parse_message(raws[1]), [world.family.pk])
        return await thread_keys(scope, messages)

    monkeypatch.setattr(message_store, "_thread_keys", another_pass_first)
    result = await sync(world, mailbox)

    assert raced and (result.stored, result.linked) == (2, 1)
    messages = await stored(world)
    assert sorted(m.subject for m in messages) == ["Letter 0", "Letter 1", "Letter 2"]
    for message in messages:
        assert await accounts_of(message) == {world.family.pk, world.company.pk}


# Last of the IMAP tests: after a failed login, Dovecot slows down logins from the same address
# (its auth penalty), which would slow every test after this one on the module's server.
async def test_a_wrong_password_fails_with_a_readable_error(world: World, imap: ImapServer) -> None:
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    wrong = "not-the-password-42"
    mailbox.password_encrypted = (
        crypto.fernet(world.settings, "mailbox-password").encrypt(wrong.encode()).decode()
    )
    await mailbox.save()

    result = await sync(world, mailbox)

    assert result.status == SyncStatus.FAILED
    assert result.error and "refused the username or password" in result.error
    assert wrong not in result.error
    await mailbox.refresh_from_db()
    assert mailbox.sync_status == SyncStatus.FAILED and mailbox.last_error == result.error
