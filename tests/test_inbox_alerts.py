"""Staff alerts for new client mail (inboxNotification), through the API: mail put on a real
Dovecot and synced with syncMailbox, alerts delivered to aiosmtpd by the worker's delivery.
The daily digest is driven by calling its service with a chosen "now"."""

from __future__ import annotations

import asyncio
import html
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from models import DeliveryStatus, EmailAddress, Mailbox, OutboundEmail, StaffRole
from portico.settings import Settings
from schema import ids
from services.mail import alerts, digests, history
from services.outbound import outbox
from tests.support.api import Api, Firm, add_staff, api_for
from tests.support.crm_ops import new_contact
from tests.support.imap import PASSWORD, ImapServer, imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.login import FLAGS, STATUS, deliver, invitee, text_of
from tests.support.mail import add_mailbox, mail
from tests.support.smtp import AuthSmtpServer, SmtpServer, smtp_fixture  # noqa: F401  (`smtp`)

ANNA = "anna@miller.example"
BOB = "bob@miller.example"
SET = """mutation($setting: InboxNotification!) {
  setInboxNotification(setting: $setting) {
    errors { code } staffMember { email inboxNotification } } }"""
SYNC = "mutation($id: ID!) { syncMailbox(id: $id) { errors { code } mailbox { syncStatus } } }"
INBOX = "{ inbox(first: 50) { edges { node { id subject direction } } } }"
REPLY = """mutation($id: ID!, $body: String!) {
  replyToMessage(messageId: $id, body: $body) { errors { code } message { id } } }"""
ERASE = "mutation($id: ID!) { eraseContact(id: $id) { errors { code } erased kept } }"
SECRET_BODY = "The figures: 123456, do not forward."


@dataclass
class Office:
    firm: Firm
    settings: Settings
    imap: ImapServer
    smtp: SmtpServer
    user: str  # the mailbox's IMAP user (its address)
    mailbox_id: str
    bob_account_email_id: str  # Bob in Miller Family, EMAIL SYNC still off

    async def receive(self, *raws: bytes) -> None:
        """`raws` arrive in the mailbox's INBOX, and the mailbox is synced."""
        for raw in raws:
            self.imap.append(self.user, raw)
        synced = (await self.firm.api.data(SYNC, {"id": self.mailbox_id}))["syncMailbox"]
        assert synced == {"errors": [], "mailbox": {"syncStatus": "IDLE"}}

    async def alerts(self) -> list[EmailMessage]:
        """Every staff alert and digest delivered so far (the platform's mail), known by the
        outbox kind of the row each was sent from, never by its text: a template change
        cannot make "no alert" pass unnoticed."""
        delivered = await deliver(self.settings, self.smtp)
        kinds = [alerts.ALERT_KIND, digests.DIGEST_KIND]
        sent = set(await OutboundEmail.filter(kind__in=kinds).values_list("message_id", flat=True))
        return [m for m in delivered if m["Message-ID"] in sent]


def new_mail(sender: str = ANNA, subject: str = "Tax return 2025", **more: object) -> bytes:
    """Mail sent just now (earlier mail is not new: it never alerts)."""
    return mail(sender, subject=subject, body=SECRET_BODY, date=datetime.now(UTC), **more)


async def office(acme: Firm, settings: Settings, imap: ImapServer, smtp: SmtpServer) -> Office:
    """Anna (EMAIL SYNC on) and Bob (off) in Miller Family, and a mailbox synced once."""
    anna = await invitee(acme.api, "Miller Family", ANNA)
    await acme.api.ok(
        FLAGS, {"input": {"accountEmailId": anna.account_email_id, "emailSync": True}}
    )
    await new_contact(acme.api, "Bob", "Miller", [(BOB, "Email")], [anna.account_id])
    rows = (await acme.api.data(STATUS, {"id": anna.account_id}))["account"]["emails"]
    bob = next(r["id"] for r in rows if r["emailAddress"]["address"] == BOB)
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    found = Office(
        acme, settings, imap, smtp, mailbox.username, ids.encode("Mailbox", mailbox.pk), bob
    )
    await found.receive()
    return found


async def choose(api: Api, setting: str) -> None:
    payload = await api.ok(SET, {"setting": setting})
    assert payload["staffMember"]["inboxNotification"] == setting


async def test_immediate_alerts_once_per_new_client_message(acme, client, settings, imap, smtp):
    here = await office(acme, settings, imap, smtp)
    await choose(acme.api, "IMMEDIATE")  # the owner: the inbox right by role
    olga = await add_staff(acme, "olga@acme.example", can_use_inbox=True)  # stays OFF
    nick = await add_staff(acme, "nick@acme.example")  # no inbox right
    await choose(await api_for(client, nick), "IMMEDIATE")
    gone = await add_staff(acme, "gone@acme.example", can_use_inbox=True)
    await choose(await api_for(client, gone), "IMMEDIATE")
    gone.active = False
    await gone.save()

    first = new_mail(subject="Tax return 2025")
    await here.receive(first)
    [alert] = await here.alerts()
    assert alert["To"] == "owner@acme.example"
    assert "Tax return 2025" in alert["Subject"] and "Miller Family" in alert["Subject"]
    text = text_of(alert)
    for shown in ("Miller Family", ANNA, "Tax return 2025"):
        assert shown in text
    html = alert.get_body(preferencelist=("html",)).get_content()
    assert SECRET_BODY not in text and SECRET_BODY not in html and "123456" not in html

    # Synced again (nothing new), and a copy synced from another mailbox: no second alert.
    await here.receive()
    other = await add_mailbox(acme.owner.firm_id, imap, settings)
    imap.append(other.username, first)
    await acme.api.ok(SYNC, {"id": ids.encode("Mailbox", other.pk)})
    assert len(await here.alerts()) == 1
    # A second message is a second alert; OFF, no inbox right and inactive get nothing.
    await here.receive(new_mail(subject="Receipts"))
    alerts = await here.alerts()
    assert [a["To"] for a in alerts] == ["owner@acme.example"] * 2
    assert "Receipts" in alerts[1]["Subject"]
    assert olga.email not in {a["To"] for a in alerts}


async def test_only_new_mail_from_a_client_alerts(acme, settings, imap, smtp):
    here = await office(acme, settings, imap, smtp)
    await choose(acme.api, "IMMEDIATE")
    await here.receive(
        # Earlier mail, first read now (e.g. the INBOX of a newly connected mailbox).
        mail(ANNA, subject="Old news", date=datetime.now(UTC) - timedelta(days=30)),
        # About the client, but not from a client address of the account.
        new_mail("stranger@else.example", subject="Spam", to=["office@acme.example", ANNA]),
    )
    inbox = [e["node"]["subject"] for e in (await acme.api.data(INBOX))["inbox"]["edges"]]
    assert sorted(inbox) == ["Old news", "Spam"]  # both stored, neither alerted
    assert await here.alerts() == []


async def test_an_own_reply_never_alerts(acme, settings, imap, smtp):
    here = await office(acme, settings, imap, smtp)
    mailbox_smtp = AuthSmtpServer(password=PASSWORD)
    mailbox_smtp.start()
    try:
        await Mailbox.filter(address=here.user).update(
            smtp_host=mailbox_smtp.host, smtp_port=mailbox_smtp.port
        )
        await choose(acme.api, "IMMEDIATE")
        await here.receive(new_mail(subject="Question"))
        assert len(await here.alerts()) == 1
        [node] = [e["node"] for e in (await acme.api.data(INBOX))["inbox"]["edges"]]
        await acme.api.ok(REPLY, {"id": node["id"], "body": "Here is the answer."})
        await deliver(settings, here.smtp)  # sent through the mailbox, filed in its Sent
        assert len(mailbox_smtp.messages) == 1
        await here.receive()  # the Sent copy is synced: found as the stored reply
        assert len(await here.alerts()) == 1
    finally:
        mailbox_smtp.stop()


async def test_a_history_import_never_alerts_nor_appears_in_a_digest(
    acme, client, settings, imap, smtp
):
    here = await office(acme, settings, imap, smtp)
    await choose(acme.api, "IMMEDIATE")
    dora = await add_staff(acme, "dora@acme.example", StaffRole.ADMIN)
    await choose(await api_for(client, dora), "DAILY_DIGEST")
    await here.receive(new_mail(BOB, subject="From Bob"))  # EMAIL SYNC off for Bob: not kept
    await acme.api.ok(
        FLAGS, {"input": {"accountEmailId": here.bob_account_email_id, "emailSync": True}}
    )
    assert await history.run_due_imports(settings) == 1
    inbox = [e["node"]["subject"] for e in (await acme.api.data(INBOX))["inbox"]["edges"]]
    assert inbox == ["From Bob"]
    assert await here.alerts() == []
    assert await digests.send_due_digests(settings, _tomorrow_morning()) == 0


def _tomorrow_morning() -> datetime:
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    return datetime(tomorrow.year, tomorrow.month, tomorrow.day, 7, 10, tzinfo=UTC)


async def test_the_daily_digest_lists_the_days_client_mail_once(acme, client, settings, imap, smtp):
    here = await office(acme, settings, imap, smtp)
    await choose(acme.api, "DAILY_DIGEST")
    nick = await add_staff(acme, "nick@acme.example")  # no inbox right
    await choose(await api_for(client, nick), "DAILY_DIGEST")
    await here.receive(new_mail(subject="First"), new_mail(subject="Second"))
    assert await here.alerts() == []  # nothing immediate for the digest

    morning = _tomorrow_morning()
    # Two workers at once: one digest.
    sent = await asyncio.gather(*(digests.send_due_digests(settings, morning) for _ in range(3)))
    assert sum(sent) == 1
    [digest] = await here.alerts()
    assert digest["To"] == "owner@acme.example"
    assert digest["Subject"].startswith("2 new client emails")
    text = text_of(digest)
    assert text.index("First") < text.index("Second") and text.count("Miller Family") == 2
    assert ANNA in text and SECRET_BODY not in text
    # Later the same morning, and the next morning with nothing new: no more digests.
    assert await digests.send_due_digests(settings, morning + timedelta(hours=3)) == 0
    assert await digests.send_due_digests(settings, morning + timedelta(days=1)) == 0
    assert await here.alerts() == [digest]


async def test_choosing_the_digest_lists_only_mail_since(acme, settings, imap, smtp):
    here = await office(acme, settings, imap, smtp)
    await here.receive(new_mail(subject="Before"))
    await choose(acme.api, "DAILY_DIGEST")
    await choose(acme.api, "DAILY_DIGEST")  # chosen again: the window stays
    await here.receive(new_mail(subject="After"))
    assert await digests.send_due_digests(settings, _tomorrow_morning()) == 1
    [digest] = await here.alerts()
    assert "After" in text_of(digest) and "Before" not in text_of(digest)


async def test_erasing_a_client_scrubs_the_alerts_and_digests_that_named_them(
    acme, client, settings, imap, smtp
):
    here = await office(acme, settings, imap, smtp)
    await choose(acme.api, "IMMEDIATE")
    dora = await add_staff(acme, "dora@acme.example", StaffRole.ADMIN)
    await choose(await api_for(client, dora), "DAILY_DIGEST")
    await here.receive(new_mail(subject="Tax return 2025"))
    assert len(await here.alerts()) == 1  # the owner's alert, sent
    await here.receive(new_mail(subject="Late receipts"))  # its alert still queued
    assert await digests.send_due_digests(settings, _tomorrow_morning()) == 1  # queued
    rows = await OutboundEmail.filter(kind__in=[alerts.ALERT_KIND, digests.DIGEST_KIND])
    assert len(rows) == 3 and all(ANNA in said(settings, row) for row in rows)

    contact = (await EmailAddress.get(address_normalized=ANNA)).contact_id
    erased = await acme.api.ok(ERASE, {"id": ids.encode("Contact", contact)})
    assert any("3 staff alert(s) and digest(s)" in sentence for sentence in erased["kept"])
    for row in await OutboundEmail.all():
        text = said(settings, row)
        for secret in (ANNA, "Tax return 2025", "Late receipts"):
            assert secret not in text, (row.kind, text)
    statuses = {
        row.kind: row.status
        for row in await OutboundEmail.filter(kind__in=[alerts.ALERT_KIND, digests.DIGEST_KIND])
    }
    assert statuses[digests.DIGEST_KIND] == DeliveryStatus.CANCELLED
    assert len(await here.alerts()) == 1  # the one sent before; nothing unsent goes out


def said(settings: Settings, row: OutboundEmail) -> str:
    """Everything an outbox row says: its recipient, subject and decrypted bodies."""
    bodies = outbox.decrypt_bodies(settings, row)
    return "\n".join((row.to_address, row.subject, bodies.text, html.unescape(bodies.html)))
