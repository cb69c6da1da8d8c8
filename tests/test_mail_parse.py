"""The mail parser (services/mail/parse.py), without a database or a server: ids, subjects,
HTML and text made storable, and damaged mail that never makes it raise."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from services.mail.parse import (
    clean_text,
    normalize_subject,
    parse_message,
    parse_participants,
    sanitize_html,
)


def test_a_missing_message_id_hashes_date_sender_and_subject() -> None:
    raw = b"From: A <a@x.example>\r\nSubject: hi\r\nDate: Mon, 2 Mar 2026 09:30:00 +0000\r\n\r\nx"
    one, two = parse_message(raw), parse_message(raw.replace(b"\r\n\r\nx", b"\r\n\r\ny"))
    assert one.message_id.startswith("sha256:") and one.message_key == two.message_key
    other = parse_message(raw.replace(b"Subject: hi", b"Subject: ho"))
    assert other.message_key != one.message_key


def test_subjects_are_normalised_for_threads() -> None:
    assert normalize_subject("Re: AW: WG: Fwd: FW:  Hello   World ") == "hello world"
    assert normalize_subject("RE[2]: Hello") == "hello"
    assert normalize_subject("Regarding: Hello") == "regarding: hello"


def test_sanitize_html_removes_scripts_and_handlers() -> None:
    html = '<p onclick="x()">Hi<script>alert(1)</script><a href="javascript:x()">l</a></p>'
    clean = sanitize_html(html)
    assert "script" not in clean and "onclick" not in clean and "javascript" not in clean
    assert clean.startswith("<p>Hi")


def test_text_is_made_storable() -> None:
    assert clean_text("caf\udcc3\udca9\x00") == "café"  # undeclared UTF-8 bytes, NUL
    assert clean_text("a\ud800b") == "a?b"


def test_parsing_never_raises_on_damaged_mail() -> None:
    msg = EmailMessage()
    msg["From"] = "Jäne <jane@client.example>"
    msg["To"] = 'a@b.example, "Q, R" <q@r.example>'
    msg["Subject"] = "Grüße"
    msg["References"] = "<x@y> <z@w>"
    msg.set_content("Hällo " * 50)
    msg.add_alternative("<p>Hällo</p>", subtype="html")
    msg.add_attachment(b"\x00\x01" * 100, maintype="application", subtype="octet-stream")
    base = msg.as_bytes()
    noise = [b"=?", b"?=", b"<", b">", b"\r\n", b":", b'"', b"=?utf-8?b?", b"--", b"\x00", b"\xff"]
    rnd = random.Random(5)
    for _ in range(500):
        raw = bytearray(base)
        for _ in range(rnd.randint(1, 30)):
            pos = rnd.randrange(len(raw))
            roll = rnd.random()
            if roll < 0.4:
                raw[pos] = rnd.randrange(256)
            elif roll < 0.7:
                del raw[pos : pos + rnd.randint(1, 20)]
            else:
                raw[pos:pos] = rnd.choice(noise)
        parsed = parse_message(bytes(raw))
        parse_participants(bytes(raw))
        texts = [parsed.subject, parsed.message_id, *parsed.participants]
        texts += [parsed.text_body or "", parsed.html_body or ""]
        for text in texts:
            text.encode("utf-8")
            assert "\x00" not in text


def test_a_header_block_alone_parses() -> None:
    """Sync reads an oversized message from its headers alone (then marks it skipped)."""
    head = (
        b"From: A <a@x.example>\r\nTo: b@y.example\r\nSubject: big\r\nMessage-ID: <big@x>\r\n"
        b"Date: Mon, 2 Mar 2026 09:30:00 +0000\r\n"
        b'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n'
    )
    for raw in (head, head[:-2], head[:-4]):
        parsed = parse_message(raw)
        assert parsed.message_id == "<big@x>" and parsed.subject == "big"
        assert parsed.participants == ["a@x.example", "b@y.example"]
        assert parsed.attachments == [] and parsed.content_skipped is None


def test_boundary_lines_are_matched_as_the_feedparser_expression_matches_them() -> None:
    """parse.py hands email.feedparser a `_Boundary` for its boundary expression: the same
    answers (match or not, and each group) as the compiled expression, on every kind of line."""
    import re

    from services.mail import parse

    rnd = random.Random(8)
    pieces = ["--", "-", " ", "\t", "\r", "\n", "\r\n", "x", "=", "\\", "?", "(", ")", "é", ""]
    for boundary in ["===============67==", "a.b(c)*?+\\d", "simple", " sp ace", "ü-\t-"]:
        separator = "--" + boundary
        pattern = (
            "(?P<sep>" + re.escape(separator) + r")(?P<end>--)?(?P<ws>[ \t]*)"
            r"(?P<linesep>\r\n|\r|\n)?$"
        )
        real, ours = re.compile(pattern), parse._FeedparserRe.compile(pattern)
        assert isinstance(ours, parse._Boundary)
        for _ in range(3000):
            line = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 5)))
            if rnd.random() < 0.8:
                line = separator + line
            if rnd.random() < 0.1:
                line = line[: rnd.randint(0, len(line))]
            expected, got = real.match(line), ours.match(line)
            assert (expected is None) == (got is None), repr(line)
            if expected is not None:
                for group in (0, "sep", "end", "ws", "linesep"):
                    assert got.group(group) == expected.group(group), (repr(line), group)
    assert parse._FeedparserRe.compile("a(b)c").match("abc")  # anything else: real `re`


def test_parsing_with_the_boundary_shortcut_gives_what_the_stock_parser_gives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whole messages (nested multiparts, damaged ones) parse the same with `re` itself."""
    import email.feedparser
    import re

    from services.mail import parse

    assert isinstance(email.feedparser.re, parse._FeedparserRe)
    corpus = _multipart_corpus()
    now = datetime(2026, 3, 2, tzinfo=UTC)  # for the ones whose Date is damaged
    ours = [parse_message(raw, now) for raw in corpus]
    monkeypatch.setattr(email.feedparser, "re", re)
    assert [parse_message(raw, now) for raw in corpus] == ours


def _multipart_corpus() -> list[bytes]:
    msg = EmailMessage()
    msg["From"] = "A <a@x.example>"
    msg["Subject"] = "Nested"
    msg["Date"] = "Mon, 2 Mar 2026 09:30:00 +0000"
    msg.set_content("Hello\r\n\r\n--not a boundary\r\n")
    msg.add_alternative("<p>Hello</p>", subtype="html")
    msg.add_attachment(b"%PDF" * 50, maintype="application", subtype="pdf", filename="a.pdf")
    inner = EmailMessage()
    inner["Subject"] = "Forwarded"
    inner.set_content("inner")
    inner.add_attachment(b"x" * 10, maintype="image", subtype="png", filename="i.png")
    msg.add_attachment(inner)
    base = msg.as_bytes()
    rnd = random.Random(9)
    corpus = [base, base.replace(b"\r\n", b"\n"), base.replace(b"\n", b"\r\n")]
    noise = [b"--", b"\r\n", b"\n", b" ", b"\t", b"\r", b"=="]
    for _ in range(300):
        raw = bytearray(base)
        for _ in range(rnd.randint(1, 8)):
            pos = rnd.randrange(len(raw))
            if rnd.random() < 0.5:
                del raw[pos : pos + rnd.randint(1, 6)]
            else:
                raw[pos:pos] = rnd.choice(noise)
        corpus.append(bytes(raw))
    return corpus
