"""services/outbound/wire: the platform's mail written directly reads back as written.

Each message is parsed with the stdlib (policy.default) and compared with the values it was
built from and with transport.build_message's message (the reference for structure); a
hypothesis test does so for generated names, subjects and bodies.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from models import OutboundEmail
from portico.settings import Settings
from portico.worker import run_worker
from services.outbound.outbox import Bodies, header_text
from services.outbound.transport import build_message
from services.outbound.wire import build_wire, platform_sender

SETTINGS = Settings(mail_from="Portico <mail@portico.example>", _env_file=None)
DATE = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
ENCODED_WORD = re.compile(rb"=\?[^?]+\?[bBqQ]\?[^?]*\?=")


def _row(**changes: Any) -> OutboundEmail:
    fields = {
        "id": 7,
        "firm_id": 1,
        "kind": "INVITATION",
        "to_address": "client@example.com",
        "from_name": "Acme LLP",
        "subject": "Hi",
        "body_encrypted": "",
        "message_id": "<outbox.abc@portico.example>",
        "attempts": 0,
        "next_attempt_at": DATE,
    }
    return OutboundEmail(**{**fields, **changes})


def _parsed(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _display_name(data: bytes) -> str:
    """The From name as RFC 2047 reads it: whitespace between two encoded words is not
    part of the text. (policy.default's parser keeps it in a phrase, so a name folded into
    several encoded words reads back with spaces added, build_message's as well.)"""
    raw = message_from_bytes(data, policy=policy.compat32)["From"]
    [(name, _)] = getaddresses([re.sub(r"\r?\n(?=[ \t])", "", raw)])
    return str(make_header(decode_header(name)))


def _longest_line(data: bytes) -> int:
    return max(len(line) for line in data.split(b"\r\n"))


def test_a_long_non_ascii_name_is_folded_into_short_encoded_words():
    for name in ("😀" * 200, "Müller & Söhne Steuerberatungsgesellschaft mbH Köln"):
        wire = build_wire(_row(from_name=name), Bodies("x\n", ""), SETTINGS, DATE).data
        assert _longest_line(wire) <= 78
        words = ENCODED_WORD.findall(wire)
        assert words and max(len(word) for word in words) <= 75  # RFC 2047, section 2
        assert _display_name(wire) == name
        assert _parsed(wire)["From"].addresses[0].addr_spec == "mail@portico.example"


@pytest.mark.parametrize(
    "name",
    ["Smith, Jones & Co.", 'The "Best" Firm', "Back\\slash LLP", "a =?utf-8?q?x?= b", "x" * 90],
)
def test_ascii_names_with_specials_read_as_written(name):
    wire = build_wire(_row(from_name=name), Bodies("x\n", ""), SETTINGS, DATE).data
    assert _longest_line(wire) <= 998
    assert _display_name(wire) == name
    if len(name) < 76:  # one word: the email package reads it as written too
        assert _parsed(wire)["From"].addresses[0].display_name == name


@pytest.mark.parametrize("length", [75, 77, 200, 998])
def test_a_subject_with_a_long_first_word_reads_as_written(length):
    subject = "x" * length
    wire = build_wire(_row(subject=subject), Bodies("x\n", ""), SETTINGS, DATE).data
    assert str(_parsed(wire)["Subject"]) == subject  # no leading space
    assert _longest_line(wire) <= 998
    assert not re.search(rb"^Subject:\r\n", wire, re.MULTILINE)


def test_a_non_ascii_sender_domain_goes_as_idna():
    settings = Settings(mail_from="Portico <mail@bücher.example>", _env_file=None)
    wire = build_wire(_row(), Bodies("x\n", ""), settings, DATE)
    assert wire.sender == "mail@xn--bcher-kva.example"
    assert wire.data.isascii()
    assert str(_parsed(wire.data)["From"]) == "Acme LLP <mail@xn--bcher-kva.example>"
    reference = build_message(_row(), Bodies("x\n", ""), settings, DATE)
    assert str(reference["From"]) == "Acme LLP <mail@xn--bcher-kva.example>"


async def test_a_sender_with_no_ascii_form_stops_the_worker_at_its_start(tmp_path):
    settings = Settings(
        mail_from="Portico <jörg@portico.example>", var_dir=tmp_path, _env_file=None
    )
    with pytest.raises(ValueError, match="PORTICO_MAIL_FROM"):
        platform_sender(settings)
    with pytest.raises(ValueError, match="PORTICO_MAIL_FROM"):
        await asyncio.wait_for(run_worker(settings, asyncio.Event()), 5)


# The differential test: generated rows through build_wire and build_message, parsed back.

_ANY = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
# Characters that need quoting or encoding, and a word too long to fold.
_PIECES = [*'ab "\\,;:=?_@.<>()[]é😀漢\t\r\n\x00\x85\u2028', "x" * 80]
_TRICKY = st.lists(st.sampled_from(_PIECES), max_size=60).map("".join)


def _check(name: str, subject: str, text: str, html: str) -> None:
    row = _row(from_name=header_text(name, 200), subject=header_text(subject))
    bodies = Bodies(text, html)
    wire = build_wire(row, bodies, SETTINGS, DATE)
    assert wire.data.isascii()
    assert _longest_line(wire.data) <= 998
    ours = _parsed(wire.data)
    # The reference for To, the structure and the bodies, with a plain name: the email
    # package folds a name of two words too long to fold into a blank line, which ends
    # build_message's headers early (To lost).
    reference = _row(from_name="Acme LLP", subject=row.subject)
    theirs = _parsed(build_message(reference, bodies, SETTINGS, DATE).as_bytes())
    # The intended name, not build_message's, read as RFC 2047 says (see _display_name).
    assert _display_name(wire.data) == row.from_name
    assert str(ours["Subject"]) == row.subject
    assert str(ours["To"]) == str(theirs["To"]) == "client@example.com"
    assert ours.get_content_type() == theirs.get_content_type()
    for kind in ("plain", "html"):
        mine, reference = ours.get_body((kind,)), theirs.get_body((kind,))
        assert (mine is None) == (reference is None)
        if mine is not None:
            a = mine.get_content().replace("\r\n", "\n")
            b = reference.get_content().replace("\r\n", "\n")
            assert a == b or (a, b) == ("", "\n")  # an empty part: "" against "\n"


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=_ANY.filter(lambda s: header_text(s, 200)), subject=_ANY, text=_ANY, html=_ANY)
def test_generated_messages_read_back_as_written(name, subject, text, html):
    _check(name, subject, text, html)


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    name=_TRICKY.filter(lambda s: header_text(s, 200)), subject=_TRICKY, text=_TRICKY, html=_TRICKY
)
def test_generated_tricky_messages_read_back_as_written(name, subject, text, html):
    _check(name, subject, text, html)


def test_a_from_name_of_overlong_words_never_ends_the_headers_early():
    """The email package folds two words longer than a line into a blank line: build_message
    sends such a name's address alone, so To and the rest of the headers stay."""
    row = _row(from_name="a" * 80 + " " + "b" * 80)
    message = _parsed(build_message(row, Bodies("hello", None), SETTINGS, DATE).as_bytes())
    assert message["To"] == "client@example.com"
    assert message["From"] == "mail@portico.example"
    assert message.get_content().strip() == "hello"
