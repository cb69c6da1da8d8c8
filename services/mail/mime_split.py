"""The tree `email.feedparser` builds for a message, built faster for the plain forms of mail.

The feedparser reads a message one line at a time in Python, about half the cost of parsing
synced mail (services/mail/parse.py). `split` builds the same `EmailMessage` tree (the same
(name, value) header pairs, the same payload strings, parts attached in the same order) by
searching the text for header ends and boundary lines, when the message keeps to the forms
whose reading by the feedparser is simple to state:

- header lines are ASCII `Name: value` lines or their continuations, each ended by CRLF, and
  a blank line (CRLF) ends them;
- within a multipart, a line that starts with its boundary starts after a CRLF (or the
  multipart's own start), and a boundary line ends in CRLF or the end of the message: the
  feedparser also ends a line at a lone CR or LF, which is kept where a payload holds it;
- a multipart has a boundary, its first boundary line opens a part, no two boundary lines
  follow each other, and its closing boundary line is there;
- no part is message/* (a forwarded message, a delivery report) or in multipart/digest.

Anything else (nearly always damaged or unusual mail) gives None, and the caller parses the
message with the feedparser itself. Where a header's value, a content type or a boundary is
read, the stock `EmailMessage` methods read it, as the feedparser calls them. Not copied:
preambles, epilogues and defects, which Portico never reads. tests/test_mime_split.py
compares both trees and both parses on generated, real-world and damaged mail.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.policy import Policy
from typing import Any

# A header field as the feedparser's headerRE takes its name (printable ASCII but ":"), its
# value from the first character after the colon and its blanks on, continuation lines kept.
_FIELD = re.compile(r"([\041-\071\073-\176]+):[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)\r\n")


class NotPlain(Exception):
    """The feedparser reads this message in a way `split` does not copy."""


def split(raw: bytes, policy: Policy, factory: Callable[..., Any] | None = None) -> Any:
    """The feedparser's tree of `raw` (as `BytesParser(policy=policy).parsebytes`), or None
    when the message is not in the plain forms above. Its parts are made by `factory`
    (policy.message_factory unless given: parse.py gives its own read-only kind)."""
    text = raw.decode("ascii", "surrogateescape")  # as BytesParser reads bytes
    try:
        make = factory or policy.message_factory
        return _part(text, 0, len(text), policy, make, inside_multipart=False)
    except (NotPlain, RecursionError):  # nesting the feedparser, without recursion, reads
        return None


def split_headers(raw: bytes, policy: Policy, factory: Callable[..., Any] | None = None) -> Any:
    """As `split`, for `parsebytes(raw, headersonly=True)`: the headers, the rest as text."""
    text = raw.decode("ascii", "surrogateescape")
    msg = (factory or policy.message_factory)(policy=policy)
    try:
        pairs, body = read_headers(text, 0, len(text))
    except NotPlain:
        return None
    msg._headers.extend(pairs)
    msg.set_payload(text[body:])
    return msg


def _part(
    text: str,
    start: int,
    end: int,
    policy: Policy,
    make: Callable[..., Any],
    *,
    inside_multipart: bool,
) -> Any:
    """The message or part in text[start:end] (`end`: where the feedparser's stream for it
    ends, the next boundary line of its multipart, or the end of the text)."""
    msg = make(policy=policy)
    pairs, body = read_headers(text, start, end)
    msg._headers.extend(pairs)
    maintype = msg.get_content_maintype()
    if maintype == "message":
        raise NotPlain
    if maintype == "multipart":
        _multipart(msg, text, body, end, policy, make)
        return msg
    msg.set_payload(leaf_payload(text, body, end, inside_multipart=inside_multipart))
    return msg


def leaf_payload(text: str, body: int, end: int, *, inside_multipart: bool) -> str:
    """The payload of a part that is no multipart, its body text[body:end]."""
    payload = text[body:end]
    if inside_multipart and payload.endswith("\r\n"):
        payload = payload[:-2]  # RFC 2046: the line break before a boundary belongs to it
    return payload


def read_headers(text: str, start: int, end: int) -> tuple[list[tuple[str, str]], int]:
    """The header lines from `start` on as (name, value) pairs, as the feedparser's
    `header_source_parse` makes them (the value keeps its folds), and where the body starts."""
    if text.startswith("\r\n", start) and start + 2 <= end:
        return [], start + 2  # no headers: the blank line comes first
    blank = text.find("\r\n\r\n", start, end)
    if blank == -1:
        raise NotPlain  # no blank line before the part ends
    block_end = blank + 2
    if not text.isascii() and not text[start:block_end].isascii():
        raise NotPlain
    # One match per field: its first line and its continuation lines, back to back from
    # `start` to the blank line; anything else (a first line that continues nothing, a body
    # line without the blank line, "From " of mbox) leaves a gap.
    pairs: list[tuple[str, str]] = []
    at = start
    for field in _FIELD.finditer(text, start, block_end):
        if field.start() != at:
            raise NotPlain
        pairs.append((field.group(1), field.group(2)))
        at = field.end()
    if at != block_end:
        raise NotPlain
    return pairs, blank + 4


def _multipart(
    msg: Any, text: str, start: int, end: int, policy: Policy, make: Callable[..., Any]
) -> None:
    """The parts of the multipart `msg` whose body is text[start:end], attached in order."""
    boundary = msg.get_boundary()
    if not boundary or msg.get_content_type() == "multipart/digest":
        raise NotPlain
    for part_start, part_end in part_spans(text, boundary, start, end):
        msg.attach(_part(text, part_start, part_end, policy, make, inside_multipart=True))


def part_spans(text: str, boundary: str, start: int, end: int) -> list[tuple[int, int]]:
    """Where each part of a multipart with this boundary starts and ends (its next boundary
    line), the multipart's body being text[start:end]."""
    if "\r" in boundary or "\n" in boundary:
        raise NotPlain  # (RFC 2231 %0D%0A) the feedparser, line by line, never matches it
    separator = "--" + boundary
    if text.count("\r" + separator, start, end) or text.count(
        "\n" + separator, start, end
    ) != text.count("\r\n" + separator, start, end):
        raise NotPlain  # it follows a lone CR or LF: the feedparser's line, not split's
    found = _boundary_line(text, separator, start, end)
    if found is None or found[1]:
        raise NotPlain  # no opening boundary line: the feedparser keeps it all as text
    spans: list[tuple[int, int]] = []
    pos = found[2]
    while True:
        if _is_boundary_line(text, separator, pos) is not None:
            raise NotPlain  # boundary lines one after another: the feedparser skips them
        found = _boundary_line(text, separator, pos, end)
        if found is None:
            raise NotPlain  # no closing boundary line
        line_start, closing, after = found
        spans.append((pos, line_start))
        if closing:
            return spans
        pos = after


def _boundary_line(text: str, separator: str, start: int, end: int) -> tuple[int, bool, int] | None:
    """The first boundary line of `separator` among the lines starting in [start, end):
    where it starts, whether it closes the multipart, where the next line starts."""
    at = start
    while at < end:
        closing = _is_boundary_line(text, separator, at)
        if closing is not None:
            eol = text.find("\r\n", at)
            return at, closing, len(text) if eol == -1 else eol + 2
        found = text.find("\r\n" + separator, at, end)
        if found == -1:
            return None
        at = found + 2
    return None


def _is_boundary_line(text: str, separator: str, at: int) -> bool | None:
    """Whether the line at `at` is a boundary line, as the feedparser's expression
    `(--boundary)(--)?[ \\t]*(\\r\\n|\\r|\\n)?$` matches it: None if not, else whether it is
    the closing one."""
    if not text.startswith(separator, at):
        return None
    at += len(separator)
    closing = text.startswith("--", at)
    if closing:
        at += 2
    while at < len(text) and text[at] in " \t":
        at += 1
    if at == len(text) or text.startswith("\r\n", at):
        return closing
    if text[at] in "\r\n":
        raise NotPlain  # a boundary line to the feedparser, ended by a lone CR or LF
    return None
