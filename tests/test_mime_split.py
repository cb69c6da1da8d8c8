"""services/mail/mime_split against the feedparser it stands in for: wherever `split` answers,
its tree is the feedparser's (headers, payloads, parts) and `parse_message` reads the same from
it, on mail built by the email package, on line soup made to hit boundary and header edge
cases, and on damaged copies of both. Wherever services/mail/quick_parse answers, on the same
mail, its answer is `parse_message`'s."""

from __future__ import annotations

import email.feedparser
import random
import re
from datetime import UTC, datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from services.mail import mime_split, parse, quick_parse

NOW = datetime(2026, 3, 2, tzinfo=UTC)
# The feedparser with Portico's header readers and plain EmailMessages (not parse._Part).
STOCK = BytesParser(policy=parse._POLICY.clone(message_factory=EmailMessage))


def _tree(msg: EmailMessage) -> object:
    """What Portico can read of a parsed message: headers, content type, payload, parts."""
    payload = msg.get_payload()
    parts = [_tree(p) for p in payload] if isinstance(payload, list) else payload
    return (msg._headers, msg.get_content_type(), msg.get_default_type(), parts)


def _same_as_feedparser(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Asserts that split's answer, when there is one, is the feedparser's (with its own
    boundary expressions, not parse.py's stand-in); True if it answered."""
    with monkeypatch.context() as patch:
        patch.setattr(email.feedparser, "re", re)
        return _same_as_stock_feedparser(raw, monkeypatch)


def _same_as_stock_feedparser(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> bool:
    ours = mime_split.split(raw, parse._POLICY)
    heads = mime_split.split_headers(raw, parse._POLICY)
    if heads is not None:
        stock_heads = STOCK.parsebytes(raw, headersonly=True)
        assert (heads._headers, heads.get_payload()) == (
            stock_heads._headers,
            stock_heads.get_payload(),
        ), raw
        read_only = mime_split.split_headers(raw, parse._POLICY, parse._Split)
        assert (read_only._headers, read_only.get_payload()) == (
            heads._headers,
            heads.get_payload(),
        )
    if ours is None:
        return False
    assert _tree(ours) == _tree(STOCK.parsebytes(raw)), raw
    assert _tree(mime_split.split(raw, parse._POLICY, parse._Split)) == _tree(ours), raw
    fast = parse.parse_message(raw, NOW, max_attachment_bytes=64)
    participants = parse.parse_participants(raw)
    with monkeypatch.context() as patch:  # the email package as it comes: no split, no _Part,
        # get_body and get_content themselves
        patch.setattr(mime_split, "split", lambda *args: None)
        patch.setattr(parse, "_PARSER", STOCK)
        patch.setattr(parse, "_body_parts", _stock_body_parts)
        patch.setattr(parse, "raw_data_manager", None)
        assert parse.parse_message(raw, NOW, max_attachment_bytes=64) == fast, raw
        assert parse.parse_participants(raw) == participants, raw
    return True


def _read_plain_as_parse(raw: bytes) -> bool:
    """Asserts that quick_parse's answer, when there is one, is parse_message's; True if it
    answered."""
    quick = quick_parse.read_plain(raw, NOW, max_attachment_bytes=64)
    if quick is None:
        return False
    assert quick == parse.parse_message(raw, NOW, max_attachment_bytes=64), raw
    return True


def _stock_body_parts(msg: EmailMessage) -> tuple[EmailMessage | None, EmailMessage | None]:
    raise LookupError("read by get_body")  # parse._bodies then asks get_body for each


def _mail(rnd: random.Random) -> bytes:
    """A message as mail clients write them: text, HTML, attachments, inline pictures,
    forwarded mail, encoded names and subjects, several charsets and transfer encodings."""
    msg = EmailMessage()
    msg["From"] = rnd.choice(["A <a@x.example>", "=?utf-8?q?J=C3=BCrgen?= <j@x.example>"])
    msg["To"] = ", ".join(f"p{n}@y.example" for n in range(rnd.randint(1, 3)))
    msg["Subject"] = rnd.choice(["Figures", "Übersicht 2026", "Re: " + "long words " * 12])
    msg["Date"] = "Mon, 2 Mar 2026 09:30:00 +0100"
    msg["Message-ID"] = f"<m{rnd.randint(0, 10**6)}@x.example>"
    text = rnd.choice(["Hello\n", "Grüße\n" * 3, "x" * 200 + "\n", "--\nsig\n", ""])
    msg.set_content(
        text,
        charset=rnd.choice(["utf-8", "us-ascii"]) if text.isascii() else "utf-8",
        cte=rnd.choice([None, "quoted-printable", "base64"]),
    )
    if rnd.random() < 0.7:
        msg.add_alternative("<p>" + text + "</p>", subtype="html")
    if rnd.random() < 0.3:
        html = msg.get_body(("html",))
        if html is not None:
            html.add_related(b"\x89PNG" * 20, "image", "png", cid="<pic@x>")
    for _ in range(rnd.randint(0, 2)):
        name = rnd.choice(["a.pdf", "Bericht März.pdf", "x" * 90 + ".txt", "b c.doc"])
        msg.add_attachment(
            bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 300))),
            maintype="application",
            subtype="octet-stream",
            filename=name,
        )
    if rnd.random() < 0.15:
        inner = EmailMessage()
        inner["Subject"] = "Forwarded"
        inner.set_content("inner")
        msg.add_attachment(inner)
    raw = msg.as_bytes()
    return raw if rnd.random() < 0.1 else raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _damaged(raw: bytes, rnd: random.Random) -> bytes:
    noise = [b"--", b"\r\n", b"\n", b"\r", b" ", b"\t", b"==", b":", b"\r\n\r\n", b"-- \r\n"]
    out = bytearray(raw)
    for _ in range(rnd.randint(1, 6)):
        pos = rnd.randrange(len(out) + 1)
        if rnd.random() < 0.5:
            del out[pos : pos + rnd.randint(1, 8)]
        else:
            out[pos:pos] = rnd.choice(noise)
    return bytes(out)


def test_mail_as_clients_write_it_splits_as_the_feedparser_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rnd = random.Random(14)
    answered = quick = 0
    for _ in range(400):
        raw = _mail(rnd)
        answered += _same_as_feedparser(raw, monkeypatch)
        quick += _read_plain_as_parse(raw)
    assert answered >= 300  # CRLF mail without forwarded messages: nearly all of it
    assert quick >= 280  # all of it here: attachments are read by parse's own functions


def test_damaged_mail_splits_as_the_feedparser_reads_it_or_not_at_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rnd = random.Random(15)
    answered = quick = 0
    for _ in range(800):
        raw = _damaged(_mail(rnd), rnd)
        answered += _same_as_feedparser(raw, monkeypatch)
        quick += _read_plain_as_parse(raw)
    assert answered >= 100  # damage in a body leaves the message plain
    assert quick >= 150


# Line soup: headers, boundary lines of nested multiparts (prefixes of each other, with
# whitespace, closing or not), blank lines and text, joined by CRLF or by stray line ends.
_BOUNDARIES = ["b", "b1", "bb", "b b", "b.(x)"]
_HEADER_LINES = [
    'Content-Type: multipart/mixed; boundary="{b}"',
    'Content-Type: multipart/alternative;\r\n boundary="{b}"',
    "Content-Type: text/plain; charset=utf-8",
    "Content-Type: text/html",
    'Content-Type: multipart/digest; boundary="{b}"',
    "Content-Type: message/rfc822",
    "Content-Type: multipart/mixed",
    "Content-Transfer-Encoding: base64",
    "Content-Transfer-Encoding: quoted-printable",
    'Content-Disposition: attachment; filename="a.pdf"',
    "Subject: hi",
    "Subject:",
    "X-Folded: one\r\n\ttwo",
    " continued",
    "From someone",
    ":no name",
    "Bad Name: x",
    "Subject: Gr\udcc3\udcbc\udcc3\udc9fe",
]


@st.composite
def line_soup(draw: st.DrawFn) -> bytes:
    lines: list[str] = []
    for _ in range(draw(st.integers(1, 40))):
        boundary = draw(st.sampled_from(_BOUNDARIES))
        kind = draw(st.integers(0, 9))
        if kind <= 2:
            lines.append(draw(st.sampled_from(_HEADER_LINES)).format(b=boundary))
        elif kind <= 5:
            tail = draw(st.sampled_from(["", "--", " ", "\t", "-- ", "x", "--x", "---"]))
            lines.append("--" + boundary + tail)
        elif kind <= 7:
            lines.append("")
        else:
            lines.append(draw(st.sampled_from(["text", "=C3=BC", "aGVsbG8=", "\x0c", "<p>"])))
    joiners = draw(
        st.lists(
            st.sampled_from(["\r\n"] * 12 + ["\n", "\r"]), min_size=len(lines), max_size=len(lines)
        )
    )
    ending = draw(st.sampled_from(["", "\r\n"]))
    text = "".join(line + joiner for line, joiner in zip(lines, joiners, strict=True))
    return (text[: -len(joiners[-1])] + ending).encode("ascii", "surrogateescape")


_FILLER = ["text", "", "--", "-- ", "=C3=BC", "--b1x", "--bb-", " --b", "\x0c--b"]


@st.composite
def entity(draw: st.DrawFn, depth: int = 0) -> list[str]:
    """The lines of a well-formed message or part (multiparts nested up to three deep, their
    boundaries possibly prefixes of each other, or the same), with text that looks like
    boundary lines here and there."""
    filler = st.lists(st.sampled_from(_FILLER), max_size=3)
    if depth < 3 and draw(st.booleans()):
        boundary = draw(st.sampled_from(_BOUNDARIES))
        subtype = draw(st.sampled_from(["mixed", "alternative", "related"]))
        lines = [f'Content-Type: multipart/{subtype}; boundary="{boundary}"', ""]
        lines += draw(filler)
        for _ in range(draw(st.integers(1, 3))):
            lines.append("--" + boundary + draw(st.sampled_from(["", " ", "\t ", "  "])))
            lines += draw(entity(depth + 1))
        lines.append("--" + boundary + "--" + draw(st.sampled_from(["", " "])))
        return lines + draw(filler)
    simple = [h for h in _HEADER_LINES if "boundary" not in h and "rfc822" not in h]
    headers = draw(st.lists(st.sampled_from(simple), max_size=3))
    return [*headers, "", *draw(filler)]


@st.composite
def structured_mail(draw: st.DrawFn) -> bytes:
    lines = draw(entity())
    joined = "\r\n".join(lines) + draw(st.sampled_from(["", "\r\n"]))
    if draw(st.integers(0, 9)) == 0:  # a stray line end somewhere
        at = draw(st.integers(0, len(joined)))
        joined = joined[:at] + draw(st.sampled_from(["\n", "\r"])) + joined[at:]
    return joined.encode("ascii", "surrogateescape")


@hypothesis_settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.one_of(line_soup(), structured_mail()))
def test_line_soup_and_nested_multiparts_split_as_the_feedparser_reads_them(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    _same_as_feedparser(raw, monkeypatch)
    _read_plain_as_parse(raw)


@pytest.mark.parametrize(
    "raw",
    [
        # Nested multiparts, the inner boundary a prefix of the outer one; whitespace after
        # boundary lines; a part without headers; a last line without CRLF.
        b'Content-Type: multipart/mixed; boundary="bb"\r\n\r\npre --bb\r\n--bb \t\r\n'
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n\r\nno headers\r\n'
        b"--bx\r\n--b--\r\nepilogue\r\n--bb\r\nContent-Type: text/html\r\n\r\n<p>\r\n--bb-- ",
        b"Subject: plain\r\n\r\nbody\r\n--not a boundary\r\n",
        b"Subject: folded\r\n  over\r\n\tlines  \r\nX: \r\n\r\n",
        # multipart/related: its start part is the body (get_body reads no other part), or
        # its first part when start names none; a text part sent as an attachment is none.
        b'Content-Type: multipart/related; boundary="r"; start="<h@x>"\r\n\r\n--r\r\n'
        b"Content-Type: text/html\r\n\r\n<p>first</p>\r\n--r\r\nContent-ID: <h@x>\r\n"
        b"Content-Type: text/html\r\n\r\n<p>start</p>\r\n--r--\r\n",
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
        b'Content-Type: multipart/related; boundary="r"; start="<none@x>"\r\n\r\n--r\r\n'
        b"Content-Type: text/html\r\n\r\n<p>first</p>\r\n--r\r\n"
        b"Content-Type: text/plain\r\n\r\nnot read\r\n--r--\r\n--m\r\n"
        b"Content-Type: text/plain\r\n\r\nread\r\n--m--\r\n",
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
        b"Content-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nfile\r\n"
        b"--m\r\nContent-Type: text/plain\r\n\r\nbody\r\n--m--\r\n",
        # Lone CRs and LFs in payloads, kept there as the feedparser keeps them.
        b"Subject: lone line ends\r\n\r\none\ntwo\rthree\n\n",
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n\r\na\nb\rc\r\r\n'
        b"--m\r\n\r\nd--m\n\r\n--m--\r\n",
    ],
)
def test_edge_cases_split_as_the_feedparser_reads_them(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _same_as_feedparser(raw, monkeypatch)
    _read_plain_as_parse(raw)


@st.composite
def multipart_types(draw: st.DrawFn) -> str:
    """Content-Type values of multiparts: the plain form quick_parse reads itself, in any
    case and spacing, folded or not, and near misses (other characters, other parameters)."""
    blank = st.sampled_from(["", " ", "\t", "  "])
    subtype = draw(st.sampled_from(["mixed", "Alternative", "RELATED", "digest", "x-y", "a_b"]))
    plain_chars, other_chars = st.sampled_from("aZ09'()+_,./:=-"), st.sampled_from('? "\\<>;')
    boundary = draw(
        st.one_of(
            st.text(plain_chars, min_size=1, max_size=12),
            st.text(st.one_of(plain_chars, other_chars), max_size=12),
        )
    )
    name = draw(st.sampled_from(["boundary"] * 4 + ["Boundary", "boundary*", "start"]))
    fold = draw(st.sampled_from(["", "\r\n ", "\r\n\t"]))  # a header line continued
    tail = draw(st.sampled_from([""] * 4 + ['; start="<a@b>"', ";", "; charset=x"]))
    return (
        f"{draw(blank)}multipart/{subtype}{draw(blank)};{fold}{draw(blank)}"
        f'{name}="{boundary}"{draw(blank)}{tail}'
    )


@hypothesis_settings(max_examples=1500, deadline=None)
@given(value=multipart_types())
def test_plain_multipart_types_read_as_the_email_package_reads_them(value: str) -> None:
    """quick_parse's own reading of a plain multipart Content-Type (its subtype and boundary)
    is the email package's (get_content_subtype, get_boundary, no start)."""
    plain = quick_parse.plain_multipart(value)
    if plain is None:
        return
    msg = BytesParser(policy=email_policy.default).parsebytes(
        f"Content-Type: {value}\r\n\r\n".encode()
    )
    assert msg.get_content_maintype() == "multipart", value
    assert plain == (msg.get_content_subtype(), msg.get_boundary()), value
    assert msg.get_param("start") is None


@pytest.mark.parametrize(
    "raw",
    [
        # multipart/related without `start`: its first part is the body; a text part after
        # it is found only by walking the whole message.
        b'Content-Type: multipart/related; boundary="r"\r\n\r\n--r\r\n'
        b"Content-Type: text/html\r\n\r\n<p>first</p>\r\n--r\r\n"
        b"Content-Type: text/html\r\n\r\n<p>second</p>\r\n--r\r\n"
        b"Content-Type: text/plain\r\n\r\nwalked to\r\n--r--\r\n",
        # A text part with a name is an attachment, not a body.
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
        b'Content-Type: text/plain; name="notes.txt"\r\n\r\nfile\r\n--m\r\n'
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nbody\r\n--m--\r\n",
        # Boundaries as get_boundary reads them: trailing blanks dropped, <> taken off.
        b'Content-Type: multipart/mixed; boundary="m "\r\n\r\n--m\r\n\r\none\r\n'
        b"--m\r\nContent-Type: text/html\r\n\r\n<p>two</p>\r\n--m--\r\n",
        b'Content-Type: multipart/alternative; boundary="<a>"\r\n\r\n--a\r\n\r\none\r\n'
        b"--a\r\nContent-Type: text/html\r\n\r\n<p>two</p>\r\n--a--\r\n",
        # Bodies made storable: a NUL taken out, undeclared 8-bit text read as UTF-8.
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nnul=00here\r\n",
        b"Content-Type: text/html\r\n\r\n<p>Gr\xc3\xbc\xc3\x9fe</p>\r\n",
        b"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8g\r\nd29ybGQ=\r\n",
        b"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8g\r\nd\r\n",  # kept as sent
    ],
)
def test_quick_parse_reads_the_common_shapes_as_parse_does(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _same_as_feedparser(raw, monkeypatch)
    assert _read_plain_as_parse(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"Subject: lf only\n\nbody\n",  # lines ending in LF alone
        b"From a@x Mon Mar  2 09:30:00 2026\r\nSubject: mbox\r\n\r\nx\r\n",
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\nno end\r\n',
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n--b\r\n\r\nx\r\n--b--\r\n',
        b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nx\r\n",
        b"Subject: no blank line",
        # A boundary line after a lone LF or CR, or ended by one: the feedparser's lines.
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n\r\na\n--m\r\n'
        b"\r\nb\r\n--m--\r\n",
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n\r\na\r--m\r\n'
        b"\r\nb\r\n--m--\r\n",
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n\r\na\r\n--m \n'
        b"\r\nb\r\n--m--\r\n",
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n\r\na\r\n--m--\r',
        # A boundary holding CRLF (RFC 2231): the feedparser, line by line, never matches it.
        b"Content-Type: multipart/mixed; boundary*=us-ascii''a%0D%0AX-Y%3A%20z\r\n\r\n"
        b"--a\r\nX-Y: z\r\nContent-Type: text/plain\r\n\r\nhidden\r\n--a\r\nX-Y: z--\r\n",
    ],
)
def test_what_split_does_not_copy_is_left_to_the_feedparser(raw: bytes) -> None:
    assert mime_split.split(raw, parse._POLICY) is None
    assert quick_parse.read_plain(raw, NOW) is None
    assert parse.parse_message(raw, NOW) == parse.parse_message(raw, NOW)  # never raises


def test_a_part_reads_its_headers_anew_once_they_change() -> None:
    """parse._Part keeps what it read of a header only while the headers stay as they were."""
    msg = parse._PARSER.parsebytes(b"Content-Type: text/plain; charset=ascii\r\nX-A: 1\r\n\r\nx")
    assert isinstance(msg, parse._Part)
    assert (msg.get_content_type(), msg["x-a"], msg.get("x-b", "none")) == (
        "text/plain",
        "1",
        "none",
    )
    msg.replace_header("X-A", "2")
    msg.set_param("charset", "utf-8")
    msg["X-B"] = "3"
    del msg["Content-Type"]
    assert (msg.get_content_type(), msg["x-a"], msg["X-B"]) == ("text/plain", "2", "3")
    assert msg.get_param("charset") is None
    msg.set_type("text/html")
    assert msg.get_content_type() == "text/html"


def test_nesting_too_deep_for_split_is_left_to_the_feedparser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """split recurses per level; the feedparser reads deeper: a RecursionError in split is
    no failure of the message."""
    lines = ["Subject: deep", "Content-Type: multipart/mixed; boundary=b0", ""]
    depth = 600
    for level in range(1, depth):
        lines += [f"--b{level - 1}", f"Content-Type: multipart/mixed; boundary=b{level}", ""]
    lines += [f"--b{depth - 1}", "Content-Type: text/plain", "", "deep text"]
    lines += [f"--b{level}--" for level in reversed(range(depth))]
    raw = ("\r\n".join(lines) + "\r\n").encode()
    assert parse.parse_message(raw, NOW).text_body == "deep text"
    with monkeypatch.context() as patch:
        patch.setattr(mime_split, "split", lambda *args: None)
        assert parse.parse_message(raw, NOW).text_body == "deep text"


def test_a_part_reads_its_headers_anew_under_another_policy() -> None:
    from email import policy

    msg = parse._PARSER.parsebytes(b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nx")
    assert msg["Subject"] == "Grüße"
    msg.policy = policy.compat32
    assert msg["Subject"] == "=?utf-8?q?Gr=C3=BC=C3=9Fe?="


def test_readings_kept_between_messages_answer_as_reading_anew() -> None:
    """Header values, MIME parameters, address fields and parts' headers read once are kept
    for the next message (parse._READ, _PARAMS_READ, _ADDRESSES_READ, _ZONES,
    quick_parse._LEAVES_READ): a message parsed with all of them forgotten reads the same as
    one parsed after other mail filled them."""
    rnd = random.Random(16)
    corpus = [_mail(rnd) for _ in range(150)]
    corpus += [_damaged(raw, rnd) for raw in corpus[:150]]
    # Fields given twice, the first alike: each message's own second one counts.
    corpus += [
        b"From: a@x.example\r\nTo: p@y.example\r\nTo: q%d@y.example\r\n\r\nx\r\n" % n
        for n in range(3)
    ]
    # Parts' headers alike but for their case or order, and a part like a body but named.
    corpus += [
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n%s\r\n\r\nt\r\n--m--\r\n' % part
        for part in (
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64",
            b"content-type: text/plain\r\nContent-Transfer-Encoding: base64",
            b"Content-Transfer-Encoding: base64\r\nContent-Type: text/plain",
            b'Content-Type: text/plain; name="t.txt"\r\nContent-Transfer-Encoding: base64',
        )
    ]
    warm = [parse.parse_message(raw, NOW) for raw in corpus]
    quick_warm = [quick_parse.parse_message(raw, NOW) for raw in corpus]
    assert parse._ADDRESSES_READ and parse._PARAMS_READ and quick_parse._LEAVES_READ  # used
    kept_readings = (
        parse._READ,
        parse._PARAMS_READ,
        parse._ADDRESSES_READ,
        parse._ZONES,
        quick_parse._LEAVES_READ,
    )
    for raw, answer, quick in zip(corpus, warm, quick_warm, strict=True):
        for kept in kept_readings:
            kept.clear()
        assert parse.parse_message(raw, NOW) == answer, raw
        for kept in kept_readings:
            kept.clear()
        assert quick_parse.parse_message(raw, NOW) == quick == answer, raw
