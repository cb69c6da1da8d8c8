"""Replies from Inbox+ through the API, against a real Dovecot (IMAP) and aiosmtpd (SMTP):
threaded, sent through the mailbox's own SMTP server, filed in its Sent folder, and found
once when that folder syncs."""

from __future__ import annotations

import asyncio
import imaplib
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from models import DeliveryStatus, Mailbox, Message, OutboundEmail, PortalAccess
from portico.settings import Settings
from schema import ids
from services.loops.delivery import deliver_due
from services.mail import replies
from services.mail.replies import MAX_BODY, reply_subject
from services.outbound.transport import transport_for
from services.shared import sessions
from services.shared.pubsub import InProcessBus, firm_channel
from services.shared.scope import FirmScope
from tests.support.api import Api, Firm, add_staff, api_for
from tests.support.imap import PASSWORD, ImapServer, imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.login import FLAGS, invitee, portal_user
from tests.support.mail import CONNECT, SUBJECT, imap_user, mail, mailbox_input
from tests.support.smtp import AuthSmtpServer, free_port

CLIENT = "anna@miller.example"
SENDER = f"Anna Client <{CLIENT}>"  # From of her mail, with her name
SYNC = "mutation($id: ID!) { syncMailbox(id: $id) { errors { code } mailbox { syncStatus lastError } } }"
MESSAGE_FIELDS = "id subject from to direction threadId textBody accounts { name }"
REPLY = f"""mutation($id: ID!, $body: String!) {{
  replyToMessage(messageId: $id, body: $body) {{
    errors {{ code field message }} message {{ {MESSAGE_FIELDS} }} }} }}"""
INBOX = f"{{ inbox(first: 50) {{ totalCount edges {{ node {{ {MESSAGE_FIELDS} }} }} }} }}"
ACCOUNT = """query($id: ID!) { account(id: $id) {
  messages { totalCount edges { node { id direction } } }
  deliveries { totalCount edges { node { to subject kind status lastError attempts } } }
} }"""


@pytest.fixture
def smtp() -> Iterator[AuthSmtpServer]:
    """The mailbox's SMTP server: offers AUTH and takes the mailbox's password (Dovecot's)."""
    server = AuthSmtpServer(password=PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Setup:
    api: Api
    settings: Settings
    imap: ImapServer
    smtp: AuthSmtpServer
    user: str  # the mailbox's address, IMAP and SMTP username
    mailbox_id: str
    account_id: str

    async def sync(self) -> None:
        synced = (await self.api.data(SYNC, {"id": self.mailbox_id}))["syncMailbox"]
        assert synced == {"errors": [], "mailbox": {"syncStatus": "IDLE", "lastError": None}}

    async def inbox(self) -> dict:
        return (await self.api.data(INBOX))["inbox"]

    async def receive(self, raw: bytes) -> dict:
        """`raw` arrives in the mailbox's INBOX and is synced; the message as the API shows it."""
        self.imap.append(self.user, raw)
        await self.sync()
        subject = message_from_bytes(raw, policy=policy.default)["Subject"]
        [node] = [
            e["node"]
            for e in (await self.inbox())["edges"]
            if e["node"]["subject"] == subject and e["node"]["direction"] == "INBOUND"
        ]
        return node

    async def reply(self, message_id: str, body: str) -> dict:
        return (await self.api.ok(REPLY, {"id": message_id, "body": body}))["message"]

    async def deliver(self) -> None:
        """The worker's rounds until nothing is due (the platform's own mail as .eml files)."""
        transport = transport_for(self.settings)
        while await deliver_due(self.settings, transport):
            pass

    def sent_folder(self) -> list[tuple[bytes, bytes]]:
        """(flags, raw message) of each message in the mailbox's Sent folder, read back."""
        with imaplib.IMAP4(self.imap.host, self.imap.port) as client:
            client.login(self.user, PASSWORD)
            _, [count] = client.select("Sent", readonly=True)
            data = client.fetch("1:*", "(FLAGS BODY.PEEK[])")[1] if int(count or 0) else []
            client.logout()
        return [(item[0], item[1]) for item in data if isinstance(item, tuple)]


async def setup(acme: Firm, settings: Settings, imap: ImapServer, smtp: AuthSmtpServer) -> Setup:
    """Anna with EMAIL SYNC on in Miller Family, and a mailbox connected through the API."""
    anna = await invitee(acme.api, "Miller Family", CLIENT)
    await acme.api.ok(
        FLAGS, {"input": {"accountEmailId": anna.account_email_id, "emailSync": True}}
    )
    user = imap_user()
    values = mailbox_input(imap, smtp, user)
    mailbox_id = (await acme.api.ok(CONNECT, {"input": values}))["mailbox"]["id"]
    return Setup(acme.api, settings, imap, smtp, user, mailbox_id, anna.account_id)


def headers_of(raw: bytes) -> EmailMessage:
    return message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


def text_of(message: EmailMessage) -> str:
    """The plain-text body with the line ends Python uses."""
    return message.get_content().replace("\r\n", "\n")


def references_of(message: EmailMessage) -> list[str]:
    return re.findall(r"<[^<>\s]+>", str(message["References"] or ""))


async def test_reply_is_threaded_sent_filed_and_found_once(acme, settings, imap, smtp):
    s = await setup(acme, settings, imap, smtp)
    original_id = "<first@miller.example>"
    original = await s.receive(mail(SENDER, s.user, message_id=original_id))
    assert original["direction"] == "INBOUND"

    body = "Dear Anna,\n\nthank you, we will file it this week."
    reply = await s.reply(original["id"], f"  {body}\n")
    assert reply["direction"] == "OUTBOUND" and reply["threadId"] == original["threadId"]
    assert reply["subject"] == f"Re: {SUBJECT}"
    assert reply["from"] == s.user and reply["to"] == [CLIENT]
    assert reply["accounts"] == [{"name": "Miller Family"}]
    # The original is quoted below the reply, as mail programs do.
    assert reply["textBody"].startswith(body) and "\n> Here are the figures." in reply["textBody"]
    inbox = await s.inbox()
    assert inbox["totalCount"] == 2 and inbox["edges"][0]["node"]["id"] == reply["id"]
    tab = (await s.api.data(ACCOUNT, {"id": s.account_id}))["account"]
    assert {e["node"]["id"] for e in tab["messages"]["edges"]} == {reply["id"], original["id"]}
    assert [e["node"] for e in tab["deliveries"]["edges"]] == [
        {
            "to": CLIENT,
            "subject": f"Re: {SUBJECT}",
            "kind": "REPLY",
            "status": "QUEUED",
            "lastError": None,
            "attempts": 0,
        }
    ]

    await s.deliver()
    [received] = smtp.wait_for(1)
    assert received["From"] == f"Acme LLP <{s.user}>" and received["To"] == CLIENT
    assert received["Subject"] == f"Re: {SUBJECT}"
    assert received["In-Reply-To"] == original_id
    assert references_of(received) == [original_id]
    assert body in text_of(received) and not received.is_multipart()
    # Logged in to the mailbox's own server as the mailbox (the first login was the check
    # of connectMailbox); nothing went through the platform's transport.
    assert smtp.logins == [(s.user, True), (s.user, True)]
    assert not settings.outbox_dir.exists() or not any(settings.outbox_dir.iterdir())

    [(flags, raw)] = s.sent_folder()
    assert b"\\Seen" in flags
    filed = headers_of(raw)
    assert filed["Message-ID"] == received["Message-ID"]
    assert filed["In-Reply-To"] == original_id
    row = await OutboundEmail.get(message_id=received["Message-ID"])
    assert row.status == DeliveryStatus.SENT and row.filed_at is not None
    stored = await Message.get(id=ids.decode(reply["id"], "Message"))
    assert stored.message_id == received["Message-ID"] and row.thread_message_id == stored.pk

    # The Sent folder syncs: its copy is the reply already stored, not a second message.
    await s.sync()
    inbox = await s.inbox()
    assert inbox["totalCount"] == 2
    outbound = [e["node"] for e in inbox["edges"] if e["node"]["direction"] == "OUTBOUND"]
    assert [n["id"] for n in outbound] == [reply["id"]]
    assert await Message.filter(firm_id=acme.owner.firm_id).count() == 2
    # The copy was read (the Sent folder's cursor moved past it), so this proves something.
    mailbox = await Mailbox.get(id=ids.decode(s.mailbox_id, "Mailbox")).prefetch_related("folders")
    assert {f.role: f.last_uid for f in mailbox.folders}["SENT"] == 1
    # Delivered once: later rounds send nothing again.
    await s.deliver()
    assert len(smtp.messages) == 1


async def test_replies_to_replies_carry_the_whole_chain(acme, settings, imap, smtp):
    s = await setup(acme, settings, imap, smtp)
    first = await s.receive(mail(SENDER, s.user, message_id="<m1@miller.example>"))
    ours = await s.reply(first["id"], "First answer.")
    await s.deliver()
    [sent] = smtp.wait_for(1)
    ours_id = str(sent["Message-ID"])

    # Anna answers our reply; her mail joins the thread, and we answer again.
    chain = ("<m1@miller.example>", ours_id)
    hers = await s.receive(
        mail(
            SENDER,
            s.user,
            f"Re: {SUBJECT}",
            message_id="<m2@miller.example>",
            in_reply_to=chain[-1],
            references=chain,
        )
    )
    assert hers["threadId"] == first["threadId"]
    again = await s.reply(hers["id"], "Second answer.")
    assert again["subject"] == f"Re: {SUBJECT}"  # not "Re: Re: ..."
    assert again["threadId"] == first["threadId"] and again["to"] == [CLIENT]

    # A follow-up to our own reply (OUTBOUND): to whom it went, below it in the chain.
    follow_up = await s.reply(ours["id"], "One more thing.")
    assert follow_up["to"] == [CLIENT] and follow_up["threadId"] == first["threadId"]

    await s.deliver()
    received = smtp.wait_for(3)
    by_body = {text_of(m).split("\n")[0]: m for m in received}
    second, third = by_body["Second answer."], by_body["One more thing."]
    assert references_of(second) == [*chain, "<m2@miller.example>"]
    assert second["In-Reply-To"] == "<m2@miller.example>"
    assert references_of(third) == list(chain) and third["In-Reply-To"] == ours_id
    assert len(s.sent_folder()) == 3

    await s.sync()
    inbox = await s.inbox()
    assert inbox["totalCount"] == 5
    assert {e["node"]["threadId"] for e in inbox["edges"]} == {first["threadId"]}
    assert sum(e["node"]["direction"] == "OUTBOUND" for e in inbox["edges"]) == 3


async def test_a_refused_reply_fails_with_the_reason_and_is_not_filed(acme, settings, imap, smtp):
    s = await setup(acme, settings, imap, smtp)
    original = await s.receive(mail(SENDER, s.user))
    await s.reply(original["id"], "Thanks!")
    smtp.refuse_rcpt("550 5.1.1 no such user")
    await s.deliver()
    assert smtp.messages == []
    tab = (await s.api.data(ACCOUNT, {"id": s.account_id}))["account"]
    [delivery] = [e["node"] for e in tab["deliveries"]["edges"]]
    assert delivery["status"] == "FAILED" and delivery["lastError"] == "550 5.1.1 no such user"
    assert delivery["attempts"] == 1
    assert s.sent_folder() == []
    assert (await OutboundEmail.get(kind="REPLY")).filed_at is None


async def test_a_failed_filing_never_sends_the_reply_again(acme, settings, imap, smtp):
    s = await setup(acme, settings, imap, smtp)
    original = await s.receive(mail(SENDER, s.user))
    await s.reply(original["id"], "Thanks!")
    # The IMAP server cannot be reached any more; SMTP still works.
    await Mailbox.filter(id=ids.decode(s.mailbox_id, "Mailbox")).update(imap_port=free_port())
    await s.deliver()
    assert len(smtp.wait_for(1)) == 1
    row = await OutboundEmail.get(kind="REPLY")
    assert row.status == DeliveryStatus.SENT and row.filed_at is None and row.attempts == 1
    await s.deliver()
    later = datetime.now(UTC) + timedelta(days=1)
    assert await deliver_due(settings, transport_for(settings), now=later) == 0
    assert len(smtp.messages) == 1 and s.sent_folder() == []


async def test_a_reply_whose_mailbox_was_removed_is_never_sent_as_the_platform(
    acme, settings, imap, smtp
):
    s = await setup(acme, settings, imap, smtp)
    original = await s.receive(mail(SENDER, s.user))
    await s.reply(original["id"], "Thanks!")
    await Mailbox.filter(id=ids.decode(s.mailbox_id, "Mailbox")).delete()
    await s.deliver()
    row = await OutboundEmail.get(kind="REPLY")
    assert row.status == DeliveryStatus.FAILED and "not connected" in (row.last_error or "")
    assert smtp.messages == []
    assert not settings.outbox_dir.exists() or not any(settings.outbox_dir.iterdir())


async def test_refusals_write_nothing(acme, globex, client, settings, imap, smtp):
    s = await setup(acme, settings, imap, smtp)
    original = await s.receive(mail(SENDER, s.user))

    async def refused(api: Api, message_id: str, body: str = "Hello") -> list[tuple]:
        payload = (await api.data(REPLY, {"id": message_id, "body": body}))["replyToMessage"]
        assert payload["message"] is None
        return [(e["code"], e["field"]) for e in payload["errors"]]

    assert await refused(s.api, original["id"], " \n\t ") == [("INVALID_TEXT", ["body"])]
    assert await refused(s.api, original["id"], "x" * (MAX_BODY + 1)) == [
        ("INVALID_TEXT", ["body"])
    ]
    assert await refused(s.api, ids.encode("Message", 999_999)) == [("NOT_FOUND", ["messageId"])]
    assert await refused(s.api, s.account_id) == [("NOT_FOUND", ["messageId"])]  # not a Message
    assert await refused(s.api, "garbage") == [("NOT_FOUND", ["messageId"])]
    assert await refused(globex.api, original["id"]) == [("NOT_FOUND", ["messageId"])]

    def code(body: dict) -> str:
        return body["errors"][0]["extensions"]["code"]

    variables = {"id": original["id"], "body": "Hello"}
    reader = await api_for(client, await add_staff(acme, "reader@acme.example"))
    assert code(await reader.post(REPLY, variables)) == "FORBIDDEN"
    assert code(await Api(client).post(REPLY, variables)) == "UNAUTHENTICATED"
    user = await portal_user(acme.owner.firm_id, CLIENT)
    account_pk = ids.decode(s.account_id, "Account")
    await PortalAccess.create(firm_id=acme.owner.firm_id, account_id=account_pk, portal_user=user)
    token, _ = await sessions.start_client_session(user, timedelta(hours=1), None)
    assert code(await Api(client, token).post(REPLY, variables)) == "FORBIDDEN"

    # Without any mailbox left there is nothing to send through.
    await Mailbox.filter(firm_id=acme.owner.firm_id).delete()
    assert await refused(s.api, original["id"]) == [("NO_MAILBOX", ["messageId"])]

    assert await OutboundEmail.all().count() == 0
    assert await Message.filter(firm_id=acme.owner.firm_id).count() == 1
    assert (await s.inbox())["totalCount"] == 1

    # Staff holding the inbox right may reply (through the firm's other mailbox).
    await s.api.ok(CONNECT, {"input": mailbox_input(imap, smtp, "second@acme.example")})
    inbox_user = await api_for(
        client, await add_staff(acme, "inbox@acme.example", can_use_inbox=True)
    )
    reply = (await inbox_user.ok(REPLY, variables))["message"]
    assert reply["from"] == "second@acme.example" and reply["threadId"] == original["threadId"]


async def test_a_reply_is_announced_to_staff_watching(acme, settings, imap, smtp):
    s = await setup(acme, settings, imap, smtp)
    original = await s.receive(mail(SENDER, s.user))
    scope = FirmScope(acme.owner.firm_id)
    bus = InProcessBus()
    async with bus.subscribe(firm_channel(scope.firm_id)) as events:
        reply = await replies.reply_to_message(
            scope, ids.decode(original["id"], "Message"), "Thanks!", settings, bus
        )
        event = await asyncio.wait_for(anext(events), 5)
    assert event == {
        "kind": "message.synced",
        "messageId": reply.pk,
        "accountIds": [ids.decode(s.account_id, "Account")],
    }


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Tax return", "Re: Tax return"),
        ("Re: Tax return", "Re: Tax return"),
        ("RE:Tax return", "RE:Tax return"),
        ("AW: Steuererklärung", "AW: Steuererklärung"),
        ("Re[2]: Tax return", "Re[2]: Tax return"),
        ("Fwd: Tax return", "Re: Fwd: Tax return"),
        ("Regarding: the return", "Re: Regarding: the return"),
        ("", "Re:"),
    ],
)
def test_reply_subject(subject: str, expected: str) -> None:
    assert reply_subject(subject) == expected


# Review fixes: replies hidden from staff without the inbox right, the worker woken after the
# commit, the mailbox password scrubbed from errors. (Imports local: the module's import
# block is being reworked elsewhere.)

DELIVERIES = """query($id: ID!) { account(id: $id) {
  deliveries { totalCount edges { node { id to subject kind } } } } }"""
NODE = "query($id: ID!) { node(id: $id) { __typename ... on Delivery { id subject } } }"


async def test_replies_are_hidden_from_staff_without_the_inbox_right(
    acme, client, settings, imap, smtp
):
    from services.outbound import outbox
    from services.shared.sessions import now

    s = await setup(acme, settings, imap, smtp)
    original = await s.receive(mail(SENDER, s.user))
    await s.reply(original["id"], "Thanks!")
    other = await outbox.enqueue(
        firm_id=acme.owner.firm_id,
        firm_name="Acme LLP",
        to=CLIENT,
        template="invitation",
        context={
            "firm_name": "Acme",
            "account_name": "x",
            "link": "http://x/",
            "expires_at": now(),
        },
        kind="INVITATION",
        settings=settings,
        account_id=ids.decode(s.account_id, "Account"),
    )
    reply_row = await OutboundEmail.get(kind="REPLY")
    reply_gid = ids.encode("Delivery", reply_row.pk)
    other_gid = ids.encode("Delivery", other.pk)

    async def seen(api: Api) -> tuple[int, list[str], bool, bool]:
        listed = (await api.data(DELIVERIES, {"id": s.account_id}))["account"]["deliveries"]
        reply_node = (await api.data(NODE, {"id": reply_gid}))["node"]
        other_node = (await api.data(NODE, {"id": other_gid}))["node"]
        kinds = [e["node"]["kind"] for e in listed["edges"]]
        return listed["totalCount"], kinds, reply_node is not None, other_node is not None

    employee = await api_for(client, await add_staff(acme, "reader@acme.example"))
    assert await seen(employee) == (1, ["INVITATION"], False, True)
    with_right = await api_for(
        client, await add_staff(acme, "inbox@acme.example", can_use_inbox=True)
    )
    assert await seen(with_right) == (2, ["INVITATION", "REPLY"], True, True)
    assert await seen(s.api) == (2, ["INVITATION", "REPLY"], True, True)  # the owner

    # A reply whose mailbox was disconnected (mailbox_id now NULL) stays hidden.
    await Mailbox.filter(id=ids.decode(s.mailbox_id, "Mailbox")).delete()
    assert (await OutboundEmail.get(id=reply_row.pk)).mailbox_id is None
    assert await seen(employee) == (1, ["INVITATION"], False, True)
    assert await seen(with_right) == (2, ["INVITATION", "REPLY"], True, True)


async def test_a_reply_wakes_the_worker_after_its_commit(acme, settings, imap, smtp, monkeypatch):
    from tortoise import connections
    from tortoise.backends.base.client import TransactionalDBClient

    from services.shared.wakeups import OUTBOX

    s = await setup(acme, settings, imap, smtp)
    original = await s.receive(mail(SENDER, s.user))
    woken: list[bool] = []  # for each notify(): was a transaction still open?
    monkeypatch.setattr(
        OUTBOX,
        "notify",
        lambda: woken.append(isinstance(connections.get("default"), TransactionalDBClient)),
    )
    await s.reply(original["id"], "Thanks!")
    assert woken == [False]
    assert await OutboundEmail.filter(kind="REPLY").count() == 1


async def test_the_mailbox_password_never_shows_in_a_delivery_error(
    acme, settings, imap, smtp, monkeypatch, caplog
):
    import aiosmtplib

    from services.outbound.transport import MailboxSmtpTransport

    s = await setup(acme, settings, imap, smtp)
    original = await s.receive(mail(SENDER, s.user))
    await s.reply(original["id"], "Thanks!")
    failures = iter(
        [
            aiosmtplib.SMTPAuthenticationError(535, f"5.7.8 {PASSWORD} is not accepted"),
            RuntimeError(f"unexpected {PASSWORD}"),
        ]
    )

    async def converse(self, message):
        raise next(failures)

    monkeypatch.setattr(MailboxSmtpTransport, "_converse", converse)
    errors = []
    for day in (1, 2):  # each round after the retry's delay
        later = datetime.now(UTC) + timedelta(days=day)
        assert await deliver_due(settings, transport_for(settings), now=later) == 1
        errors.append((await OutboundEmail.get(kind="REPLY")).last_error)
    assert errors == [
        "authentication failed: 535 5.7.8 *** is not accepted",
        "Portico could not send it (RuntimeError); see the worker's log",
    ]
    assert PASSWORD not in caplog.text and "***" in caplog.text
    assert (await OutboundEmail.get(kind="REPLY")).status == DeliveryStatus.QUEUED


async def test_the_mailbox_password_never_shows_when_filing_fails(
    acme, settings, imap, smtp, monkeypatch, caplog
):
    from email.message import EmailMessage as Mail

    from services.mail.imap import MailSyncError

    s = await setup(acme, settings, imap, smtp)
    mailbox = await Mailbox.get(id=ids.decode(s.mailbox_id, "Mailbox"))

    async def refuse(cls, box, password, settings):
        raise MailSyncError(f"the server said: {password} is wrong")

    monkeypatch.setattr(replies.ImapSession, "open", classmethod(refuse))
    assert await replies.file_sent_copy(settings, mailbox, Mail()) is False
    assert PASSWORD not in caplog.text and "the server said: *** is wrong" in caplog.text


# Issue 14, goal 5: each reply's delivery in its thread, the failed ones in Inbox+, and no
# second copy in Sent when the provider filed one itself.

WITH_DELIVERY = """query($status: DeliveryStatus) { inbox(first: 50, deliveryStatus: $status) {
  totalCount edges { node { id subject direction
    delivery { id status attempts lastError sentAt } } } } }"""
THREAD_NODE = """query($id: ID!) { node(id: $id) { ... on Message {
  delivery { id status lastError } } } }"""
TAB_WITH_DELIVERY = """query($id: ID!) { account(id: $id) {
  messages { edges { node { id delivery { status } } } }
  deliveries { edges { node { id status } } } } }"""


async def test_the_thread_shows_each_reply_delivery_and_the_inbox_the_failed_ones(
    acme, globex, client, settings, imap, smtp
):
    s = await setup(acme, settings, imap, smtp)
    original = await s.receive(mail(SENDER, s.user))
    sent = await s.reply(original["id"], "First, sent.")
    await s.deliver()
    failed = await s.reply(original["id"], "Second, refused.")
    smtp.refuse_rcpt("550 5.1.1 no such user")
    await s.deliver()
    smtp.refuse_rcpt(None)
    queued = await s.reply(original["id"], "Third, not sent yet.")

    async def inbox(api: Api, status: str | None = None) -> tuple[int, dict[str, dict | None]]:
        page = (await api.data(WITH_DELIVERY, {"status": status}))["inbox"]
        return page["totalCount"], {e["node"]["id"]: e["node"]["delivery"] for e in page["edges"]}

    total, shown = await inbox(s.api)
    assert total == 4 and shown[original["id"]] is None  # synced mail: not sent through Portico
    assert shown[sent["id"]]["status"] == "SENT" and shown[sent["id"]]["sentAt"] is not None
    assert shown[sent["id"]]["attempts"] == 1 and shown[sent["id"]]["lastError"] is None
    assert shown[failed["id"]] == {
        **shown[failed["id"]],
        "status": "FAILED",
        "attempts": 1,
        "lastError": "550 5.1.1 no such user",  # the server's reason
        "sentAt": None,
    }
    assert shown[queued["id"]] == {**shown[queued["id"]], "status": "QUEUED", "attempts": 0}

    # Inbox+ shows the failed replies alone; each status filters alike.
    assert await inbox(s.api, "FAILED") == (1, {failed["id"]: shown[failed["id"]]})
    assert await inbox(s.api, "SENT") == (1, {sent["id"]: shown[sent["id"]]})
    assert await inbox(s.api, "QUEUED") == (1, {queued["id"]: shown[queued["id"]]})
    body = await s.api.post(WITH_DELIVERY, {"status": "CANCELLED"})
    [error] = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": "deliveryStatus"}
    assert "never cancelled" in error["message"]
    body = await s.api.post(WITH_DELIVERY, {"status": "LOST"})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

    # The same delivery by the message's id, in the account's Email tab, and as a Delivery.
    by_id = (await s.api.data(THREAD_NODE, {"id": failed["id"]}))["node"]["delivery"]
    assert by_id == {
        "id": shown[failed["id"]]["id"],
        "status": "FAILED",
        "lastError": "550 5.1.1 no such user",
    }
    tab = (await s.api.data(TAB_WITH_DELIVERY, {"id": s.account_id}))["account"]
    in_tab = {e["node"]["id"]: e["node"]["delivery"] for e in tab["messages"]["edges"]}
    assert in_tab == {k: v and {"status": v["status"]} for k, v in shown.items()}
    deliveries = {e["node"]["id"]: e["node"]["status"] for e in tab["deliveries"]["edges"]}
    assert deliveries == {v["id"]: v["status"] for v in shown.values() if v}

    # Who may read it: as the message, staff with the inbox right; nobody else.
    inbox_user = await api_for(
        client, await add_staff(acme, "inbox@acme.example", can_use_inbox=True)
    )
    assert await inbox(inbox_user, "FAILED") == (1, {failed["id"]: shown[failed["id"]]})
    reader = await api_for(client, await add_staff(acme, "reader@acme.example"))
    assert (await reader.post(WITH_DELIVERY))["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert (await reader.data(THREAD_NODE, {"id": failed["id"]}))["node"] is None
    assert (await globex.api.data(THREAD_NODE, {"id": failed["id"]}))["node"] is None
    assert await inbox(globex.api, "FAILED") == (0, {})


class ProviderFilingSmtpServer(AuthSmtpServer):
    """An SMTP server that files what it accepts in the sender's Sent folder itself, as
    Gmail and Office 365 do (on the test Dovecot, before it answers DATA)."""

    def __init__(self, password: str, imap: ImapServer) -> None:
        super().__init__(password)
        self.imap = imap

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        raw = envelope.original_content or envelope.content
        self.imap.append(envelope.mail_from, raw, folder="Sent")
        return await super().handle_DATA(server, session, envelope)


async def test_no_second_copy_when_the_provider_filed_the_reply_itself(acme, settings, imap):
    provider = ProviderFilingSmtpServer(PASSWORD, imap)
    provider.start()
    try:
        s = await setup(acme, settings, imap, provider)
        original = await s.receive(mail(SENDER, s.user))
        await s.reply(original["id"], "Thanks!")
        await s.deliver()
        [received] = provider.wait_for(1)
    finally:
        provider.stop()
    # One copy in Sent: the provider's; the reply counts as filed.
    [(_, raw)] = s.sent_folder()
    assert headers_of(raw)["Message-ID"] == received["Message-ID"]
    row = await OutboundEmail.get(kind="REPLY")
    assert row.status == DeliveryStatus.SENT and row.filed_at is not None
    # The folder was only looked at: the provider's copy keeps its flags (no \Seen set).
    [(flags, _)] = s.sent_folder()
    assert b"\\Seen" not in flags


@asynccontextmanager
async def slow_search_proxy(host: str, port: int, delay: float) -> AsyncIterator[int]:
    """A TCP proxy to the IMAP server that holds the answer to a UID SEARCH `delay` seconds."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, port)
        searching = asyncio.Event()

        async def to_server() -> None:
            while line := await reader.readline():
                if b"UID SEARCH" in line.upper():
                    searching.set()
                up_writer.write(line)
                await up_writer.drain()

        async def to_client() -> None:
            while data := await up_reader.read(65536):
                if searching.is_set():
                    await asyncio.sleep(delay)
                    searching.clear()
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.ensure_future(to_server()), asyncio.ensure_future(to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            writer.close()
            up_writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_a_slow_sent_search_still_files_one_copy(acme, settings, imap, smtp, monkeypatch):
    """A server slow to search Sent for the Message-ID gets the copy all the same: the search
    has its own short budget, and the APPEND goes over a fresh connection."""
    setup_ = await setup(acme, settings, imap, smtp)
    monkeypatch.setattr(replies, "SEARCH_TIMEOUT_SECONDS", 1.0)
    mailbox = await Mailbox.get(id=ids.decode(setup_.mailbox_id, "Mailbox"))
    message = EmailMessage()
    message["From"] = setup_.user
    message["To"] = "anna@miller.example"
    message["Subject"] = "Re: slow"
    message["Message-ID"] = "<slow-search@acme.example>"
    message.set_content("hello")
    async with slow_search_proxy(imap.host, imap.port, 3.0) as port:
        mailbox.imap_port = port
        await mailbox.save()
        assert await replies.file_sent_copy(settings, mailbox, message) is True
    assert len(setup_.sent_folder()) == 1
