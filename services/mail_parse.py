"""Reading synced mail: raw RFC 5322 bytes to the fields Portico stores (EMAIL SYNC).

Parsing never raises for a malformed message: every field falls back to what could be read
(a missing Message-ID becomes a stable hash of date, sender and subject; a missing or broken
Date becomes "now"; an unknown charset is decoded as UTF-8, then Windows-1252, then Latin-1).
Every string is made storable: no NUL (PostgreSQL refuses it in text) and no lone surrogates
(undeclared 8-bit header bytes are read as UTF-8 where they are UTF-8).

HTML bodies are stored as received; `sanitize_html` is for the moment one is returned.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime

import nh3

MAX_ADDRESS = 254  # RFC 5321's limit and the column's
MAX_MESSAGE_ID = 998  # the column's
MAX_BODY_CHARS = 1_000_000  # per body (text, HTML): a bigger one is cut, the rest is dropped
MAX_SUBJECT_CHARS = 2_000
MAX_REFERENCES = 100  # a References header of a very long thread keeps its oldest entries

_PARSER = BytesParser(policy=policy.default)
_MSG_ID = re.compile(r"<[^<>\s]+>")
_ADDRESS_JUNK = re.compile(r"[\s<>(),;:\"\[\]\\]")
# Reply and forward prefixes, repeated or numbered ("Re[2]:"), in English and German.
_SUBJECT_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|aw|wg)\s*(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedMessage:
    message_id: str  # the Message-ID header (<...>), or "sha256:..." when it is missing
    message_key: str  # SHA-256 of message_id: the per-firm unique key
    subject: str
    from_address: str  # bare, lower-cased; "" when unreadable
    to: list[str]
    cc: list[str]
    sent_at: datetime  # aware (UTC when the header had no zone); now when missing
    text_body: str | None
    html_body: str | None
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    from_addresses: list[str] = field(default_factory=list)  # all of From (usually one)

    @property
    def participants(self) -> list[str]:
        """From, To and Cc: bare lower-cased addresses, each once, in that order."""
        return _unique([*self.from_addresses, *self.to, *self.cc])

    @property
    def reference_chain(self) -> list[str]:
        """The Message-IDs this one answers, oldest first (References, then In-Reply-To)."""
        return _unique([*self.references, *self.in_reply_to])


def parse_message(raw: bytes, now: datetime | None = None) -> ParsedMessage:
    """Everything Portico keeps of one message; never raises for a malformed message."""
    msg = _PARSER.parsebytes(raw)
    from_addresses = addresses(msg, "From")
    subject = _header(msg, "Subject")[:MAX_SUBJECT_CHARS]
    date_raw = _header(msg, "Date")
    parsed_date = _date(msg, date_raw)
    sent_at = parsed_date or (now or datetime.now(UTC))
    message_id = _message_id(_header(msg, "Message-ID"))
    if message_id is None:
        # Stable across copies of the message (INBOX, Sent, another mailbox): a hash of what
        # every copy carries. A missing Date hashes as empty, never as "now".
        date_part = parsed_date.astimezone(UTC).isoformat() if parsed_date else date_raw.strip()
        sender = from_addresses[0] if from_addresses else _header(msg, "From").strip()
        digest = hashlib.sha256(f"{date_part}\n{sender}\n{subject}".encode()).hexdigest()
        message_id = f"sha256:{digest}"
    text_body, html_body = _bodies(msg)
    return ParsedMessage(
        message_id=message_id[:MAX_MESSAGE_ID],
        message_key=message_key(message_id),
        subject=subject,
        from_address=from_addresses[0] if from_addresses else "",
        to=addresses(msg, "To"),
        cc=addresses(msg, "Cc"),
        sent_at=sent_at,
        text_body=text_body,
        html_body=html_body,
        in_reply_to=_MSG_ID.findall(_header(msg, "In-Reply-To"))[:MAX_REFERENCES],
        references=_MSG_ID.findall(_header(msg, "References"))[:MAX_REFERENCES],
        from_addresses=from_addresses,
    )


def parse_participants(raw_headers: bytes) -> list[str]:
    """From, To and Cc of a header block (a FETCH of those fields), as `participants`."""
    msg = _PARSER.parsebytes(raw_headers, headersonly=True)
    return _unique([*addresses(msg, "From"), *addresses(msg, "To"), *addresses(msg, "Cc")])


def message_key(message_id: str) -> str:
    return hashlib.sha256(message_id.encode()).hexdigest()


def normalize_subject(subject: str) -> str:
    """The subject without Re:/Fwd:/AW:/WG: prefixes, whitespace collapsed, case folded."""
    return " ".join(_SUBJECT_PREFIX.sub("", subject).split()).casefold()


def subject_thread_key(subject: str, participants: Iterable[str]) -> str:
    """The thread of a message with no known ancestor: same subject, same people."""
    people = ",".join(sorted(set(participants)))
    return hashlib.sha256(f"subject\n{normalize_subject(subject)}\n{people}".encode()).hexdigest()


def sanitize_html(html: str) -> str:
    """HTML safe to hand to a browser: no scripts, styles, event handlers or javascript: URLs;
    links get rel="noopener noreferrer"."""
    return nh3.clean(html)


# Headers -----------------------------------------------------------------------------------


def clean_text(value: str) -> str:
    """`value` storable anywhere: undeclared 8-bit bytes read as UTF-8 (else replaced), no NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        try:
            value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:  # a lone surrogate that is no escaped byte: replaced
            value = value.encode("utf-8", "replace").decode("utf-8")
    return value.replace("\x00", "")


def _header(msg: EmailMessage, name: str) -> str:
    """The decoded header (RFC 2047 words decoded), its raw text when decoding fails, or ""."""
    try:
        value = msg.get(name)
        return clean_text(str(value)) if value is not None else ""
    except Exception:  # the header parser has crashed on hostile input before: keep the raw
        return clean_text(" ".join(v for k, v in msg.raw_items() if k.lower() == name.lower()))


def addresses(msg: EmailMessage, name: str) -> list[str]:
    """Bare lower-cased addresses of every `name` header; the malformed ones are left out."""
    found: list[str] = []
    try:
        for value in msg.get_all(name) or ():
            found.extend(a.addr_spec for a in value.addresses)
    except Exception:
        raw = [v for k, v in msg.raw_items() if k.lower() == name.lower()]
        found = [address for _, address in getaddresses([str(v) for v in raw])]
    return _unique(a for a in (_bare(v) for v in found) if a)


def _bare(address: str) -> str | None:
    value = clean_text(address).strip().strip("<>").strip().lower()
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or len(value) > MAX_ADDRESS:
        return None
    if _ADDRESS_JUNK.search(value):
        return None
    return value


def _message_id(value: str) -> str | None:
    match = _MSG_ID.search(value)
    if match:
        return match.group(0)
    value = value.strip()
    if value and not any(c.isspace() for c in value):
        return f"<{value.strip('<>')}>"  # a bare id (no angle brackets): the same id
    return None


def _date(msg: EmailMessage, raw: str) -> datetime | None:
    value: datetime | None = None
    try:
        header = msg.get("Date")
        value = getattr(header, "datetime", None)
    except Exception:
        value = None
    if value is None and raw:
        try:
            value = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            value = None
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# Bodies ------------------------------------------------------------------------------------


def _bodies(msg: EmailMessage) -> tuple[str | None, str | None]:
    return _body(msg, "plain"), _body(msg, "html")


def _body(msg: EmailMessage, subtype: str) -> str | None:
    try:
        part = msg.get_body(preferencelist=(subtype,))
    except Exception:
        part = None
    if part is None:
        part = _walk_for(msg, subtype)
    if part is None:
        return None
    text = _part_text(part)
    return text[:MAX_BODY_CHARS] if text is not None else None


def _walk_for(msg: EmailMessage, subtype: str) -> EmailMessage | None:
    """The first text/`subtype` part that is not an attachment (when get_body gives up)."""
    try:
        for part in msg.walk():
            if (
                part.get_content_type() == f"text/{subtype}"
                and part.get_content_disposition() != "attachment"
            ):
                return part
    except Exception:
        return None
    return None


def _part_text(part: EmailMessage) -> str | None:
    try:
        content = part.get_content()
        if isinstance(content, str):
            return clean_text(content)
    except Exception:  # unknown charset, broken transfer encoding, ...
        pass
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if not isinstance(payload, bytes):
        return None
    return clean_text(_decode(payload, part.get_content_charset()))


def _decode(payload: bytes, charset: str | None) -> str:
    if charset:
        try:
            return payload.decode(charset, "replace")
        except (LookupError, ValueError):
            pass  # an unknown or bogus charset name
    for guess in ("utf-8", "windows-1252"):
        try:
            return payload.decode(guess)
        except UnicodeDecodeError:
            continue
    return payload.decode("latin-1")


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
