"""Replies from Inbox+ (EMAIL SYNC): writing one, and filing the sent copy afterwards.

`reply_to_message` stores the reply in the thread as an OUTBOUND Message and queues it in the
outbox, in one transaction: the worker (services/loops/delivery.py) sends it through the mailbox's
own SMTP server, then `file_sent_copy` appends the very bytes it sent to the mailbox's Sent
folder. The queued row and the stored Message share one Message-ID, so when the sync later
reads that Sent folder it finds the copy as the message it already has (same key), and
stores nothing twice.

Providers such as Gmail and Office 365 file what their SMTP server sent in Sent themselves:
before the APPEND, `file_sent_copy` searches the Sent folder for the Message-ID (SEARCH HEADER
Message-ID) and, when the copy is there, appends nothing and counts the reply as filed. A
server that refuses the search gets the APPEND (a second copy rather than none). The stored
reply's delivery (its outbox row, QUEUED, SENT or FAILED with the server's reason) is shown on
the message (Message.delivery) and filters Inbox+ (inbox(deliveryStatus:)).

Choices where the issue is silent:
- The mailbox: the one the message came through, else the firm's mailbox whose address
  took part in the message, else the firm's first mailbox by address.
- The recipient: the sender of an INBOUND message (Reply-To is not stored, so it is not
  honoured), or the first To address of an OUTBOUND one that is not the firm's own. One
  recipient: reply-all is not offered.
- The text goes out as written (plain text), followed by the original's text quoted as
  mail programs do it. The stored reply holds that same text, as the Sent copy would.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from functools import partial

import aioimaplib
from tortoise.transactions import in_transaction

from models import Firm, Mailbox, Message, MessageAccount
from portico.settings import Settings
from services.mail import mailboxes, parse, store, threads
from services.mail.events import announce_message
from services.mail.imap import SENT, ImapSession, MailSyncError
from services.outbound import outbox
from services.outbound.transport import mentions, scrub
from services.shared.errors import ErrorCode, Forbidden, input_error
from services.shared.pubsub import EventBus
from services.shared.scope import FirmScope
from services.shared.wakeups import OUTBOX

log = logging.getLogger(__name__)

REPLY_KIND = outbox.REPLY_KIND  # OutboundEmail.kind of a reply, sent through a mailbox
MAX_BODY = 100_000  # characters the staff member may write
MAX_QUOTE = 100_000  # characters of the original quoted below the reply
FILE_TIMEOUT_SECONDS = 30.0  # the whole APPEND conversation
SEARCH_TIMEOUT_SECONDS = 10.0  # the look for a copy the provider filed itself (within it)
# "Re:" or the German "AW:" (also "Re[2]:") already there: no second prefix.
_REPLY_PREFIX = re.compile(r"^\s*(?:re|aw)\s*(?:\[\d+\])?\s*:", re.IGNORECASE)
# A Message-ID that can go into In-Reply-To and References as it is.
_MESSAGE_ID = re.compile(r"<[!-;=?-~]+>")


async def reply_to_message(
    scope: FirmScope,
    message_id: int | None,
    body: str,
    settings: Settings,
    bus: EventBus | None = None,
    *,
    reader: threads.Reader = threads.NOBODY,
) -> Message:
    """Stores the reply to message `message_id` in its thread and queues it for sending.

    Input errors (written nothing): INVALID_TEXT (empty or too long body), NOT_FOUND (no such
    message in this firm), NO_MAILBOX (the firm has none to send through), NO_RECIPIENT.
    FORBIDDEN when `reader` may not read the message (a private thread of someone else's).
    """
    text = _body(body)
    original = await scope.get(Message, message_id, "messageId")
    if reader.hides(original.private_to_id):  # the reply would quote what they may not read
        raise Forbidden("This message's thread is private to its mailbox's owner.")
    firm_boxes = await mailboxes.mailboxes(scope)
    mailbox = _mailbox_for(original, [b for b in firm_boxes if threads.sends_for(b, reader)])
    to = _recipient(original, {box.address_normalized for box in firm_boxes})
    account_ids = sorted(
        await scope.query(MessageAccount)
        .filter(message_id=original.pk)
        .values_list("account_id", flat=True)
    )
    firm = await Firm.get(pk=scope.firm_id)
    chain = reference_chain(original)
    headers = {"References": " ".join(chain)} if chain else {}
    if _MESSAGE_ID.fullmatch(original.message_id):
        headers["In-Reply-To"] = original.message_id
    new_id = outbox.new_message_id(settings, _domain(mailbox))
    if len(new_id) > outbox.MAX_MESSAGE_ID:  # an absurdly long domain: the platform's own
        new_id = outbox.new_message_id(settings)
    subject = outbox.header_text(reply_subject(original.subject))
    full_text = text + _quote(original)
    written = parse.ParsedMessage(
        message_id=new_id,
        message_key=parse.message_key(new_id),
        subject=subject,
        from_address=mailbox.address_normalized,
        to=[to.lower()],
        cc=[],
        sent_at=datetime.now(UTC),
        text_body=full_text,
        html_body=None,
        references=chain,
    )
    async with in_transaction():
        # OUTBOUND: it is from the mailbox's own address.
        # A reply in a private thread is as private as the message it answers.
        reply = store.message_row(
            scope,
            written,
            {mailbox.address_normalized},
            mailbox.pk,
            original.thread_key,
            private_to=original.private_to_id,
        )
        await reply.save()
        if account_ids:  # the thread's accounts (their links may all be gone meanwhile)
            await MessageAccount.bulk_create(store.link_rows(scope, reply, account_ids))
        await outbox.enqueue_written(
            firm_id=scope.firm_id,
            from_name=firm.name,
            to=to,
            subject=subject,
            text=full_text,
            kind=REPLY_KIND,
            message_id=new_id,
            settings=settings,
            # Account.deliveries lists the reply under the first account of the thread.
            account_id=account_ids[0] if account_ids else None,
            mailbox_id=mailbox.pk,
            thread_message_id=reply.pk,
            headers=headers,
        )
    OUTBOX.notify()  # committed now: the worker finds the row when it wakes
    log.info("reply %s to message %s queued through mailbox %s", reply.pk, original.pk, mailbox.pk)
    # The reply shows at once for staff watching the thread, as newly synced mail does.
    await announce_message(bus, scope.firm_id, reply.pk, account_ids)
    return reply


def reply_subject(subject: str) -> str:
    """'Re: ' before the original's subject, unless it starts with Re: or AW: already."""
    return subject if _REPLY_PREFIX.match(subject) else f"Re: {subject}".strip()


def reference_chain(original: Message) -> list[str]:
    """The reply's References: the original's chain, then the original, oldest first.

    Only well-formed ids (a message without a Message-ID header has none to refer to); a very
    long chain keeps its first id and the newest ones, as RFC 5322 suggests.
    """
    ids = _unique(
        i for i in [*original.references, original.message_id] if _MESSAGE_ID.fullmatch(i)
    )
    limit = parse.MAX_REFERENCES
    return ids if len(ids) <= limit else [ids[0], *ids[-(limit - 1) :]]


def _body(body: str) -> str:
    text = parse.clean_text(body).replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text or len(text) > MAX_BODY:
        raise input_error(
            ErrorCode.INVALID_TEXT, f"The reply must have 1 to {MAX_BODY} characters.", "body"
        )
    return text


def _mailbox_for(original: Message, firm_boxes: Sequence[Mailbox]) -> Mailbox:
    by_id = {box.pk: box for box in firm_boxes}
    if original.mailbox_id in by_id:
        return by_id[original.mailbox_id]
    participants = {original.from_address, *original.to_addresses, *original.cc_addresses}
    for box in firm_boxes:
        if box.address_normalized in participants:
            return box
    if firm_boxes:
        return firm_boxes[0]
    raise input_error(
        ErrorCode.NO_MAILBOX, "Connect a mailbox first: replies are sent through one.", "messageId"
    )


def _recipient(original: Message, own: set[str]) -> str:
    if original.direction == store.OUTBOUND:
        candidates = [a for a in original.to_addresses if a not in own]
    else:
        candidates = [original.from_address]
    for candidate in candidates:
        try:
            return outbox.header_safe_address(candidate)
        except ValueError:
            continue
    raise input_error(
        ErrorCode.NO_RECIPIENT, "The message has no address a reply could go to.", "messageId"
    )


def _quote(original: Message) -> str:
    """The original's text below the reply, each line after '> '."""
    text = (original.text_body or "").strip()
    if not text:
        return ""
    if len(text) > MAX_QUOTE:
        text = text[:MAX_QUOTE] + "\n[...]"
    lines = "\n".join(f"> {line}" if line else ">" for line in text.splitlines())
    when = outbox.readable_date(original.sent_at)
    return f"\n\nOn {when}, {original.from_address} wrote:\n{lines}"


def _domain(mailbox: Mailbox) -> str | None:
    """The mailbox's domain as it may stand in a Message-ID (ASCII), if it has one."""
    domain = mailbox.address_normalized.rpartition("@")[2]
    try:
        return domain.encode("idna").decode("ascii") or None
    except UnicodeError:
        return None


def _line(line: bytes | str) -> str:
    return line.decode(errors="replace") if isinstance(line, bytes) else str(line)


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


# Filing the sent copy -------------------------------------------------------------------------


async def file_sent_copy(settings: Settings, mailbox: Mailbox, message: EmailMessage) -> bool:
    """Appends `message` (as sent) to the mailbox's Sent folder, marked \\Seen.

    The folder is found as the sync finds it (SPECIAL-USE \\Sent, else a usual name); none is
    created. Never raises: the mail is sent whatever happens here, so a failure is logged
    and answered False.
    """
    raw = message.as_bytes(policy=policy.SMTP)  # CRLF line ends, as IMAP wants them
    password: str | None = None  # scrubbed from whatever a server answers
    try:
        password = mailboxes.mailbox_password(settings, mailbox)
        async with asyncio.timeout(FILE_TIMEOUT_SECONDS):
            session = await ImapSession.open(mailbox, password, settings)
            try:
                folder = dict(await session.folders()).get(SENT)
                if folder is None:
                    log.warning("mailbox %s has no Sent folder: reply not filed", mailbox.pk)
                    return False
                try:
                    async with asyncio.timeout(SEARCH_TIMEOUT_SECONDS):
                        message_id = str(message["Message-ID"] or "")
                        found = await _already_filed(session, folder, message_id)
                except TimeoutError:
                    # Better a second copy than none. Its late answer may yet come on this
                    # connection, so the APPEND goes over a fresh one.
                    log.warning("mailbox %s: the Sent search took too long", mailbox.pk)
                    found = False
                    await session.close()
                    session = await ImapSession.open(mailbox, password, settings)
                if found:
                    log.info("mailbox %s filed the reply in Sent itself: no APPEND", mailbox.pk)
                    return True
                response = await session.call(
                    "APPEND",
                    partial(session.client.append, raw, aioimaplib.quoted(folder), flags="\\Seen"),
                )
            finally:
                await session.close()
    except (MailSyncError, TimeoutError) as exc:
        reason = scrub(str(exc), password)
        log.warning("mailbox %s: could not file the reply in Sent: %s", mailbox.pk, reason)
        return False
    except Exception as exc:  # a bug, or a password that no longer decrypts
        if mentions(exc, password):  # no traceback that shows the password
            reason = scrub(f"{type(exc).__name__}: {exc}", password)
            log.error("mailbox %s: could not file the reply in Sent: %s", mailbox.pk, reason)
        else:
            log.exception("mailbox %s: could not file the reply in Sent", mailbox.pk)
        return False
    if response.result != "OK":
        answer = scrub(" ".join(_line(line) for line in response.lines[-1:]), password)
        log.warning("mailbox %s refused to file the reply: %s", mailbox.pk, answer)
        return False
    return True


async def _already_filed(session: ImapSession, folder: str, message_id: str) -> bool:
    """Whether the Sent folder holds a message with this Message-ID already: providers such
    as Gmail and Office 365 file what their SMTP server sent themselves, and a second copy
    from the APPEND would show twice in the staff member's mail program.

    The folder is SELECTed (aioimaplib's EXAMINE leaves the client unselected, so its SEARCH
    would be refused; a SEARCH changes no flag either way). A server that refuses the SELECT
    or the SEARCH answers False: better a second copy than none. A MailSyncError (the
    connection is gone) is raised, as for the APPEND itself.
    """
    if not _MESSAGE_ID.fullmatch(message_id):
        return False  # nothing a search could match exactly
    opened = await session.call(
        f"SELECT {folder}", partial(session.client.select, aioimaplib.quoted(folder))
    )
    if opened.result != "OK":
        log.warning("could not open %s to look for %s: %s", folder, message_id, opened.result)
        return False
    criteria = ("HEADER", "Message-ID", aioimaplib.quoted(message_id))
    found = await session.call(
        "UID SEARCH", partial(session.client.uid_search, *criteria, charset=None)
    )
    if found.result != "OK":
        log.warning("could not search %s for %s: %s", folder, message_id, found.result)
        return False
    # aioimaplib gives the untagged answer's UIDs without "* SEARCH"; none: an empty line.
    return any(isinstance(line, bytes) and re.search(rb"\d", line) for line in found.lines[:-1])
