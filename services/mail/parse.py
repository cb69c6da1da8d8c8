"""Reading synced mail: raw RFC 5322 bytes to the fields Portico stores (EMAIL SYNC).

Parsing never raises for a malformed message: every field falls back to what could be read
(a missing Message-ID becomes a stable hash of date, sender and subject; a missing or broken
Date becomes "now"; an unknown charset is decoded as UTF-8, then Windows-1252, then Latin-1).
Every string is made storable: no NUL (PostgreSQL refuses it in text) and no lone surrogates
(undeclared 8-bit header bytes are read as UTF-8 where they are UTF-8).

HTML bodies are stored as received; `sanitize_html` is for the moment one is returned.

Headers are read as `email.policy.default` reads them, the plain forms most mail uses without
its slow header parser (see "Reading headers fast"): the same results, several times faster.

Attachments: every part sent as an attachment, or carrying a file name (inline ones too), with
its decoded name (RFC 2231 and RFC 2047), type, size and bytes. Bodies (text and HTML parts
without a name) are no attachments. Only the bytes worth keeping are held: a part over
`max_attachment_bytes` keeps its size and drops its content, and a part that cannot be decoded
is listed as unreadable, never raised.
"""

from __future__ import annotations

import email.feedparser
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email import _encoded_words
from email._header_value_parser import quote_string
from email.contentmanager import get_text_content, raw_data_manager
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from email.utils import (
    _has_surrogates,
    _sanitize,
    format_datetime,
    getaddresses,
    parsedate_to_datetime,
)
from typing import Any
from urllib.parse import unquote_to_bytes

import nh3

from services.mail import mime_split

MAX_ADDRESS = 254  # RFC 5321's limit and the column's
MAX_MESSAGE_ID = 998  # the column's
MAX_BODY_CHARS = 1_000_000  # per body (text, HTML): a bigger one is cut, the rest is dropped
MAX_SUBJECT_CHARS = 2_000
MAX_REFERENCES = 100  # a References header of a very long thread keeps its oldest entries
MAX_ATTACHMENTS = 200  # per message: the rest of a hostile message's thousands of parts is left
MAX_PARTS = 2_000  # MIME parts looked at per message, however deeply nested
MAX_FILENAME_CHARS = 1_000  # cut to 255 where stored, from the front (the extension stays)
MAX_CONTENT_TYPE = 127  # the column's

_MSG_ID = re.compile(r"<[^<>\s]+>")
_ADDRESS_JUNK = re.compile(r"[\s<>(),;:\"\[\]\\]")
# Reply and forward prefixes, repeated or numbered ("Re[2]:"), in English and German.
_SUBJECT_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|aw|wg)\s*(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedAttachment:
    filename: str  # decoded as sent (may hold a path or be ""): made safe where it is stored
    content_type: str  # lower-cased, as declared
    size: int  # decoded bytes (0 when unreadable)
    content: bytes | None  # None when over the size limit or unreadable
    unreadable: bool = False  # the part could not be decoded at all


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
    attachments: list[ParsedAttachment] = field(default_factory=list)
    # Why the content (bodies, attachments) is not kept, e.g. a message over the size limit
    # read from its headers alone; None: kept as parsed.
    content_skipped: str | None = None
    # Each Authentication-Results header (RFC 8601), topmost first: its authserv-id
    # (lower-cased) and its DMARC result ("pass", "fail", ... lower-cased; None: no dmarc).
    authentication_results: list[tuple[str, str | None]] = field(default_factory=list)

    def sender_auth(self, serv_id: str | None) -> str | None:
        """ "PASS" or "FAIL" as the receiving server reported DMARC, else None: the topmost
        header of authserv-id `serv_id`, or with None the topmost header (the last server the
        message reached added it; a sender can only add headers below it)."""
        wanted = serv_id.strip().lower() if serv_id is not None else None
        for authserv_id, dmarc in self.authentication_results:
            if wanted is None or authserv_id == wanted:
                return {"pass": "PASS", "fail": "FAIL"}.get(dmarc or "")
        return None

    @property
    def participants(self) -> list[str]:
        """From, To and Cc: bare lower-cased addresses, each once, in that order."""
        return _unique([*self.from_addresses, *self.to, *self.cc])

    @property
    def reference_chain(self) -> list[str]:
        """The Message-IDs this one answers, oldest first (References, then In-Reply-To)."""
        return _unique([*self.references, *self.in_reply_to])


def parse_message(
    raw: bytes, now: datetime | None = None, *, max_attachment_bytes: int | None = None
) -> ParsedMessage:
    """Everything Portico keeps of one message; never raises for a malformed message.

    Attachments bigger than `max_attachment_bytes` (when given) are listed without content.
    The email package's reading of any message (services/mail/quick_parse.py reads the
    common shapes of mail faster, to the same answer)."""
    msg: Any = mime_split.split(raw, _POLICY, _Split)
    if msg is None:
        msg = _PARSER.parsebytes(raw)
    text_body, html_body = _bodies(msg)
    return parsed_message(msg, now, text_body, html_body, _attachments(msg, max_attachment_bytes))


def parsed_message(
    msg: Any,
    now: datetime | None,
    text_body: str | None,
    html_body: str | None,
    attachments: list[ParsedAttachment],
) -> ParsedMessage:
    """The message whose headers `msg` holds, with these bodies and attachments."""
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
        attachments=attachments,
        authentication_results=authentication_results(msg),
    )


def parse_participants(raw_headers: bytes) -> list[str]:
    """From, To and Cc of a header block (a FETCH of those fields), as `participants`."""
    msg: Any = mime_split.split_headers(raw_headers, _POLICY, _Split)
    if msg is None:
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
    raw = _raw_values(msg, name.lower())
    key = tuple(raw) if all(type(v) is str for v in raw) else None
    known = _ADDRESSES_READ.get(key) if key is not None else None
    if known is not None:
        return list(known)
    plain = [_plain_addresses(_unfold(v)) if isinstance(v, str) else None for v in raw]
    found: list[str] = []
    if all(p is not None for p in plain):  # the registry would read just these
        for p in plain:
            found.extend(p or ())
        bare = _unique(a for a in (_bare(v) for v in found) if a)
        # Plain values alone decide the answer: kept for the next message from or to them
        # (the header FETCH and the whole message read the same fields).
        if key is not None and sum(map(len, key)) <= _READ_KEPT_CHARS:
            if len(_ADDRESSES_READ) >= _READ_KEPT:
                _ADDRESSES_READ.clear()
            _ADDRESSES_READ[key] = tuple(bare)
        return bare
    try:
        for value in msg.get_all(name) or ():
            found.extend(a.addr_spec for a in value.addresses)
    except Exception:
        found = [address for _, address in getaddresses([str(v) for v in raw])]
    return _unique(a for a in (_bare(v) for v in found) if a)


def _raw_values(msg: Any, wanted: str) -> list[Any]:
    """The values of every header named `wanted` (lower-case), in order, as stored."""
    if type(msg) is _Split:
        return msg._by_name().get(wanted, [])
    return [v for k, v in msg.raw_items() if k.lower() == wanted]


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


# Reading headers fast ------------------------------------------------------------------------
#
# policy.default builds a header object with its own slow parser each time a header is read,
# and the email package reads each part's Content-Type many times over. `_Policy` is
# policy.default with one change: the value of a header Portico reads, when it is in one of the
# plain forms nearly all mail uses, is answered by `_Plain`: a string equal to the registry's
# header object (the same text: encoded words decoded, MIME parameters normalised), read with a
# regular expression. Any other value, and every other header, is read by the registry itself,
# so a message parses exactly as with policy.default (checked against it on mutated and
# generated mail); only the common case is fast. The forms accepted are those for which the
# registry's answer is known; `addresses` reads plain From/To/Cc the same way.

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"  # RFC 5322 atext
_DOT_ATOM = rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*"
# An encoded word the registry decodes as a whole, whatever follows it: no "?" in the text, and
# no "=" opening it unless an escape ("=C3") follows (the registry's own reading of "?=").
_EW = r"=\?[^?\s*]+(?:\*[^?\s]*)?\?[bBqQ]\?(?:=[0-9A-Fa-f]{2}[^?\s]*|[^=?\s][^?\s]*)?\?="
_EW_WORD = re.compile(_EW)
# Whitespace the registry treats as folding whitespace next to an encoded word, besides SP/TAB.
_OTHER_SPACE = re.compile(r"[\x0b\x0c\x1c-\x1f]")
_MESSAGE_ID = re.compile(rf"<{_DOT_ATOM}@{_DOT_ATOM}>")
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # RFC 2045 token
_ATTRIBUTE = r"[!#$&+\-.^_`|~0-9A-Za-z]+"  # a token without "*", "'" and "%"
_VALUE = r"[!#$%&+\-.^_`|~0-9A-Za-z]+"  # a token without "*" and "'"
_QUOTED = r'"[ !#-\[\]-~]*"'  # printable ASCII, no quote, no backslash (no "=?", checked)
# A parameter: name=token, name="quoted", or an RFC 2231 value in a charset whose decoding
# cannot fail (no continuations: name*0*=...).
_PARAMETER = (
    rf"[ \t]*;[ \t]*(?:({_ATTRIBUTE})=(?:({_VALUE})|\"([ !#-\[\]-~]*)\")"
    rf"|({_ATTRIBUTE})\*=((?i:utf-8|us-ascii|iso-8859-1|iso-8859-15|windows-1252))"
    r"'[A-Za-z0-9\-]*'((?:[!#$&+\-.^_`|~0-9A-Za-z]|%[0-9A-Fa-f]{2})+))"
)
_PARAMETER_AT = re.compile(_PARAMETER)
_PARAMETERS = rf"(?:{_PARAMETER})*(?:[ \t]*;)?[ \t]*"
_CONTENT_TYPE = re.compile(rf"[ \t]*{_TOKEN}/{_TOKEN}[ \t]*({_PARAMETERS})")
_DISPOSITION = re.compile(rf"[ \t]*({_TOKEN})[ \t]*({_PARAMETERS})")
_ENCODING = re.compile(rf"[ \t]*{_TOKEN}[ \t]*")
# One mailbox: addr-spec, or a phrase (atoms, dots, quoted strings, encoded words) and <addr-spec>.
# Encoded words in a phrase: only characters that cannot end a word or a mailbox.
_EW_SAFE = r"A-Za-z0-9!#$%&'*+/=^_`{|}~.\-"
_EW_NAME = (
    r"=\?[A-Za-z0-9!#$%&'+^_`{|}~.\-]+(?:\*[A-Za-z0-9\-]*)?\?[bBqQ]\?"
    rf"(?:=[0-9A-Fa-f]{{2}}[{_EW_SAFE}]*|[{_EW_SAFE.replace('=', '')}][{_EW_SAFE}]*)?\?="
)
_EW_ALONE = re.compile(rf"(?:(?<=[ \t,])|^){_EW_NAME}(?=[ \t<])")
_ADDR_SPEC = rf"({_DOT_ATOM}@{_DOT_ATOM})"
_PHRASE_WORD = rf"(?:[{_ATEXT}][{_ATEXT}.]*|{_QUOTED})"  # encoded words are such atoms
_MAILBOX = rf"(?:{_ADDR_SPEC}|{_PHRASE_WORD}(?:[ \t]+{_PHRASE_WORD})*[ \t]*<{_ADDR_SPEC}>)"
_MAILBOX_LIST = re.compile(rf"[ \t]*{_MAILBOX}(?:[ \t]*,[ \t]*{_MAILBOX})*[ \t]*")
_MAILBOX_ITEM = re.compile(rf"[ \t]*{_MAILBOX}[ \t]*(?:,|\Z)")


class _Plain(str):
    """A header value as the registry's header object gives it (`str` of it), read without the
    registry's parser; any other attribute comes from that object, built on first use."""

    def __new__(cls, text: str, name: str, value: str, **attributes: Any) -> _Plain:
        self = super().__new__(cls, _sanitize(text) if _has_surrogates(text) else text)
        self.__dict__.update(attributes, _name=name, _value=value)
        return self

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__") or attribute in ("_name", "_value", "_real"):
            raise AttributeError(attribute)
        real = self.__dict__.get("_real")
        if real is None:
            real = self.__dict__["_real"] = _REGISTRY(self._name, self._value)
        return getattr(real, attribute)


def _unstructured(name: str, value: str) -> _Plain | None:
    """Subject and the like: the text with its RFC 2047 words decoded, the whitespace between
    two encoded words dropped, as `email._header_value_parser.get_unstructured` reads it."""
    if "=?" not in value:
        return _Plain(value, name, value)
    if _OTHER_SPACE.search(value):
        return None
    out: list[str] = []
    space = ""  # whitespace after the last encoded word, dropped when another one follows
    after_word = False
    for chunk in re.split(r"([ \t]+)", value):
        if not chunk:
            continue
        if chunk[0] in " \t":
            if after_word:
                space = chunk
            else:
                out.append(chunk)
            continue
        if "=?" not in chunk:
            out.append(space)
            out.append(chunk)
            space, after_word = "", False
            continue
        if not _EW_WORD.fullmatch(chunk):
            return None
        try:
            text = _encoded_words.decode(chunk)[0]
        except Exception:  # the registry reads such a word another way: let it
            return None
        out.append(text)
        space, after_word = "", True
    out.append(space)
    try:
        return _Plain("".join(out), name, value)
    except UnicodeError:  # a lone surrogate decoded: the registry raises, let it
        return None


def _message_id_header(name: str, value: str) -> _Plain | None:
    return _Plain(value, name, value) if _MESSAGE_ID.fullmatch(value) else None


def _content_type(name: str, value: str) -> _Plain | None:
    match = _CONTENT_TYPE.fullmatch(value) if "=?" not in value else None
    read = _with_parameters(value, match.start(1)) if match else None
    return _Plain(read[0], name, value, _params=read[1]) if read is not None else None


def _content_disposition(name: str, value: str) -> _Plain | None:
    match = _DISPOSITION.fullmatch(value) if "=?" not in value else None
    read = _with_parameters(value, match.start(2)) if match else None
    if read is None:
        return None
    return _Plain(read[0], name, value, _params=read[1], content_disposition=match.group(1).lower())


def _with_parameters(
    value: str, start: int
) -> tuple[str, tuple[tuple[str, str], ...] | None] | None:
    """A MIME header as the registry gives it: the type as sent, then the parameters decoded
    (RFC 2231), quoted and joined by "; " (`MimeParameters.__str__`); with what
    `Message._get_params_preserve` reads back from that text, where it is simple to state
    (see `_params_read_back`), else None."""
    if ";" not in value[start:]:
        return value, ((value.strip(), ""),)
    head = value[: value.index(";", start)]
    parameters: dict[str, str] = {}
    at = start
    while (match := _PARAMETER_AT.match(value, at)) is not None:
        at = match.end()
        name, token, quoted, extended, charset, encoded = match.groups()
        if name is None:
            name, text = extended, unquote_to_bytes(encoded).decode(charset, "surrogateescape")
        else:
            text = token if token is not None else quoted
        if name in parameters:  # the registry has its own ways with repeated names
            return None
        parameters[name] = text
    joined = "; ".join(f"{k}={quote_string(v)}" if v else k for k, v in parameters.items())
    return f"{head};{' ' + joined if joined else ''}", _params_read_back(head, parameters)


def _params_read_back(head: str, parameters: dict[str, str]) -> tuple[tuple[str, str], ...] | None:
    """The (name, quoted value) list the email package's `_parseparam` and `decode_params`
    make of the text above: the type first, names lower-cased where a value follows, each
    value quoted. None where its quoting rules come in (a quote or backslash in a value, a
    lone surrogate that `_Plain` replaces) or no parameter was read (a stray ";")."""
    if not parameters:
        return None
    read = [(head.strip(), "")]
    for name, text in parameters.items():
        if '"' in text or "\\" in text or _has_surrogates(text):
            return None
        read.append((name.lower(), f'"{text}"') if text else (name, '""'))
    return tuple(read)


def _transfer_encoding(name: str, value: str) -> _Plain | None:
    return _Plain(value, name, value) if _ENCODING.fullmatch(value) else None


def _date_header(name: str, value: str) -> _Plain | None:
    """As `email.headerregistry.DateHeader` reads it."""
    if not value:
        return _Plain("", name, value, datetime=None)
    try:
        read = _rfc5322_date(value)
        if read is not None:
            return _Plain(read[1], name, value, datetime=read[0])
        when = parsedate_to_datetime(value)
    except ValueError:
        return _Plain(value, name, value, datetime=None)
    except Exception:  # the registry raises: let it
        return None
    return _Plain(format_datetime(when), name, value, datetime=when)


# The date as RFC 5322 writes it ("Thu, 1 Jan 2026 00:03:00 +0000"), nearly every Date header.
_DATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{1,2}) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([1-9][0-9]{3}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBERS = {name: number for number, name in enumerate(_MONTHS, 1)}
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _rfc5322_date(value: str) -> tuple[datetime, str] | None:
    """`parsedate_to_datetime(value)` and `format_datetime` of it, for a date in the form
    above, without their general parser and strftime; None for any other form. Raises
    ValueError where they raise it (no such day, an offset of a day or more)."""
    match = _DATE.fullmatch(value)
    if match is None:
        return None
    day, month, year, hour, minute, second, sign, zone_h, zone_m = match.groups()
    zone, zone_text = _ZONES.get(sign + zone_h + zone_m) or _zone(sign, zone_h, zone_m)
    when = datetime(
        int(year), _MONTH_NUMBERS[month], int(day), int(hour), int(minute), int(second), tzinfo=zone
    )
    weekday = _WEEKDAYS[when.weekday()]
    if len(day) == 2 and value.startswith(weekday) and value.endswith(zone_text):
        return when, value  # written as format_datetime writes it
    text = f"{weekday}, {when.day:02d} {month} {year} {hour}:{minute}:{second} {zone_text}"
    return when, text


def _zone(sign: str, zone_h: str, zone_m: str) -> tuple[timezone | None, str]:
    """The time zone of an offset as email._parseaddr reads it (-0000: none known, a naive
    datetime), and the offset as format_datetime writes it back; kept (20,000 at most)."""
    offset = int(zone_h) * 3600 + int(zone_m) * 60
    if offset == 0 and sign == "-":
        read: tuple[timezone | None, str] = (None, "-0000")
    else:
        seconds = -offset if sign == "-" else offset
        hours, minutes = divmod(abs(seconds) // 60, 60)
        zone = timezone(timedelta(seconds=seconds))  # ValueError: a day or more
        read = (zone, f"{'-' if seconds < 0 else '+'}{hours:02d}{minutes:02d}")
    _ZONES[sign + zone_h + zone_m] = read
    return read


_ZONES: dict[str, tuple[timezone | None, str]] = {}


_PLAIN_READERS = {
    "subject": _unstructured,
    "in-reply-to": _unstructured,
    "references": _unstructured,
    "content-id": _unstructured,
    "message-id": _message_id_header,
    "content-type": _content_type,
    "content-disposition": _content_disposition,
    "content-transfer-encoding": _transfer_encoding,
    "date": _date_header,
}


class _Part(EmailMessage):
    """An EmailMessage that reads a header once: the email package asks a part for its
    Content-Type a dozen times a parse, and `get` scans every header each time. The first
    (name, value) of each name is indexed, and what the policy made of it kept, for as long as
    the headers are those the index was made from (compared on each read, a C-level list
    comparison, so a change by any of the email package's methods is seen) and the policy."""

    _index: tuple[
        list[tuple[str, Any]], dict[str, tuple[str, Any]], dict[Any, Any], dict[str, Any], Any
    ]

    def get(self, name: str, failobj: Any = None) -> Any:
        # `_current_index` inlined: the email package calls `get` some 25 times a message.
        index = self.__dict__.get("_index")
        if index is None or index[0] != self._headers or index[4] is not self.policy:
            index = self._current_index()
        read = index[2]
        key = name.lower()
        value = read.get(key, _MISSING)
        if value is _MISSING:
            found = index[1].get(key)
            if found is None:
                return failobj
            value = read[key] = self.policy.header_fetch_parse(*found)
        return value

    def get_content_type(self) -> str:
        read = self._current_index()[2]
        key = ("content type", self._default_type)  # no header name: never a str key
        value = read.get(key)
        if value is None:
            value = read[key] = super().get_content_type()
        return value

    def _get_params_preserve(self, failobj: Any, header: str) -> Any:
        """The parameters of `header` (get_param, get_boundary, get_filename and the content
        manager each parse them again), kept like the values."""
        return _params_of(self, failobj, header, self._current_index()[3])

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._current_index()[1]

    def _current_index(self) -> tuple[Any, ...]:
        index = self.__dict__.get("_index")
        if index is None or index[0] != self._headers or index[4] is not self.policy:
            first = {k.lower(): (k, v) for k, v in reversed(self._headers)}
            index = self._index = (list(self._headers), first, {}, {}, self.policy)
        return index


def _params_of(part: Any, failobj: Any, header: str, params_read: dict[str, Any]) -> Any:
    """`Message._get_params_preserve` of `part`, kept in `params_read` (by header name); a
    copy each time, as the email package hands this list on."""
    key = header.lower()
    params = params_read.get(key, _MISSING)
    if params is _MISSING:
        value = part.get(header, _MISSING)
        known = value.__dict__.get("_params") if type(value) is _Plain else None
        if known is not None:
            params = known  # read with the value (_params_read_back)
        elif value is not _MISSING:
            # The email package parses `str(value)` alone: the same text, the same list
            # (most parts' content types are one of a few texts).
            text = str(value)
            params = _PARAMS_READ.get(text, _MISSING)
            if params is _MISSING:
                params = tuple(Message._get_params_preserve(part, _MISSING, header))
                if len(text) <= _READ_KEPT_CHARS:
                    if len(_PARAMS_READ) >= _READ_KEPT:
                        _PARAMS_READ.clear()
                    _PARAMS_READ[text] = params
        params_read[key] = params
    return failobj if params is _MISSING else list(params)


class _Split:
    """A message or part as `mime_split.split` builds it for `parse_message`: what parse.py
    asks of an EmailMessage, answered by the email package's own methods (borrowed below)
    over header values read once. Such a tree is never changed once split, so what is read
    is kept without `_Part`'s checks, and the content type and disposition a part is asked
    for a dozen times a parse are each read once. Headers are all set before the first read.
    tests/test_mime_split.py compares every parse of a split tree with the email package's."""

    __slots__ = (
        "_all",
        "_defects",
        "_facts",
        "_first",
        "_headers",
        "_params",
        "_payload",
        "_read",
        "policy",
    )

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self._headers: list[tuple[str, Any]] = []
        self._payload: Any = None
        self._first: dict[str, tuple[str, Any]] | None = None  # the first field of each name
        self._all: dict[str, list[Any]] | None = None  # every value of each name, in order
        self._read: dict[str, Any] = {}  # header values as the policy reads them
        self._params: dict[str, Any] = {}
        self._facts: dict[str, Any] = {}  # content type, disposition, ...
        self._defects: list[Any] | None = None

    def get(self, name: str, failobj: Any = None) -> Any:
        key = name.lower()
        value = self._read.get(key, _MISSING)
        if value is _MISSING:
            found = self._first_fields().get(key)
            if found is None:
                return failobj
            value = self._read[key] = self.policy.header_fetch_parse(*found)
        return value

    __getitem__ = get

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._first_fields()

    def _first_fields(self) -> dict[str, tuple[str, Any]]:
        if self._first is None:
            self._first = {k.lower(): (k, v) for k, v in reversed(self._headers)}
        return self._first

    def _by_name(self) -> dict[str, list[Any]]:
        if self._all is None:
            self._all = {}
            for name, value in self._headers:
                self._all.setdefault(name.lower(), []).append(value)
        return self._all

    def raw_items(self) -> Iterator[tuple[str, Any]]:
        return iter(self._headers)

    def set_payload(self, payload: str) -> None:
        self._payload = payload  # as EmailMessage.set_payload keeps a str without a charset

    def attach(self, part: _Split) -> None:
        if self._payload is None:
            self._payload = [part]
        else:
            self._payload.append(part)

    def is_multipart(self) -> bool:
        return isinstance(self._payload, list)

    def get_default_type(self) -> str:
        return "text/plain"  # split leaves multipart/digest (message/rfc822 parts) alone

    @property
    def defects(self) -> list[Any]:  # where the policy registers a defect (bad base64)
        if self._defects is None:
            self._defects = []
        return self._defects

    def _get_params_preserve(self, failobj: Any, header: str) -> Any:
        return _params_of(self, failobj, header, self._params)

    def _fact(self, name: str, read: Callable[[Any], Any]) -> Any:
        value = self._facts.get(name, _MISSING)
        if value is _MISSING:
            value = self._facts[name] = read(self)
        return value

    def get_content_type(self) -> str:
        return self._fact("content type", Message.get_content_type)

    def get_content_maintype(self) -> str:
        return self._fact("maintype", Message.get_content_maintype)

    def get_content_disposition(self) -> str | None:
        return self._fact("disposition", Message.get_content_disposition)

    def is_attachment(self) -> bool:
        return self._fact("attachment", EmailMessage.is_attachment)

    get_all = Message.get_all
    get_payload = Message.get_payload
    get_param = Message.get_param
    get_boundary = Message.get_boundary
    get_filename = Message.get_filename
    get_content_charset = Message.get_content_charset
    get_content_subtype = Message.get_content_subtype
    walk = Message.walk
    iter_parts = EmailMessage.iter_parts
    get_body = EmailMessage.get_body
    _find_body = EmailMessage._find_body
    get_content = EmailMessage.get_content


_MISSING = object()


class _Policy(EmailPolicy):
    """policy.default, the plain values of the headers above read by `_Plain`, its messages
    `_Part`s. A value read is kept for the next time it is asked for (each part's content type
    is read many times)."""

    message_factory = _Part

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):
            return value
        key = (name, value)
        header = _READ.get(key)
        if header is None:
            reader = _PLAIN_READERS.get(name.lower())
            unfolded = _unfold(value)
            header = reader(name, unfolded) if reader is not None else None
            if header is None:
                return self.header_factory(name, unfolded)
            if len(value) <= _READ_KEPT_CHARS:
                if len(_READ) >= _READ_KEPT:
                    _READ.clear()
                _READ[key] = header
        return header


def _plain_addresses(value: str) -> list[str] | None:
    """The addr-specs of a plain mailbox list, or None when the registry must read it.

    A plain list is what the registry reads as these mailboxes whatever the display names
    decode to: no "=?" but in whole encoded words of a phrase."""
    if not _MAILBOX_LIST.fullmatch(value):
        return None
    if "=?" in value and "=?" in _EW_ALONE.sub("", value):
        return None
    found, at = [], 0
    while at < len(value):
        item = _MAILBOX_ITEM.match(value, at)
        if item is None:
            return None
        found.append(item.group(1) or item.group(2))
        at = item.end()
    return found


def _unfold(value: str) -> str:
    """The value without line breaks, as the policy reads a folded header."""
    return value.replace("\r", "").replace("\n", "")


_REGISTRY = HeaderRegistry()
_READ: dict[tuple[str, str], _Plain] = {}
# A MIME header's text: its parameters; the values of plain From/To/Cc fields: their addresses.
_PARAMS_READ: dict[str, tuple[tuple[str, Any], ...]] = {}
_ADDRESSES_READ: dict[tuple[str, ...], tuple[str, ...]] = {}
_READ_KEPT = 1_000  # values kept, all forgotten when full
_READ_KEPT_CHARS = 2_000  # longer values are read each time
_POLICY = _Policy()
_PARSER = BytesParser(policy=_POLICY)


# Authentication-Results (RFC 8601) ------------------------------------------------------------
#
# authserv-id [version] ( "; none" / 1*( ";" method [ "/" version ] "=" result [reason] [props] ) )
# with comments (nested parentheses) and quoted strings anywhere a value goes. Only the
# authserv-id and the dmarc result are read: comments are dropped, the rest is split on ";"
# outside quoted strings.

MAX_AUTH_RESULTS = 20  # headers read, topmost first (the ones receiving servers added)
_METHOD_RESULT = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*(?:/\s*\d+\s*)?=\s*([A-Za-z0-9_\-]+)")
_AUTHSERV_ID = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;"]+))')


def authentication_results(msg: EmailMessage) -> list[tuple[str, str | None]]:
    """(authserv-id, dmarc result) of each Authentication-Results header, topmost first; a
    header whose authserv-id cannot be read is left out."""
    found: list[tuple[str, str | None]] = []
    for value in _raw_values(msg, "authentication-results"):
        if not isinstance(value, str):
            continue
        read = _authentication_result(_unfold(value))
        if read is not None:
            found.append(read)
            if len(found) >= MAX_AUTH_RESULTS:
                break
    return found


def _authentication_result(value: str) -> tuple[str, str | None] | None:
    head, *results = _split_results(_without_comments(value))
    match = _AUTHSERV_ID.match(head)
    if match is None:
        return None
    authserv_id = clean_text(match.group(1) if match.group(1) is not None else match.group(2))
    dmarc: str | None = None
    for result in results:
        method = _METHOD_RESULT.match(result)
        if method is not None and method.group(1).lower() == "dmarc":
            verdict = method.group(2).lower()
            if dmarc is None or verdict == "fail":  # two dmarc results: a failure counts
                dmarc = verdict
    return authserv_id.strip().lower(), dmarc


def _without_comments(value: str) -> str:
    """`value` without its comments (nested parentheses, quoted pairs); quoted strings kept."""
    out: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    for char in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\" and (quoted or depth):
            escaped = True
            if depth == 0:
                out.append(char)
            continue
        if quoted:
            quoted = char != '"'
            out.append(char)
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0:
            quoted = char == '"'
            out.append(char)
    return "".join(out)


def _split_results(value: str) -> list[str]:
    """`value` split on ";" outside quoted strings."""
    parts: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for at, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            parts.append(value[start:at])
            start = at + 1
    parts.append(value[start:])
    return parts


# Multipart boundaries without the regex compiler ---------------------------------------------
#
# For each multipart the email package's FeedParser compiles a regular expression of the part
# boundary (email/feedparser.py: "(?P<sep>--BOUNDARY)(?P<end>--)?(?P<ws>[ \t]*)
# (?P<linesep>\r\n|\r|\n)?$"); each boundary is new, so each message pays the regex compiler
# (about 0.3 ms, a fifth of parsing a small message). `_Boundary` answers `match` exactly as
# that expression does, with string operations; the feedparser module is given a `re` that
# hands it one for that pattern (and is `re` for anything else). Checked against the real
# expression in tests/test_mail_parse.py.


class _BoundaryMatch:
    """The groups of a boundary line, as the match object of the real expression has them."""

    __slots__ = ("_groups",)

    def __init__(self, sep: str, end: str | None, ws: str, linesep: str | None) -> None:
        self._groups = {"sep": sep, "end": end, "ws": ws, "linesep": linesep}

    def group(self, name: str | int = 0) -> str | None:
        if name == 0:
            return "".join(v or "" for v in self._groups.values())
        return self._groups[name]  # type: ignore[index]


class _Boundary:
    """`re.compile` of the feedparser's boundary expression for `separator`, as far as the
    feedparser uses it (`match`)."""

    __slots__ = ("pattern", "separator")

    def __init__(self, separator: str, pattern: str) -> None:
        self.separator = separator
        self.pattern = pattern

    def match(self, line: str) -> _BoundaryMatch | None:
        if not line.startswith(self.separator):
            return None
        at = len(self.separator)
        end = None
        if line.startswith("--", at):
            end, at = "--", at + 2
        rest = line[at:]
        stripped = rest.lstrip(" \t")
        ws = rest[: len(rest) - len(stripped)]
        # "$" matches at the end and before a newline that ends the line.
        for linesep in ("\r\n", "\r", "\n"):
            if stripped.startswith(linesep):
                if stripped[len(linesep) :] in ("", "\n"):
                    return _BoundaryMatch(self.separator, end, ws, linesep)
                return None
        return _BoundaryMatch(self.separator, end, ws, None) if stripped == "" else None


_BOUNDARY_PATTERN = re.compile(
    r"\(\?P<sep>((?:\\.|[^\\])*)\)"
    + re.escape(r"(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"),
    re.DOTALL,
)
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


class _FeedparserRe:
    """`re` for email.feedparser: its boundary expression is a `_Boundary`."""

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)

    @staticmethod
    def compile(pattern: Any, flags: int = 0) -> Any:
        if flags == 0 and isinstance(pattern, str):
            found = _BOUNDARY_PATTERN.fullmatch(pattern)
            if found is not None:
                separator = _ESCAPED.sub(r"\1", found.group(1))
                if re.escape(separator) == found.group(1):  # just what re.escape makes
                    return _Boundary(separator, pattern)
        return re.compile(pattern, flags)


email.feedparser.re = _FeedparserRe()  # type: ignore[assignment]


# Bodies ------------------------------------------------------------------------------------


def _bodies(msg: EmailMessage) -> tuple[str | None, str | None]:
    try:
        plain, html = _body_parts(msg)
    except Exception:  # get_body raises here too (or the nesting is deep): read it its way
        return _body(msg, "plain"), _body(msg, "html")
    return _body_text(msg, plain, "plain"), _body_text(msg, html, "html")


def _body(msg: EmailMessage, subtype: str) -> str | None:
    try:
        part = msg.get_body(preferencelist=(subtype,))
    except Exception:
        part = None
    return _body_text(msg, part, subtype)


def _body_text(msg: EmailMessage, part: EmailMessage | None, subtype: str) -> str | None:
    if part is None:
        part = _walk_for(msg, subtype)
    if part is None:
        return None
    text = _part_text(part)
    return text[:MAX_BODY_CHARS] if text is not None else None


_BODY_DEPTH = 100  # deeper trees are read by get_body itself (its recursion has a limit)


def _body_parts(msg: EmailMessage) -> tuple[EmailMessage | None, EmailMessage | None]:
    """`msg.get_body(("plain",))` and `msg.get_body(("html",))` in one walk: the first
    text/plain and the first text/html part that `EmailMessage._find_body` comes to. Its
    walk is the same for both lists (it differs only when "related" is preferred), so one
    walk finds both; its steps are copied one by one, in the same order, and an error is
    raised where it raises. tests/test_mime_split.py compares it with get_body."""
    found: dict[str, EmailMessage] = {}
    root_is_multipart = msg.is_multipart()
    stack: list[tuple[EmailMessage, int]] = [(msg, 0)]
    while stack and len(found) < 2:
        part, depth = stack.pop()
        if depth > _BODY_DEPTH:
            raise RecursionError("nested too deep for one walk")
        if part.is_attachment():
            continue
        maintype, subtype = part.get_content_type().split("/")
        if maintype == "text":
            if subtype in ("plain", "html"):
                found.setdefault(subtype, part)
            continue
        if maintype != "multipart" or not root_is_multipart:  # sic: the root's, as there
            continue
        if subtype != "related":
            stack.extend((p, depth + 1) for p in reversed(list(part.iter_parts())))
            continue
        candidate = None
        start = part.get_param("start")
        if start:
            for subpart in part.iter_parts():
                if subpart["content-id"] == start:
                    candidate = subpart
                    break
        if candidate is None:
            subparts = part.get_payload()
            candidate = subparts[0] if subparts else None
        if candidate is not None:
            stack.append((candidate, depth + 1))
    return found.get("plain"), found.get("html")


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
        if (
            part.policy.content_manager is raw_data_manager
            and part.get_content_maintype() == "text"
        ):
            content = get_text_content(part)  # what get_content hands a text part to
        else:
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


# Attachments --------------------------------------------------------------------------------


def _attachments(msg: EmailMessage, limit: int | None) -> list[ParsedAttachment]:
    found: list[ParsedAttachment] = []
    for part in _leaves(msg):
        if len(found) >= MAX_ATTACHMENTS:
            break
        try:
            if not _is_attachment(part):
                continue
        except Exception:  # a header the parser chokes on: not worth stopping for
            continue
        found.append(_attachment(part, limit))
    return found


def _leaves(msg: EmailMessage) -> list[EmailMessage]:
    """The non-multipart parts in order, at most MAX_PARTS looked at. A forwarded message
    (message/rfc822) is looked into, so the files it carries count as attachments. No
    recursion: a hostile nesting depth cannot exhaust the stack."""
    leaves: list[EmailMessage] = []
    stack: list[EmailMessage] = [msg]
    seen = 0
    while stack and seen < MAX_PARTS:
        part = stack.pop()
        seen += 1
        try:
            children = part.get_payload() if part.is_multipart() else None
        except Exception:
            children = None
        if isinstance(children, list):
            stack.extend(reversed([c for c in children if isinstance(c, EmailMessage | _Split)]))
        else:
            leaves.append(part)
    return leaves


def _is_attachment(part: EmailMessage) -> bool:
    """Sent as an attachment, or named (inline parts too). A nameless inline part is a body
    or a picture embedded in the HTML (Content-ID); a nameless part of another type with no
    disposition at all (a bare PDF) is an attachment whose sender forgot its name."""
    disposition = part.get_content_disposition()
    if disposition == "attachment" or _filename(part):
        return True
    maintype = part.get_content_maintype()
    return (
        disposition is None and maintype not in ("text", "multipart") and "Content-ID" not in part
    )


def _attachment(part: EmailMessage, limit: int | None) -> ParsedAttachment:
    filename = _filename(part)
    try:
        content_type = part.get_content_type()[:MAX_CONTENT_TYPE]
    except Exception:
        content_type = "application/octet-stream"
    try:
        content = _content(part)
    except Exception:
        content = None
    if content is None:
        return ParsedAttachment(filename, content_type, 0, None, unreadable=True)
    size = len(content)
    if limit is not None and size > limit:
        return ParsedAttachment(filename, content_type, size, None)  # its bytes are dropped
    return ParsedAttachment(filename, content_type, size, content)


def _filename(part: EmailMessage) -> str:
    """The decoded name (RFC 2231 parameters, RFC 2047 words inside quotes), or ""."""
    try:
        name = part.get_filename() if _may_be_named(part) else None
    except Exception:
        name = None
    if not name:
        return ""
    return " ".join(clean_text(str(name)).split())[-MAX_FILENAME_CHARS:]


def _may_be_named(part: EmailMessage) -> bool:
    """Whether `get_filename` can find a name: it reads the parameters of these two headers
    from their text (`_parseparam(str(value))`, names lower-cased), so a text without "name"
    has none. Most parts (the bodies) have none, and their parameters are then not parsed."""
    for header in ("content-disposition", "content-type"):
        value = part.get(header)
        if value is not None and "name" in str(value).lower():
            return True
    return False


def _content(part: EmailMessage) -> bytes | None:
    """The decoded bytes. Damaged base64 is read as the email package reads it: decoded as
    far as it goes, or kept as sent when nothing decodes."""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else None


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
