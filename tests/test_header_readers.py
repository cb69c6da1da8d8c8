"""parse._Policy's header readers against the email package's own (policy.default): the
plain forms it reads itself (`_Plain`) must give the registry's text and attributes, and
every other value must be left to the registry, on generated and perturbed header values."""

from __future__ import annotations

import email.policy
from typing import Any

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from services.mail import parse

STOCK = email.policy.default
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "mon", "Foo", ""]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _read(policy: Any, name: str, value: str) -> tuple[str, Any, Any] | str:
    """What Portico takes of a header: its text, its datetime and its disposition; or the
    error the reader raised."""
    try:
        header = policy.header_fetch_parse(name, value)
        return (
            str(header),
            getattr(header, "datetime", None),
            getattr(header, "content_disposition", None),
        )
    except Exception as exc:  # the registry raises on some hostile values: so must ours
        return type(exc).__name__


def _same(name: str, value: str) -> None:
    parse._READ.clear()
    assert _read(parse._POLICY, name, value) == _read(STOCK, name, value), (name, value)


@st.composite
def dates(draw: st.DrawFn) -> str:
    """RFC 5322 dates as mail clients write them, and near misses."""
    day = draw(st.sampled_from(DAYS))
    sep = draw(st.sampled_from([", ", ",", " ", ",  "]))
    date = draw(st.integers(0, 40))
    pad = draw(st.booleans())
    month = draw(st.sampled_from([*MONTHS, "jan", "JAN", "Foo"]))
    year = draw(st.sampled_from(["2026", "1999", "0999", "26", "70", "10000", "2o26"]))
    hh, mm, ss = (draw(st.integers(0, 61)) for _ in range(3))
    clock = draw(
        st.sampled_from(
            [f"{hh:02d}:{mm:02d}:{ss:02d}", f"{hh:02d}:{mm:02d}", f"{hh}:{mm:02d}:{ss:02d}"]
        )
    )
    zone = draw(
        st.sampled_from(
            [
                *("+0000", "-0000", "+0100", "-0530", "+1400", "+2359", "+2400", "-9999"),
                *("+0099", "GMT", "EST", "UT", "Z", "+00:00", "", "(comment)", "+0000 (UTC)"),
            ]
        )
    )
    text = f"{day}{sep if day else ''}{date:02d}" if pad else f"{day}{sep if day else ''}{date}"
    text = f"{text} {month} {year} {clock} {zone}"
    return draw(st.sampled_from([text, text.strip(), f" {text}", f"{text} ", text.upper()]))


@hypothesis_settings(max_examples=1500, deadline=None)
@given(value=dates())
def test_dates_read_as_the_registry_reads_them(value: str) -> None:
    _same("Date", value)


@hypothesis_settings(max_examples=300, deadline=None)
@given(value=st.text(st.sampled_from("MonTueJan, 0123456789:+-GMT\t"), max_size=40))
def test_date_soup_reads_as_the_registry_reads_it(value: str) -> None:
    _same("Date", value)


@st.composite
def rfc5322_dates(draw: st.DrawFn) -> str:
    """The form nearly all mail writes, any weekday name, days past a month's end, offsets
    up to and past a day, "-0000"."""
    sign = draw(st.sampled_from("+-"))
    zone = draw(st.sampled_from([f"{sign}0000", f"{sign}{draw(st.integers(0, 9999)):04d}"]))
    return (
        f"{draw(st.sampled_from(DAYS[:7]))}, {draw(st.integers(1, 31))} "
        f"{draw(st.sampled_from(MONTHS))} {draw(st.integers(1000, 9999))} "
        f"{draw(st.integers(0, 24)):02d}:{draw(st.integers(0, 59)):02d}:"
        f"{draw(st.integers(0, 60)):02d} {zone}"
    )


@hypothesis_settings(max_examples=1500, deadline=None)
@given(value=rfc5322_dates())
def test_rfc5322_dates_read_as_the_registry_reads_them(value: str) -> None:
    assert parse._DATE.fullmatch(value)  # the form read without the general parser
    _same("Date", value)


def test_every_header_of_generated_and_damaged_mail_reads_as_the_registry_reads_it() -> None:
    """Subject, Message-ID, Content-Type and the rest, as the split tests' mail carries them
    (encoded words, MIME parameters, RFC 2231 names), whole and damaged."""
    import random

    from tests.test_mime_split import STOCK as FEEDPARSER
    from tests.test_mime_split import _damaged, _mail

    rnd = random.Random(17)
    corpus = [_mail(rnd) for _ in range(150)]
    corpus += [_damaged(raw, rnd) for raw in corpus]
    read = 0
    for raw in corpus:
        for part in FEEDPARSER.parsebytes(raw).walk():
            for name, value in part.raw_items():
                if name.lower() in parse._PLAIN_READERS and isinstance(value, str):
                    _same(name, parse._unfold(value))
                    read += 1
    assert read > 1000


@st.composite
def mime_values(draw: st.DrawFn) -> str:
    """Content-Type and Content-Disposition values: several parameters (tokens, quoted,
    RFC 2231, repeated, empty, odd case), stray semicolons and blanks."""
    head = draw(st.sampled_from(["text/plain", "multipart/mixed", "attachment", "inline", "x"]))
    parameter = st.sampled_from(
        [
            'charset="utf-8"',
            "charset=us-ascii",
            "Charset=UTF-8",
            'boundary="==b=="',
            'name="a b.pdf"',
            "filename*=utf-8''%C3%BC.pdf",
            "filename*=iso-8859-1'de'M%E4rz.txt",
            'x=""',
            "x",
            "Flag",
            'Q=""',
            'q="a;b"',
            'e="=?utf-8?q?x?="',
            "format=flowed",
            "",
        ]
    )
    parts = draw(st.lists(parameter, max_size=4))
    blank = draw(st.sampled_from(["", " ", "\t", "  "]))
    return head + "".join(f";{blank}{p}" for p in parts) + draw(st.sampled_from(["", ";", " "]))


@hypothesis_settings(max_examples=800, deadline=None)
@given(value=mime_values(), name=st.sampled_from(["Content-Type", "Content-Disposition"]))
def test_mime_parameters_read_as_the_registry_reads_them(value: str, name: str) -> None:
    _same(name, value)


def _parameters(message: Any, name: str, value: str) -> tuple[Any, ...] | str:
    """What the email package's getters read of a MIME header's parameters."""
    message.set_raw(name, value)
    try:
        return (
            message._get_params_preserve(None, name),
            message.get_params(header=name),
            message.get_boundary(),
            message.get_filename(),
            message.get_content_charset(),
            message.get_param("x", header=name),
        )
    except Exception as exc:
        return type(exc).__name__


@hypothesis_settings(max_examples=800, deadline=None)
@given(value=mime_values(), name=st.sampled_from(["Content-Type", "Content-Disposition"]))
def test_mime_parameters_read_back_as_the_email_package_reads_them(value: str, name: str) -> None:
    """Parameters kept with a plain value (`_params_read_back`) are those the email package
    parses out of its text."""
    from email.message import EmailMessage

    parse._READ.clear()
    parse._PARAMS_READ.clear()
    ours = _parameters(parse._Part(policy=parse._POLICY), name, value)
    assert ours == _parameters(EmailMessage(policy=STOCK), name, value), value
