"""The tests' mail helpers: raw RFC 5322 messages to put on the test Dovecot (tests/support/imap.py),
mailbox rows pointing at it, and connectMailbox input for the test servers."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import NamedTuple

import pytest

from models import Mailbox
from portico.settings import Settings
from services.mail.imap import Fetched, ImapSession
from services.shared import crypto
from tests.support.imap import PASSWORD, ImapServer
from tests.support.smtp import SmtpServer

ANNA = "anna@miller.example"  # a client
OFFICE = "office@acme.example"  # the firm
SUBJECT = "Tax return 2025"
BODY = "Here are the figures."
DATE = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)

CONNECT = """mutation ($input: ConnectMailboxInput!) {
  connectMailbox(input: $input) { errors { code message } mailbox { id } } }"""


def mail(
    sender: str = ANNA,
    to: str | Sequence[str] = OFFICE,
    subject: str = SUBJECT,
    *,
    cc: Sequence[str] = (),
    body: str | None = BODY,
    html: str | None = None,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    date: datetime | None = None,
    attachments: Sequence[tuple[str, str, bytes]] = (),
) -> bytes:
    """A message as a mail server receives it: a Message-ID of its own unless given (a known
    one would only be linked again); a text `body`, an `html` one, both (alternatives) or,
    with `body=None`, HTML only; `attachments` as (file name, content type, bytes)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to if isinstance(to, str) else ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or DATE)
    msg["Message-ID"] = message_id or f"<{secrets.token_hex(8)}@client.example>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    if body is not None:
        msg.set_content(body)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    for filename, content_type, content in attachments:
        maintype, subtype = content_type.split("/")
        msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def numbered(n: int, sender: str = ANNA, html: str | None = None) -> bytes:
    """Message `n` of a series: "Message n", a known Message-ID, sent at 10:n on 2 Nov 2026 (so
    a higher number is newer); HTML only when `html` is given."""
    return mail(
        sender,
        subject=f"Message {n}",
        body=None if html is not None else f"Hello {n}",
        html=html,
        message_id=f"<m{n}@test>",
        date=datetime(2026, 11, 2, 10, n, tzinfo=UTC),
    )


def imap_user(label: str = "office", domain: str = "acme.example") -> str:
    """An IMAP user of its own (the test Dovecot accepts any name with PASSWORD)."""
    return f"{label}-{secrets.token_hex(4)}@{domain}"


async def add_mailbox(
    firm_id: int,
    imap: ImapServer,
    settings: Settings,
    address: str | None = None,
    *,
    password: str = PASSWORD,
) -> Mailbox:
    """A connected mailbox of the firm on the test Dovecot, made directly (connectMailbox has
    its own tests, and would refuse a wrong password); its address is its IMAP user."""
    address = address or imap_user()
    secret = crypto.fernet(settings, "mailbox-password").encrypt(password.encode()).decode()
    return await Mailbox.create(
        firm_id=firm_id,
        address=address,
        address_normalized=address.lower(),
        imap_host=imap.host,
        imap_port=imap.port,
        imap_tls=False,
        smtp_host=imap.host,
        smtp_port=25,
        smtp_tls=False,
        username=address,
        password_encrypted=secret,
    )


class Endpoint(NamedTuple):
    host: str
    port: int


def mailbox_input(
    imap: ImapServer | Endpoint,
    smtp: SmtpServer | Endpoint,
    address: str = OFFICE,
    **changes: object,
) -> dict[str, object]:
    """A connectMailbox input for the test servers: plain IMAP and SMTP, a user of its own."""
    values: dict[str, object] = {
        "address": address,
        "imapHost": imap.host,
        "imapPort": imap.port,
        "imapTls": False,
        "smtpHost": smtp.host,
        "smtpPort": smtp.port,
        "smtpTls": False,
        "username": address,
        "password": PASSWORD,
    }
    values.update(changes)
    return values


def when_asked_for(
    monkeypatch: pytest.MonkeyPatch, parts: str, nth: int, action: Callable[[], None]
) -> None:
    """Runs `action` when a sync pass asks for `parts` (sync_engine.PARTICIPANT_FIELDS, the
    header step; MESSAGE_FIELDS, the bodies) the `nth` time (1: the first), before the FETCH
    goes out. A batch is read while the one before it is stored, so a fault meant for "the
    next batch" is set here, where that batch starts, not by the store of the one before."""
    fetch = ImapSession.fetch
    asked = 0

    async def watched(self: ImapSession, uids: Sequence[int], asked_parts: str) -> Fetched:
        nonlocal asked
        if asked_parts == parts:
            asked += 1
            if asked == nth:
                action()
        return await fetch(self, uids, asked_parts)

    monkeypatch.setattr(ImapSession, "fetch", watched)
