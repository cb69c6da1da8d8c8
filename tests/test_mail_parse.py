"""The mail parser (services/mail/parse.py), without a database or a server: ids, subjects,
HTML and text made storable, and damaged mail that never makes it raise."""

from __future__ import annotations

import random
from email.message import EmailMessage

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
