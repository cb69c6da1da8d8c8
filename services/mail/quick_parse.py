"""Parsing synced mail in its common shapes directly: `parse.parse_message`'s answer, faster.

`parse.parse_message` builds a tree of parts and asks it what the email package's methods ask
(content types, parameters, dispositions, payloads), a dozen method calls a part. Nearly all
mail that clients send is simpler than what those methods allow for: text and HTML bodies in
a multipart/alternative, attachments beside them in a multipart/mixed, pictures in a
multipart/related. `read_plain` reads such a message in one pass: its parts are split where
`mime_split` splits them, and each text body is read with the steps the email package takes
for it (`Message.get_content_type`, `get_param`, `get_payload(decode=True)`,
`contentmanager.get_text_content`), written out once. Anything else is left to `parse`:

- a part the reader does not state simply is a `parse._Split`, read by `parse`'s own functions
  (attachments, a body with a file name or a Content-Disposition);
- a message `mime_split` leaves to the feedparser, a forwarded message, a header the plain
  readers do not read, a multipart/related with a `start`, an unknown charset: None, and
  `parse_message` reads it whole.

tests/test_mime_split.py compares both on mail built by the email package, on line soup and on
damaged mail; bench/parse.py times both.
"""

from __future__ import annotations

import quopri
import re
from collections.abc import Iterator
from datetime import datetime
from email._encoded_words import decode_b
from email.message import _splitparam, _unquotevalue
from email.utils import collapse_rfc2231_value
from typing import Any

from services.mail import mime_split, parse
from services.mail.mime_split import NotPlain
from services.mail.parse import ParsedAttachment, ParsedMessage

_MAX_DEPTH = 8  # multiparts nested deeper are read by `parse` (mail clients nest 3 at most)
_MAX_PARTS = 100  # parts of a message read here; more go to `parse` (which looks at MAX_PARTS)
# What parts' headers (all of them, in order) are read as: the same few in most mail.
_LEAVES_READ: dict[tuple[tuple[str, str], ...], tuple[str, str, str] | tuple[()]] = {}
_KEPT = 1_000  # readings kept, all forgotten when full
_KEPT_CHARS = 2_000  # parts with longer headers are read each time
# The Content-Type nearly every multipart carries: its type and a quoted boundary alone (of
# RFC 2046's characters but space and "?"), folded or not. Read here as the general path
# reads it (the type lower-cased, the boundary as it is; tests/test_mime_split.py).
_PLAIN_MULTIPART = re.compile(
    r"[ \t]*multipart/([A-Za-z0-9-]+)[ \t]*;[ \t]*(?:\r\n[ \t]+)?"
    r'boundary="([0-9A-Za-z\'()+_,./:=-]+)"[ \t]*'
)
_UUENCODE = ("x-uuencode", "uuencode", "uue", "x-uue")  # get_payload reads these its own way


def parse_message(
    raw: bytes, now: datetime | None = None, *, max_attachment_bytes: int | None = None
) -> ParsedMessage:
    """`parse.parse_message(raw, now, max_attachment_bytes=...)`, the common shapes read here."""
    quick = read_plain(raw, now, max_attachment_bytes=max_attachment_bytes)
    if quick is not None:
        return quick
    return parse.parse_message(raw, now, max_attachment_bytes=max_attachment_bytes)


def read_plain(
    raw: bytes, now: datetime | None = None, *, max_attachment_bytes: int | None = None
) -> ParsedMessage | None:
    """`parse.parse_message`'s answer for a message in the shapes above, else None."""
    text = raw.decode("ascii", "surrogateescape")  # as BytesParser reads bytes
    try:
        reader = _Reader(text)
        root = reader.root()
        text_body, html_body = _bodies(root)
        attachments = _attachments(root, max_attachment_bytes)
    except NotPlain:
        return None
    return parse.parsed_message(reader.headers, now, text_body, html_body, attachments)


class _Text:
    """A text/plain or text/html part with no Content-Disposition and no name: never an
    attachment (`parse._is_attachment`, `EmailMessage.is_attachment`), its text read here."""

    __slots__ = ("charset", "payload", "subtype", "transfer_encoding")

    def __init__(self, subtype: str, charset: str, transfer_encoding: str, payload: str) -> None:
        self.subtype = subtype
        self.charset = charset  # get_param("charset", "ASCII")
        self.transfer_encoding = transfer_encoding  # lower-cased, "" when there is none
        self.payload = payload


class _Multipart:
    __slots__ = ("parts", "subtype")

    def __init__(self, subtype: str, parts: list[_Node]) -> None:
        self.subtype = subtype
        self.parts = parts


_Node = Any  # a _Text, a _Multipart, or a `parse._Split` read by parse's functions


class _Reader:
    """One message's parts, split as `mime_split.split` splits them."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.headers: Any = None  # the message's own headers, a `parse._Split`
        self.parts = 0

    def root(self) -> _Node:
        pairs, body = mime_split.read_headers(self.text, 0, len(self.text))
        self.headers = _split_part(pairs, None)
        return self._part(pairs, body, len(self.text), 0, inside_multipart=False)

    def _first_fields(self, pairs: list[tuple[str, str]], depth: int) -> dict[str, tuple[str, str]]:
        """The first (name, value) of each header name (lower-cased). The message's own are
        handed to its headers' `parse._Split` too, which would make the same."""
        fields = {name.lower(): (name, value) for name, value in reversed(pairs)}
        if not depth:
            self.headers._first = fields
        return fields

    def _part(
        self,
        pairs: list[tuple[str, str]],
        body: int,
        end: int,
        depth: int,
        *,
        inside_multipart: bool,
    ) -> _Node:
        self.parts += 1
        if self.parts > _MAX_PARTS:
            raise NotPlain
        key = tuple(pairs) if depth else None  # a part's headers: the same few in most mail
        known = _LEAVES_READ.get(key) if key is not None else None
        if known is not None:
            payload = mime_split.leaf_payload(self.text, body, end, inside_multipart=True)
            return _Text(*known, payload) if known else _split_part(pairs, payload)
        fields = self._first_fields(pairs, depth)
        content_type = fields.get("content-type")
        plain = plain_multipart(content_type[1]) if content_type is not None else None
        if plain is not None:
            return self._multipart(fields, *plain, None, body, end, depth)
        value = _read(*content_type) if content_type is not None else None
        ctype = _content_type(value)
        maintype, subtype = ctype.split("/")
        if maintype == "message":
            raise NotPlain  # a forwarded message or a report: parse reads it
        if maintype == "multipart":
            params = _params(value)
            if params is None:
                raise NotPlain
            boundary = _param(params, "boundary", None)  # as Message.get_boundary
            if boundary is not None:
                boundary = collapse_rfc2231_value(boundary).rstrip()
            start = _param(params, "start", None)
            return self._multipart(fields, subtype, boundary, start, body, end, depth)
        payload = mime_split.leaf_payload(self.text, body, end, inside_multipart=inside_multipart)
        reading = _leaf(fields, value, maintype, subtype)
        if key is not None and sum(len(n) + len(v) for n, v in pairs) <= _KEPT_CHARS:
            if len(_LEAVES_READ) >= _KEPT:
                _LEAVES_READ.clear()
            _LEAVES_READ[key] = reading
        return _Text(*reading, payload) if reading else _split_part(pairs, payload)

    def _multipart(
        self,
        fields: dict[str, tuple[str, str]],
        subtype: str,
        boundary: str | None,
        start: Any,
        body: int,
        end: int,
        depth: int,
    ) -> _Multipart:
        """A multipart of this subtype, boundary and `start` parameter."""
        if depth >= _MAX_DEPTH or "content-disposition" in fields:
            raise NotPlain
        if subtype == "digest":
            raise NotPlain  # its parts default to message/rfc822
        if subtype == "related" and start:
            raise NotPlain  # the part `start` names is the body: parse finds it
        if not boundary:
            raise NotPlain
        parts = []
        for first, stop in mime_split.part_spans(self.text, boundary, body, end):
            pairs, part_body = mime_split.read_headers(self.text, first, stop)
            parts.append(self._part(pairs, part_body, stop, depth + 1, inside_multipart=True))
        return _Multipart(subtype, parts)


def plain_multipart(content_type: str) -> tuple[str, str] | None:
    """The subtype and boundary of a multipart whose Content-Type is `content_type`, as
    `_Reader._part` reads them otherwise, when it is in the plain form (`_PLAIN_MULTIPART`:
    no other parameter, so no `start` either); else None."""
    plain = _PLAIN_MULTIPART.fullmatch(content_type)
    return (plain.group(1).lower(), plain.group(2)) if plain is not None else None


def _leaf(
    fields: dict[str, tuple[str, str]], content_type: Any, maintype: str, subtype: str
) -> tuple[str, str, str] | tuple[()]:
    """What a `_Text` holds of a part that is no multipart (subtype, charset, transfer
    encoding), or () when parse's functions read it (`_split_part`)."""
    if maintype == "text" and subtype in ("plain", "html") and _unnamed(fields, content_type):
        params = _params(content_type)
        if params is not None:
            return subtype, _param(params, "charset", "ASCII"), _transfer_encoding(fields)
    return ()


def _unnamed(fields: dict[str, tuple[str, str]], content_type: Any) -> bool:
    """No Content-Disposition, and no "name" in the Content-Type: `parse._filename` finds no
    name there (`parse._may_be_named`)."""
    if "content-disposition" in fields:
        return False
    return content_type is None or "name" not in str(content_type).lower()


def _read(name: str, value: str) -> Any:
    """The header as the policy reads it (`Message.get`)."""
    try:
        return parse._POLICY.header_fetch_parse(name, value)
    except Exception:  # the registry has raised on hostile input: parse knows what to do
        raise NotPlain from None


def _content_type(value: Any) -> str:
    """`Message.get_content_type` of a part whose Content-Type reads as `value` (None: none)."""
    if value is None:
        return "text/plain"  # the default type outside multipart/digest
    ctype = _splitparam(value)[0].lower()
    return ctype if ctype.count("/") == 1 else "text/plain"


def _params(value: Any) -> tuple[tuple[str, str], ...] | None:
    """The parameters `Message.get_param` reads from this Content-Type, where the plain header
    reader knew them (None: parse reads them); none for a part without a Content-Type
    (`_param` then gives the default)."""
    if value is None:
        return ()
    return value.__dict__.get("_params") if type(value) is parse._Plain else None


def _param(params: tuple[tuple[str, str], ...], name: str, failobj: Any) -> Any:
    """`Message.get_param(name, failobj)` over the parameters read."""
    if not params:
        return failobj  # no Content-Type header at all
    for key, value in params:
        if key.lower() == name:
            return _unquotevalue(value)
    return failobj


def _transfer_encoding(fields: dict[str, tuple[str, str]]) -> str:
    """`str(part.get("content-transfer-encoding", "")).lower()`, as get_payload reads it."""
    found = fields.get("content-transfer-encoding")
    return str(_read(*found)).lower() if found is not None else ""


def _split_part(pairs: list[tuple[str, str]], payload: str | None) -> Any:
    part = parse._Split(parse._POLICY)
    part._headers.extend(pairs)
    if payload is not None:
        part.set_payload(payload)
    return part


# Bodies: parse._bodies over this tree ---------------------------------------------------


def _bodies(root: _Node) -> tuple[str | None, str | None]:
    if not isinstance(root, _Multipart):
        if isinstance(root, _Text):
            text = _text(root)
            return (text, None) if root.subtype == "plain" else (None, text)
        raise NotPlain  # an attachment alone, or a body with a name: parse reads it
    found = _body_parts(root)
    return _body_text(root, found.get("plain"), "plain"), _body_text(
        root, found.get("html"), "html"
    )


def _body_parts(root: _Multipart) -> dict[str, _Node]:
    """The parts `parse._body_parts` finds (EmailMessage._find_body's walk), by subtype."""
    found: dict[str, _Node] = {}
    stack: list[_Node] = [root]
    while stack and len(found) < 2:
        part = stack.pop()
        if isinstance(part, _Text):
            found.setdefault(part.subtype, part)
        elif isinstance(part, _Multipart):
            if part.subtype != "related":
                stack.extend(reversed(part.parts))
            else:
                stack.append(part.parts[0])  # no `start`: its first part
        else:
            try:
                if part.is_attachment():
                    continue
                maintype, subtype = part.get_content_type().split("/")
            except Exception:
                raise NotPlain from None
            if maintype == "text" and subtype in ("plain", "html"):
                found.setdefault(subtype, part)
    return found


def _body_text(root: _Multipart, part: _Node | None, subtype: str) -> str | None:
    if part is None:
        part = _walk_for(root, subtype)
    if part is None:
        return None
    if isinstance(part, _Text):
        return _text(part)
    text = parse._part_text(part)
    return text[: parse.MAX_BODY_CHARS] if text is not None else None


def _walk_for(root: _Multipart, subtype: str) -> _Node | None:
    """parse._walk_for: the first text/`subtype` part, in Message.walk's order, that is not
    disposed as an attachment."""
    for part in _walk(root):
        if isinstance(part, _Text):
            if part.subtype == subtype:
                return part
        elif not isinstance(part, _Multipart):
            try:
                wanted = part.get_content_type() == f"text/{subtype}"
                if wanted and part.get_content_disposition() != "attachment":
                    return part
            except Exception:
                raise NotPlain from None
    return None


def _walk(part: _Node) -> Iterator[_Node]:
    yield part
    if isinstance(part, _Multipart):
        for child in part.parts:
            yield from _walk(child)


def _text(part: _Text) -> str:
    """parse._part_text of such a part: `get_text_content`, then made storable and cut."""
    # get_payload's bytes: ASCII as it is, undeclared 8-bit bytes as they came (the message
    # was decoded as ASCII with surrogateescape, so no other character is there).
    raw = part.payload.encode("ascii", "surrogateescape")
    encoding = part.transfer_encoding
    if encoding == "quoted-printable":
        content = quopri.decodestring(raw)
    elif encoding == "base64":
        content = decode_b(b"".join(raw.splitlines()))[0]
    elif encoding in _UUENCODE:
        raise NotPlain
    else:
        content = raw
    try:
        text = content.decode(part.charset, "replace")
    except Exception:  # an unknown charset: parse decodes it its way
        raise NotPlain from None
    return parse.clean_text(text)[: parse.MAX_BODY_CHARS]


# Attachments: parse._attachments over this tree --------------------------------------------


def _attachments(root: _Node, limit: int | None) -> list[ParsedAttachment]:
    found: list[ParsedAttachment] = []
    for part in _walk(root):
        if len(found) >= parse.MAX_ATTACHMENTS:
            break
        if isinstance(part, _Text | _Multipart):
            continue  # a body (no name, no disposition) or a container: never an attachment
        try:
            if not parse._is_attachment(part):
                continue
        except Exception:
            continue
        found.append(parse._attachment(part, limit))
    return found
