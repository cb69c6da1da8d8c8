"""Changing and disconnecting a mailbox (updateMailbox, disconnectMailbox) through the API,
against a real Dovecot (tests/support/imap.py) and a real SMTP server (aiosmtpd): the new
login is checked before anything is saved, a FAILED mailbox recovers, disconnecting stops
its sync (a pass in flight and the loop's task alike) and keeps or deletes its mail.

The tests that log in with a wrong password come after the others where they can: Dovecot
slows down logins from an address after a failed one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from models import (
    AccountEmail,
    Attachment,
    AuditEntry,
    HistoryImport,
    Mailbox,
    MailboxFolder,
    Message,
    MessageAccount,
    SyncStatus,
)
from portico.settings import Settings
from services.loops import mail_sync
from services.mail import sync_engine
from services.mail.mailboxes import encrypt_password, mailbox_password
from services.shared import files, sessions
from services.shared.scope import FirmScope
from tests.support.api import Api, Firm, add_staff, api_for, eventually
from tests.support.imap import (  # noqa: F401  (the `imap` fixture)
    PASSWORD,
    ImapServer,
    imap_fixture,
    tiny_imap,
)
from tests.support.login import invitee, portal_user
from tests.support.mail import ANNA, CONNECT, imap_user, mail, mailbox_input
from tests.support.smtp import SmtpServer, smtp_fixture  # noqa: F401  (the `smtp` fixture)

DEADLINE = 20.0
SLOW = 300.0  # an interval or backoff no test waits for

FIELDS = "id address imapHost imapPort syncStatus lastSyncedAt lastError"
UPDATE = f"""
mutation ($id: ID!, $input: UpdateMailboxInput!) {{
  updateMailbox(id: $id, input: $input) {{ errors {{ code field message }} mailbox {{ {FIELDS} }} }}
}}"""
DISCONNECT = f"""
mutation ($id: ID!, $delete: Boolean) {{
  disconnectMailbox(id: $id, deleteMessages: $delete) {{
    errors {{ code field message }} mailbox {{ {FIELDS} }}
  }}
}}"""
SYNC = """mutation ($id: ID!) { syncMailbox(id: $id) {
  errors { code } mailbox { syncStatus lastSyncedAt lastError } } }"""
NODE = "query ($id: ID!) { node(id: $id) { id } }"
INBOX = "{ inbox(first: 50) { totalCount edges { node { subject attachments { filename } } } } }"


# Helpers ------------------------------------------------------------------------------------


async def connected(firm: Firm, imap: ImapServer, smtp: SmtpServer, user: str) -> str:
    """A mailbox connected through the API (its address is its IMAP user); its id."""
    body = await firm.api.post(CONNECT, {"input": mailbox_input(imap, smtp, user)})
    payload = body["data"]["connectMailbox"]
    assert payload["errors"] == [], payload
    return payload["mailbox"]["id"]


async def update(api: Api, mailbox_id: str, **changes: Any) -> dict:
    return (await api.data(UPDATE, {"id": mailbox_id, "input": changes}))["updateMailbox"]


async def disconnect(api: Api, mailbox_id: str, delete: bool | None = None) -> dict:
    variables: dict[str, Any] = {"id": mailbox_id}
    if delete is not None:
        variables["delete"] = delete
    return (await api.data(DISCONNECT, variables))["disconnectMailbox"]


async def sync(api: Api, mailbox_id: str) -> dict:
    return (await api.data(SYNC, {"id": mailbox_id}))["syncMailbox"]["mailbox"]


def codes(payload: dict) -> list[tuple[str, str]]:
    return [(e["code"], e["field"][-1]) for e in payload["errors"]]


def refusal(body: dict) -> str | None:
    return next((e.get("extensions", {}).get("code") for e in body.get("errors", [])), None)


async def synced_address(firm: Firm, address: str = ANNA) -> None:
    """A client with EMAIL SYNC on: mail with this address is kept."""
    await invitee(firm.api, "Miller Family", address)
    await AccountEmail.all().update(email_sync=True)


async def snapshot(mailbox_id: int) -> dict:
    return (await Mailbox.filter(pk=mailbox_id).values())[0]


def loop_settings(settings: Settings, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "sync_interval_seconds": SLOW,
        "sync_retry_base_seconds": SLOW,  # a failed pass is not retried within a test
        "sync_retry_max_seconds": SLOW,
    }
    values.update(changes)
    return settings.model_copy(update=values)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(mail_sync.run_sync_loop(settings, None, stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def sync_tasks(mailbox_pk: int) -> list[asyncio.Task]:
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name() == f"mailbox sync {mailbox_pk}" and not t.done()
    ]


# updateMailbox ------------------------------------------------------------------------------


async def test_update_checks_the_new_login_then_saves_it_encrypted_with_an_audit_entry(
    acme: Firm, imap: ImapServer, smtp: SmtpServer, settings: Settings
) -> None:
    mailbox_id = await connected(acme, imap, smtp, imap_user())
    [row] = await Mailbox.all()
    new_user = imap_user()
    body = await acme.api.post(
        UPDATE, {"id": mailbox_id, "input": {"username": f" {new_user} ", "password": PASSWORD}}
    )
    assert PASSWORD not in str(body)
    payload = body["data"]["updateMailbox"]
    assert payload["errors"] == []
    assert payload["mailbox"]["id"] == mailbox_id
    assert payload["mailbox"]["imapPort"] == imap.port  # null kept it
    stored = await Mailbox.get(pk=row.pk)
    assert stored.username == new_user  # trimmed, as on connect
    assert (stored.imap_host, stored.smtp_port, stored.imap_tls) == (
        row.imap_host,
        row.smtp_port,
        row.imap_tls,
    )
    assert stored.password_encrypted != row.password_encrypted
    assert PASSWORD not in stored.password_encrypted
    assert mailbox_password(settings, stored) == PASSWORD

    [entry] = await AuditEntry.filter(action="MAILBOX_UPDATED")
    assert entry.staff_member_id == acme.owner.pk and entry.email == row.address
    assert entry.before == {"username": row.username}
    assert entry.after == {"username": new_user, "passwordChanged": True}
    assert PASSWORD not in str(entry.before) + str(entry.after)

    # The mailbox works with what was saved.
    assert (await sync(acme.api, mailbox_id))["syncStatus"] == "IDLE"


async def test_update_validates_like_connect_and_saves_nothing_on_failure(
    acme: Firm, imap: ImapServer, smtp: SmtpServer, settings: Settings
) -> None:
    mailbox_id = await connected(acme, imap, smtp, imap_user())
    [row] = await Mailbox.all()
    before = await snapshot(row.pk)

    payload = await update(
        acme.api, mailbox_id, imapHost=" ", imapPort=0, smtpPort=70000, username="", password=""
    )
    assert set(codes(payload)) == {
        ("INVALID_HOST", "imapHost"),
        ("INVALID_PORT", "imapPort"),
        ("INVALID_PORT", "smtpPort"),
        ("INVALID_USERNAME", "username"),
        ("INVALID_PASSWORD", "password"),
    }
    assert payload["mailbox"] is None

    # A closed port: the new settings are checked, not the stored ones.
    with socket_closed() as port:
        payload = await update(acme.api, mailbox_id, smtpPort=port, password=PASSWORD)
    assert codes(payload) == [("SMTP_CONNECTION_FAILED", "smtpHost")]

    # Private hosts are vetted as on connect (production refuses them).
    settings.allow_private_mail_hosts = False
    try:
        payload = await update(acme.api, mailbox_id, password=PASSWORD)
    finally:
        settings.allow_private_mail_hosts = None
    assert codes(payload) == [("HOST_NOT_ALLOWED", "imapHost"), ("HOST_NOT_ALLOWED", "smtpHost")]

    assert await snapshot(row.pk) == before
    assert await AuditEntry.filter(action="MAILBOX_UPDATED").count() == 0


@contextlib.contextmanager
def socket_closed() -> Any:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port  # nobody listens there any more


async def test_the_stored_password_goes_only_to_the_servers_and_user_it_was_given_for(
    acme: Firm, imap: ImapServer, smtp: SmtpServer, settings: Settings
) -> None:
    mailbox_id = await connected(acme, imap, smtp, imap_user())
    [row] = await Mailbox.all()

    # A retry as is (the same servers and user, however spelled) reuses the stored password.
    assert (await update(acme.api, mailbox_id))["errors"] == []
    same = await update(acme.api, mailbox_id, imapHost=f" {imap.host} ", username=row.username)
    assert same["errors"] == []
    before = await snapshot(row.pk)

    async with tiny_imap() as elsewhere:
        # Another server, port, TLS setting or user without the password: refused before
        # any connection, so nobody can have the stored password sent to a server of theirs.
        for change in (
            {"imapPort": elsewhere.port},
            {"smtpPort": elsewhere.port},
            {"imapHost": "their-server.example"},
            {"smtpHost": "their-server.example"},
            {"imapTls": True},
            {"smtpTls": True},
            {"username": imap_user("other")},
        ):
            payload = await update(acme.api, mailbox_id, **change)
            assert codes(payload) == [("INVALID_PASSWORD", "password")], change
            assert "Give the password again" in payload["errors"][0]["message"]
            assert payload["mailbox"] is None
        # Bad input and the missing password are reported together.
        payload = await update(acme.api, mailbox_id, imapHost=" ", imapPort=elsewhere.port)
        assert codes(payload) == [("INVALID_HOST", "imapHost"), ("INVALID_PASSWORD", "password")]
        assert elsewhere.connections == 0
        assert await snapshot(row.pk) == before
        assert await AuditEntry.filter(action="MAILBOX_UPDATED").count() == 2  # the retries

        # With the password given the new server is checked and saved.
        payload = await update(acme.api, mailbox_id, imapPort=elsewhere.port, password="given")
        assert payload["errors"] == [], payload
        assert payload["mailbox"]["imapPort"] == elsewhere.port
        assert elsewhere.connections == 1
        assert any(b"given" in line for line in elsewhere.lines)
    stored = await Mailbox.get(pk=row.pk)
    assert stored.imap_port == elsewhere.port
    assert mailbox_password(settings, stored) == "given"
    assert PASSWORD not in str(elsewhere.lines)


async def test_only_inbox_staff_of_the_firm_change_or_disconnect_a_mailbox(
    acme: Firm, globex: Firm, client: Any, anon: Api, imap: ImapServer, smtp: SmtpServer
) -> None:
    mailbox_id = await connected(acme, imap, smtp, imap_user())
    [row] = await Mailbox.all()
    before = await snapshot(row.pk)
    plain = await api_for(
        client, await add_staff(acme, "max@acme.example", can_manage_accounts=True)
    )
    user = await portal_user(acme.owner.firm_id)
    token, _ = await sessions.start_client_session(user, timedelta(hours=1), None)
    portal = Api(client, token)
    change = {"id": mailbox_id, "input": {"password": PASSWORD}}
    for api, expected in ((plain, "FORBIDDEN"), (portal, "FORBIDDEN"), (anon, "UNAUTHENTICATED")):
        assert refusal(await api.post(UPDATE, change)) == expected
        assert refusal(await api.post(DISCONNECT, {"id": mailbox_id, "delete": True})) == expected

    # Another firm's staff: not found, and nothing happens.
    assert codes(await update(globex.api, mailbox_id, password=PASSWORD)) == [("NOT_FOUND", "id")]
    assert codes(await disconnect(globex.api, mailbox_id, True)) == [("NOT_FOUND", "id")]
    assert await snapshot(row.pk) == before

    # Staff with the inbox right may.
    inbox = await api_for(client, await add_staff(acme, "ina@acme.example", can_use_inbox=True))
    assert (await update(inbox, mailbox_id, password=PASSWORD))["errors"] == []
    assert (await disconnect(inbox, mailbox_id))["errors"] == []
    assert await Mailbox.all().count() == 0


# disconnectMailbox --------------------------------------------------------------------------


async def test_disconnect_keeps_the_synced_mail_readable(
    acme: Firm, imap: ImapServer, smtp: SmtpServer, settings: Settings
) -> None:
    await synced_address(acme)
    user = imap_user()
    mailbox_id = await connected(acme, imap, smtp, user)
    imap.append(
        user,
        mail(to=user, subject="Kept", attachments=[("a.pdf", "application/pdf", b"%PDF-kept")]),
    )
    assert (await sync(acme.api, mailbox_id))["syncStatus"] == "IDLE"
    [row] = await Mailbox.all()
    await HistoryImport.create(firm_id=row.firm_id, mailbox_id=row.pk, address_normalized=ANNA)
    inbox = (await acme.api.data(INBOX))["inbox"]
    assert inbox["totalCount"] == 1

    payload = await disconnect(acme.api, mailbox_id)
    assert payload["errors"] == []
    assert payload["mailbox"]["id"] == mailbox_id  # as it was
    assert payload["mailbox"]["address"] == row.address
    assert await Mailbox.all().count() == 0
    assert await MailboxFolder.all().count() == 0
    assert await HistoryImport.all().count() == 0
    assert (await acme.api.data(NODE, {"id": mailbox_id}))["node"] is None

    # The mail stays, readable with its attachment, no longer tied to a mailbox.
    assert (await acme.api.data(INBOX))["inbox"] == inbox
    [message] = await Message.all()
    assert message.mailbox_id is None
    [attachment] = await Attachment.all()
    assert files.path_for(settings, attachment.sha256).is_file()

    [entry] = await AuditEntry.filter(action="MAILBOX_DISCONNECTED")
    assert entry.staff_member_id == acme.owner.pk and entry.email == row.address
    assert entry.after == {"deleteMessages": False, "messagesDeleted": 0}
    assert entry.before["imapHost"] == imap.host and "password" not in str(entry.before)

    # Gone: a second disconnect, an update or a sync find nothing.
    assert codes(await disconnect(acme.api, mailbox_id)) == [("NOT_FOUND", "id")]
    assert codes(await update(acme.api, mailbox_id, password=PASSWORD)) == [("NOT_FOUND", "id")]


async def test_disconnect_with_delete_messages_deletes_only_what_came_only_through_it(
    acme: Firm, imap: ImapServer, smtp: SmtpServer, settings: Settings
) -> None:
    await synced_address(acme)
    first, second = imap_user("first"), imap_user("second")
    first_id = await connected(acme, imap, smtp, first)
    second_id = await connected(acme, imap, smtp, second)
    only = b"%PDF-only-through-the-first"
    shared = b"%PDF-also-in-the-second-mailbox"
    imap.append(
        first,
        mail(
            to=first,
            subject="Only first",
            attachments=[
                ("only.pdf", "application/pdf", only),
                ("s.pdf", "application/pdf", shared),
            ],
        ),
    )
    both = mail(to=first, cc=[second], subject="Both mailboxes")
    imap.append(first, both)
    imap.append(second, both)
    imap.append(
        second,
        mail(to=second, subject="Only second", attachments=[("s.pdf", "application/pdf", shared)]),
    )
    assert (await sync(acme.api, first_id))["syncStatus"] == "IDLE"
    assert (await sync(acme.api, second_id))["syncStatus"] == "IDLE"
    assert await Message.all().count() == 3
    only_sha = (await Attachment.get(filename="only.pdf")).sha256
    shared_sha = (await Attachment.filter(filename="s.pdf").first()).sha256
    gone_id = (await Message.get(subject="Only first")).pk

    payload = await disconnect(acme.api, first_id, True)
    assert payload["errors"] == []
    assert payload["mailbox"]["id"] == first_id

    # "Only first" is gone with its links and attachments; "Both mailboxes" (the second
    # mailbox has it) and the second's own mail stay.
    subjects = sorted(await Message.all().values_list("subject", flat=True))
    assert subjects == ["Both mailboxes", "Only second"]
    assert await MessageAccount.filter(message_id=gone_id).count() == 0
    assert await Attachment.filter(message_id=gone_id).count() == 0
    assert not files.path_for(settings, only_sha).exists()
    assert files.path_for(settings, shared_sha).is_file()  # the second's attachment has it
    assert (await Message.get(subject="Both mailboxes")).mailbox_id is None
    inbox = (await acme.api.data(INBOX))["inbox"]
    assert sorted(e["node"]["subject"] for e in inbox["edges"]) == subjects
    [entry] = await AuditEntry.filter(action="MAILBOX_DISCONNECTED")
    assert entry.after == {"deleteMessages": True, "messagesDeleted": 1}
    assert [m["id"] for m in (await acme.api.data("{ mailboxes { id } }"))["mailboxes"]] == [
        second_id
    ]


async def test_disconnect_ends_a_pass_in_flight_at_its_next_lease_check(
    acme: Firm,
    imap: ImapServer,
    smtp: SmtpServer,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 50)  # eight batches, not 8,000 messages
    await synced_address(acme)
    user = imap_user()
    mailbox_id = await connected(acme, imap, smtp, user)
    imap.append(user, mail(to=user, subject="Message 0"))
    total = 8 * sync_engine.FETCH_BATCH
    for n in range(1, total):
        imap.deliver_to_maildir(user, mail(to=user, subject=f"Message {n}"))
    [row] = await Mailbox.all()
    scope = FirmScope(row.firm_id)
    running_pass = asyncio.create_task(sync_engine.sync_mailbox(scope, row, settings))

    async def stored_some() -> bool:
        return await Message.all().count() > 0

    await eventually(stored_some, "the pass stored its first batch", DEADLINE)
    assert (await disconnect(acme.api, mailbox_id))["errors"] == []
    kept = await Message.all().count()
    result = await asyncio.wait_for(running_pass, DEADLINE)
    assert result.gone and result.error is None
    # It stopped: nothing was stored after the disconnect, and the pass left no row behind.
    assert await Message.all().count() == kept < total
    assert await Message.filter(mailbox_id__not_isnull=True).count() == 0
    assert await Mailbox.all().count() == 0 and await MailboxFolder.all().count() == 0


async def test_disconnect_ends_the_loops_task_and_its_idle_connection(
    acme: Firm, imap: ImapServer, smtp: SmtpServer, settings: Settings
) -> None:
    user = imap_user()
    mailbox_id = await connected(acme, imap, smtp, user)
    [row] = await Mailbox.all()
    async with running(loop_settings(settings)) as loop:

        async def idling() -> bool:
            return bool(imap.sessions(user)) and (await Mailbox.get(pk=row.pk)).last_synced_at

        await eventually(idling, "the mailbox synced and waits in IDLE", DEADLINE)
        assert sync_tasks(row.pk)
        assert (await disconnect(acme.api, mailbox_id))["errors"] == []

        async def ended() -> bool:
            return not sync_tasks(row.pk) and not imap.sessions(user)

        await eventually(ended, "the task ended and logged out", DEADLINE)
        assert not loop.done()


# A FAILED mailbox recovers (wrong passwords last) -------------------------------------------


async def test_a_failed_mailbox_recovers_at_once_after_update(
    acme: Firm, imap: ImapServer, smtp: SmtpServer, settings: Settings
) -> None:
    await synced_address(acme)
    user = imap_user()
    mailbox_id = await connected(acme, imap, smtp, user)
    [row] = await Mailbox.all()
    # The firm changed the password on the server: the stored one is wrong now.
    await Mailbox.filter(pk=row.pk).update(password_encrypted=encrypt_password(settings, "old"))
    async with running(loop_settings(settings)):

        async def failed() -> bool:
            return (await Mailbox.get(pk=row.pk)).sync_status == SyncStatus.FAILED

        await eventually(failed, "the pass failed", DEADLINE)  # and waits SLOW to retry

        # A wrong new password is refused and changes nothing.
        before = await snapshot(row.pk)
        payload = await update(acme.api, mailbox_id, password="still-wrong")
        assert codes(payload) == [("IMAP_AUTH_FAILED", "password")]
        assert await snapshot(row.pk) == before

        imap.append(user, mail(to=user, subject="After the fix"))
        payload = await update(acme.api, mailbox_id, password=PASSWORD)
        assert payload["errors"] == []
        assert payload["mailbox"]["syncStatus"] == "IDLE"
        assert payload["mailbox"]["lastError"] is None

        async def recovered() -> bool:
            stored = await Mailbox.get(pk=row.pk)
            return stored.last_synced_at is not None and stored.sync_status == SyncStatus.IDLE

        # Long before the SLOW backoff the old failure had built up.
        await eventually(recovered, "the next pass ran with the new password", DEADLINE)
    inbox = (await acme.api.data(INBOX))["inbox"]
    assert [e["node"]["subject"] for e in inbox["edges"]] == ["After the fix"]


async def test_a_failed_mailbox_recovers_through_the_api_alone(
    acme: Firm, imap: ImapServer, smtp: SmtpServer, settings: Settings
) -> None:
    mailbox_id = await connected(acme, imap, smtp, imap_user())
    [row] = await Mailbox.all()
    await Mailbox.filter(pk=row.pk).update(password_encrypted=encrypt_password(settings, "old"))
    failed = await sync(acme.api, mailbox_id)
    assert failed["syncStatus"] == "FAILED" and failed["lastError"]
    assert (await update(acme.api, mailbox_id, password=PASSWORD))["errors"] == []
    recovered = await sync(acme.api, mailbox_id)
    assert recovered["syncStatus"] == "IDLE" and recovered["lastError"] is None
    assert recovered["lastSyncedAt"] is not None


@pytest.fixture(autouse=True)
def _imap_up(imap: ImapServer) -> None:
    imap.ensure_running()
