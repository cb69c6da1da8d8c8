"""Parsing synced mail: `services.mail.parse` next to the bare standard-library parser.

    python -m bench.parse [MESSAGES]

Builds MESSAGES (default 2,000) sample messages with CRLF lines (as IMAP delivers them), a
quarter of each kind:
- plain:       a few KB of text/plain;
- alternative: text and HTML (multipart/alternative), as bench/mail_sync.py sends, a
  quarter of them replies with In-Reply-To and References;
- pdf:         the same with a PDF of about 20 KB attached (base64);
- rfc2047:     German mail: RFC 2047 subject and display names, UTF-8 quoted-printable
  bodies, an attachment with an RFC 2231 file name.
Then times, in this process on the same bytes:
- portico:  `quick_parse.parse_message(raw)`, as the sync parses (and `parse_participants` on
  each message's From/To/Cc block);
- stock: `parse.parse_message(raw)`, the reading quick_parse leaves uncommon shapes to;
- baseline: `email.message_from_bytes(raw, policy=compat32)`, the least any parse must do
  with the standard library (its multipart boundaries matched as parse.py has the feedparser
  match them, without a regular expression per message: parse.py is imported);
- rust: `fast_mail_parser.parse_email(raw)` (the Rust mail-parser) when it is installed,
  for reference: not used by Portico (its answers are not the stdlib path's).
Each figure is the median of ROUNDS passes over all messages, in ms per message; the ratio
is Portico time / baseline time. Never part of `make test`.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from services.mail import parse
from services.mail.parse import parse_participants
from services.mail.quick_parse import parse_message

ROUNDS = 5
CLIENTS = 50
USER = "inbox@bench.example"
KINDS = ("plain", "alternative", "pdf", "rfc2047")
PARAGRAPH = (
    "Please find the figures for the last quarter below. The VAT return is due on the tenth, "
    "and we still need the receipts for the office equipment bought in March.\n"
)
ABSATZ = (
    "Anbei die Unterlagen für das letzte Quartal. Die Umsatzsteuervoranmeldung ist am Zehnten "
    "fällig, und wir benötigen noch die Belege für die im März gekauften Büromöbel.\n"
)
PDF = b"%PDF-1.4\n" + b"1 0 obj << /Type /Catalog >> endobj\n" * 550


def _headers(msg: EmailMessage, n: int, subject: str, sender: str) -> None:
    msg["From"] = sender
    msg["To"] = USER
    if n % 3 == 0:
        msg["Cc"] = f"Partner <partner{n % 7}@bench.example>, assistant@bench.example"
    msg["Subject"] = subject if n % 4 else f"Re: {subject}"
    msg["Date"] = format_datetime(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n))
    msg["Message-ID"] = make_msgid(f"m{n}", "clients.example")
    if n % 4 == 0:
        msg["In-Reply-To"] = f"<m{n - 1}@clients.example>"
        msg["References"] = f"<m{n - 2}@clients.example> <m{n - 1}@clients.example>"


def message(kind: str, n: int) -> bytes:
    """One message of `kind`, its lines ended by CRLF as an IMAP server delivers them."""
    return _message(kind, n).replace(b"\n", b"\r\n")


def _message(kind: str, n: int) -> bytes:
    msg = EmailMessage()
    client = n % CLIENTS
    if kind == "rfc2047":
        _headers(
            msg,
            n,
            f"Rückfrage zur Steuererklärung {n // 4}",
            f"Jürgen Müller {client} <juergen{client}@mandanten.example>",
        )
        msg.set_content(ABSATZ * 12, cte="quoted-printable")
        msg.add_alternative(
            f"<html><body><p>{ABSATZ * 12}</p></body></html>", "html", cte="quoted-printable"
        )
        msg.add_attachment(
            PDF, maintype="application", subtype="pdf", filename=f"Steuerbescheid für {client}.pdf"
        )
        return bytes(msg)
    _headers(
        msg, n, f"Quarterly figures {n // 4}", f"Client {client} <client{client}@clients.example>"
    )
    msg.set_content(PARAGRAPH * 12)
    if kind != "plain":
        msg.add_alternative(f"<html><body><p>{PARAGRAPH * 12}</p></body></html>", "html")
    if kind == "pdf":
        msg.add_attachment(PDF, maintype="application", subtype="pdf", filename=f"Q{n}.pdf")
    return bytes(msg)


def header_block(raw: bytes) -> bytes:
    """From, To and Cc of `raw`, as the sync FETCHes them (BODY.PEEK[HEADER.FIELDS (...)])."""
    head = raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    lines, keep = [], False
    for line in head.splitlines(keepends=True):
        if line[:1] not in (b" ", b"\t"):
            keep = line.split(b":", 1)[0].lower() in (b"from", b"to", b"cc")
        if keep:
            lines.append(line)
    return b"".join(lines) + b"\r\n"


def timed(action: Callable[[bytes], object], samples: list[bytes]) -> float:
    """Median seconds per message over ROUNDS passes (after a warm-up pass)."""
    for raw in samples:
        action(raw)
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for raw in samples:
            action(raw)
        rounds.append((time.perf_counter() - started) / len(samples))
    return statistics.median(rounds)


def bare(raw: bytes) -> object:
    return message_from_bytes(raw, policy=policy.compat32)


def rust() -> Callable[[bytes], object] | None:
    try:
        import fast_mail_parser
    except ImportError:
        return None
    return fast_mail_parser.parse_email


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000
    by_kind = {kind: [message(kind, n) for n in range(count // len(KINDS))] for kind in KINDS}
    every = [raw for n in range(count // len(KINDS)) for raw in (by_kind[k][n] for k in KINDS)]
    sizes = {kind: statistics.mean(len(r) for r in by_kind[kind]) for kind in KINDS}
    print(f"parse_message, {len(every)} messages, median of {ROUNDS} passes, ms per message")
    other = rust()
    print(
        f"  {'kind':<12} {'size':>8} {'portico':>9} {'stock':>9} {'baseline':>9} {'ratio':>7}"
        + (f" {'rust':>9}" if other else "")
    )
    rows = [(kind, by_kind[kind], f"{sizes[kind] / 1024:6.1f}KB") for kind in KINDS]
    rows.append(("all", every, ""))
    for name, samples, size in rows:
        ours, base = timed(parse_message, samples), timed(bare, samples)
        stock = timed(parse.parse_message, samples)
        line = (
            f"  {name:<12} {size:>8} {ours * 1000:9.3f} {stock * 1000:9.3f} {base * 1000:9.3f}"
            f" {ours / base:6.1f}x"
        )
        if other is not None:
            line += f" {timed(other, samples) * 1000:9.3f}"
        print(line)
    blocks = [header_block(raw) for raw in every]
    ours, base = timed(parse_participants, blocks), timed(bare, blocks)
    print("parse_participants, the From/To/Cc block of each message")
    print(
        f"  {'all':<12} {'':>8} {ours * 1000:9.3f} {'':>9} {base * 1000:9.3f} {ours / base:6.1f}x"
    )


if __name__ == "__main__":
    main()
