"""An outbox row as the bytes SMTP carries, written directly (no email.message objects).

transport.build_message makes an EmailMessage through the email package's header registry
and content manager: about 3 ms a message, most of what a worker spent per mail. The
platform's own mail always has one shape, so `build_wire` writes it by hand in a few tens of
microseconds:

- headers From, To, Subject, Message-ID, Date, MIME-Version, Content-Type; a display name
  or subject that is not plain ASCII (non-ASCII, "=?", or a word too long to fold) as RFC
  2047 encoded words of at most 75 characters, folded (email.header.Header), else as it is
  (a name quoted by email.utils.formataddr), folded at spaces but never before its first
  word; PORTICO_MAIL_FROM's domain in its IDNA form (platform_sender);
- the text part, then the HTML part (multipart/alternative; the text alone when there is no
  HTML), each UTF-8 in quoted-printable: 7-bit safe for any server (no 8BITMIME needed), and
  the boundary starts with "=_", which quoted-printable can never contain;
- the same validation as build_message: a To that is not one valid address, or a local part
  that needs SMTPUTF8, is a PermanentFailure; a row with extra headers (a reply's threading)
  goes through build_message instead (transport.outgoing_message), whose folding of long
  References is the email package's.

`from_email` turns an EmailMessage (a reply, which is also filed in the Sent folder as
sent) into the same WireMessage, flattened as aiosmtplib would: 8-bit parts kept only when
the server offers 8BITMIME.
"""

from __future__ import annotations

import binascii
import functools
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.errors import HeaderParseError
from email.generator import BytesGenerator
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, getaddresses
from io import BytesIO

from models import OutboundEmail
from portico.settings import Settings
from services.outbound.failures import PermanentFailure
from services.outbound.outbox import Bodies, header_text, sender_address

# Longest header line written unfolded (RFC 5322 asks for 78 at most where possible).
FOLD_AT = 78
# A longer word cannot be folded to FOLD_AT: such a text goes as RFC 2047 encoded words.
LONGEST_WORD = 76
# A dot-atom local part at a domain of letters, digits and hyphens: an address that the
# email package's parser takes without a defect (anything else is left to the parser, which
# costs about 30 µs).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


@dataclass(frozen=True)
class WireMessage:
    """One message ready for SMTP: its envelope and its bytes (CRLF line ends)."""

    sender: str  # MAIL FROM
    recipient: str  # RCPT TO
    message_id: str
    data: bytes
    row_id: int | None = None  # the outbox row (the file transport's file name)
    eight_bit: bool = False  # has 8-bit body parts: BODY=8BITMIME


def ascii_address(address: str) -> str:
    """The address as SMTP without the SMTPUTF8 extension carries it: an IDNA domain.

    A non-ASCII local part (jörg@…) has no ASCII form: the mail fails with that reason
    rather than leaving with a mangled address.
    """
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        raise PermanentFailure(
            f"{address} has non-ASCII characters before the @, which needs SMTPUTF8; "
            "Portico does not send such mail yet"
        )
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError as exc:
        raise PermanentFailure(f"{address}: the domain has no ASCII form ({exc})") from exc


def platform_sender(settings: Settings) -> str:
    """PORTICO_MAIL_FROM's address as SMTP carries it (an IDNA domain); a ValueError when it
    has no ASCII form: a configuration error, which run_worker refuses at its start."""
    return _ascii_sender(sender_address(settings))


@functools.lru_cache(maxsize=8)
def _ascii_sender(address: str) -> str:
    try:
        return ascii_address(address)
    except PermanentFailure as exc:
        raise ValueError(f"PORTICO_MAIL_FROM: {exc}") from None


def recipient_address(address: str) -> str:
    """`address` in ASCII, checked as build_message checks its To (one valid address)."""
    ascii_form = ascii_address(address)
    if _PLAIN_ADDRESS.fullmatch(ascii_form):  # the usual form, valid for the parser too
        return ascii_form
    try:
        Address(addr_spec=ascii_form)
    except (ValueError, HeaderParseError) as exc:  # the parser's defects are ValueErrors
        raise PermanentFailure(f"{address} is not a valid address: {exc}") from exc
    return ascii_form


def build_wire(
    row: OutboundEmail, bodies: Bodies, settings: Settings, date: datetime | None = None
) -> WireMessage:
    """The platform's own mail for `row` (From: PORTICO_MAIL_FROM's address with the row's
    name) as it goes out; the same message build_message makes, written directly."""
    if row.headers:
        raise ValueError("a row with extra headers goes through build_message")
    sender = platform_sender(settings)
    recipient = recipient_address(row.to_address)
    lines = [
        _address_header("From", header_text(row.from_name), sender),
        b"To: " + recipient.encode("ascii"),
        _text_header("Subject", header_text(row.subject)),
        b"Message-ID: " + row.message_id.encode("ascii"),
        b"Date: " + format_datetime(date or datetime.now(UTC)).encode("ascii"),
        b"MIME-Version: 1.0",
    ]
    if bodies.html:
        boundary = b"=_" + secrets.token_hex(12).encode("ascii")
        lines += [
            b'Content-Type: multipart/alternative; boundary="' + boundary + b'"',
            b"",
            b"--" + boundary,
            *_text_part("plain", bodies.text),
            b"--" + boundary,
            *_text_part("html", bodies.html),
            b"--" + boundary + b"--",
            b"",
        ]
    else:
        lines += _text_part("plain", bodies.text)
    return WireMessage(sender, recipient, row.message_id, b"\r\n".join(lines), row.pk)


def from_email(message: EmailMessage, *, eight_bit: bool) -> WireMessage:
    """An EmailMessage as it goes out: its From and To as the envelope, flattened with CRLF;
    8-bit parts kept only when `eight_bit` (the server offers 8BITMIME), as aiosmtplib does."""
    [(_, sender)] = getaddresses([str(message["From"])])
    [(_, recipient)] = getaddresses([str(message["To"])])
    flat = policy.SMTP if eight_bit else policy.SMTP.clone(cte_type="7bit")
    with BytesIO() as out:
        BytesGenerator(out, policy=flat).flatten(message)
        data = out.getvalue()
    return WireMessage(
        sender=sender,
        recipient=recipient,
        message_id=str(message["Message-ID"] or ""),
        data=data,
        row_id=getattr(message, "row_id", None),
        eight_bit=eight_bit and not data.isascii(),
    )


def _address_header(name: str, display_name: str, address: str) -> bytes:
    if not display_name:
        return f"{name}: {address}".encode("ascii")
    if _plain(display_name):  # formataddr quotes it if it has specials (, . " \ …)
        return _fold(name, formataddr((display_name, address)))
    words = _encoded_words(name, display_name)
    last = words.rpartition("\r\n")[2]
    space = "\r\n " if len(last) + len(address) + 3 > FOLD_AT else " "
    return f"{name}: {words}{space}<{address}>".encode("ascii")


def _text_header(name: str, text: str) -> bytes:
    if _plain(text):
        return _fold(name, text)
    return f"{name}: {_encoded_words(name, text)}".encode("ascii")


def _plain(text: str) -> bool:
    """Whether `text` can be written as it is: ASCII, nothing that would read as an encoded
    word ("=?"), and no word too long to fold."""
    return (
        text.isascii()
        and "=?" not in text
        and all(len(word) <= LONGEST_WORD for word in text.split(" "))
    )


def _encoded_words(name: str, text: str) -> str:
    """RFC 2047 encoded words of at most 75 characters, folded (CRLF and a space): the
    default 78 lets base64 words reach 76."""
    return Header(text, "utf-8", maxlinelen=76, header_name=name).encode(linesep="\r\n")


def _fold(name: str, value: str) -> bytes:
    """`name: value` (ASCII) folded at spaces to FOLD_AT where it can be; never before the
    first word, which would read back with a leading space."""
    line = f"{name}: {value}"
    if len(line) <= FOLD_AT:
        return line.encode("ascii")
    first, *words = value.split(" ")
    folded: list[str] = []
    current = f"{name}: {first}"
    for word in words:
        if len(current) + 1 + len(word) > FOLD_AT and current.strip():
            folded.append(current)
            current = " " + word
        else:
            current = f"{current} {word}"
    folded.append(current)
    return "\r\n".join(folded).encode("ascii")


def _text_part(subtype: str, text: str) -> list[bytes]:
    # Line ends as set_content leaves them: \n after every line (CRLF once encoded).
    body = b"".join(line + b"\n" for line in text.encode("utf-8").splitlines())
    encoded = binascii.b2a_qp(body, istext=True).replace(b"\n", b"\r\n")
    return [
        f'Content-Type: text/{subtype}; charset="utf-8"'.encode("ascii"),
        b"Content-Transfer-Encoding: quoted-printable",
        b"",
        encoded,  # ends with its line break; before a boundary, one more (RFC 2046)
    ]
