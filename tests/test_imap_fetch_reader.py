"""ImapSession's own reader of UID FETCH answers (services/mail/imap._FetchReader) reads what
stock aioimaplib reads, from a real Dovecot, for hostile messages: lines like "* 5 FETCH (",
a tagged "OK" and unbalanced parentheses inside bodies, an empty message, a body without a
line end or ending in a lone CR, 8-bit bytes, literals of exactly a read's size, partial reads
(BODY.PEEK[]<n.m>, past the end), a refusal (BAD) and a 12 MB literal.

Each answer is recorded from Dovecot once, then handed to both readers (stock aioimaplib's
protocol and an ImapSession's) in the same pieces: whole, a byte at a time, at random sizes,
with every CRLF split, with every literal exactly one read. Through a proxy that splits the
live answers (tests/support/imap_chunks.py): the same Fetched as stock aioimaplib's, the
timeout kept (a server silent mid-answer is ServerTimedOut; one slow but never silent for the
timeout is read), and the session reads on with aioimaplib after each answer.
"""

from __future__ import annotations

import asyncio
import imaplib
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aioimaplib
import pytest

from services.mail import sync_engine
from services.mail.imap import (
    _EMPTY_SECTION,
    _FETCH_START,
    _SIZE,
    _UID,
    IMAP_TIMEOUT,
    Fetched,
    ImapSession,
    ServerTimedOut,
    _read_answer,
    _text,
)
from services.mail.logins import MailServer, open_imap
from tests.support.imap import PASSWORD, ImapServer, imap_fixture  # noqa: F401
from tests.support.imap_chunks import chunking_proxy

USER = "hostile@fetch.example"
LINES = b"".join(
    b"line %06d of a long message, to fill it up to the size asked\r\n" % n for n in range(200_000)
)


def exactly(size: int, marker: bytes) -> bytes:
    """A message of exactly `size` bytes (CRLF lines only: Dovecot sends it as it is)."""
    head = b"Subject: " + marker + b"\r\n\r\n"
    body = LINES[: size - len(head) - 2]
    return head + body + b"\r\n"


MESSAGES = [
    b"",
    b'Subject: (unbalanced\r\nFrom: "((" <a@example.com>\r\n\r\n'
    b"* 5 FETCH (UID 5 BODY[] {3}\r\n)))\r\nA0001 OK done\r\n* BYE not really\r\n(\r\n",
    b"Subject: no line end",
    b"Subject: eight bit\r\n\r\n" + bytes(range(128, 256)) + b"\x00 \xff\xfe {5}\r\n",
    b"Subject: a lone CR at the end\r\n\r\nbody\r",
    exactly(65536, b"a proxy's read"),
    exactly(262144, b"a transport's read"),
    exactly(12 * 1024 * 1024, b"huge"),
]
ALL = "2:*"  # UID 1 is the message whose APPEND made the Maildir
SMALL = "2:6"  # the UIDs read a byte at a time
PARTS = {
    "whole": sync_engine.MESSAGE_FIELDS,
    "participants": sync_engine.PARTICIPANT_FIELDS,
    "first-bytes": "(UID BODY.PEEK[]<0.7>)",
    "middle": "(UID BODY.PEEK[]<20.65536>)",
    "past-the-end": "(UID BODY.PEEK[]<300000.10>)",
    "header-and-size": "(UID RFC822.SIZE BODY.PEEK[HEADER]<0.262144>)",
    "refused": "(UID NO.SUCH.ITEM)",
}


class Recorded:
    """What Dovecot sent for one UID FETCH, and what stock aioimaplib made of it."""

    def __init__(self, tag: str, uids: str, parts: str, answer: bytes, response: Any) -> None:
        self.tag, self.uids, self.parts, self.answer = tag, uids, parts, answer
        self.response = response


@pytest.fixture(name="mailbox", scope="module")
def mailbox_fixture(imap: ImapServer) -> ImapServer:
    imap.append(USER, b"Subject: made by a login\r\n\r\n")  # makes the Maildir; UID 1
    for raw in MESSAGES:  # delivered (APPEND refuses an empty one) and numbered one by one
        imap.deliver_to_maildir(USER, raw)
        with imaplib.IMAP4(imap.host, imap.port) as client:
            client.login(USER, PASSWORD)
            client.select("INBOX")
            client.logout()
    return imap


async def stock_client(host: str, port: int) -> aioimaplib.IMAP4:
    client = aioimaplib.IMAP4(host=host, port=port, timeout=IMAP_TIMEOUT)
    await client.wait_hello_from_server()
    await client.login(USER, PASSWORD)
    await client.select("INBOX")
    return client


async def session_for(host: str, port: int) -> ImapSession:
    server = MailServer(host, port, False)
    client = await open_imap(server, USER, PASSWORD, allow_private=True, wait=IMAP_TIMEOUT)
    session = ImapSession(client, "dovecot")
    await session.select("INBOX")
    return session


@pytest.fixture(name="recorded", scope="module")
async def recorded_fixture(mailbox: ImapServer) -> AsyncIterator[dict[tuple[str, str], Recorded]]:
    """Every part's answer for all UIDs, and for the small ones."""
    client = await stock_client(mailbox.host, mailbox.port)
    protocol = client.protocol
    chunks: list[bytes] = []
    received = protocol.data_received

    def keep(data: bytes) -> None:
        chunks.append(data)
        received(data)

    protocol.data_received = keep  # type: ignore[method-assign]
    found: dict[tuple[str, str], Recorded] = {}
    for name, parts in PARTS.items():
        for uids in (ALL, SMALL):
            chunks.clear()
            tag = protocol.tagpre + str(protocol.tagnum)
            response = await client.uid("fetch", uids, parts)
            found[name, uids] = Recorded(tag, uids, parts, b"".join(chunks), response)
    await client.logout()
    yield found


# Replays --------------------------------------------------------------------------------


class _Transport:
    """Where a replaying protocol writes its command."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


class _Client:
    """What an ImapSession uses of aioimaplib.IMAP4."""

    def __init__(self, protocol: aioimaplib.IMAP4ClientProtocol) -> None:
        self.protocol = protocol
        self.timeout = IMAP_TIMEOUT


def selected_protocol(tag: str) -> aioimaplib.IMAP4ClientProtocol:
    """A protocol in the SELECTED state whose next command's tag is `tag`."""
    protocol = aioimaplib.IMAP4ClientProtocol(asyncio.get_running_loop())
    protocol.connection_made(_Transport())  # type: ignore[arg-type]
    protocol.state = aioimaplib.SELECTED
    match = re.fullmatch(r"([A-P]+)(\d+)", tag)
    assert match, tag
    protocol.tagpre, protocol.tagnum = match.group(1), int(match.group(2))
    return protocol


def pieces(data: bytes, ends: Iterator[int]) -> list[bytes]:
    """`data` cut at each of `ends` (increasing offsets)."""
    cut, start = [], 0
    for end in ends:
        if start < end < len(data):
            cut.append(data[start:end])
            start = end
    cut.append(data[start:])
    return cut


def literal_bounds(answer: bytes) -> Iterator[int]:
    """The offsets where each literal of a (well-formed) answer starts and ends."""
    pos = 0
    while (end := answer.find(b"\r\n", pos)) >= 0:
        size = re.search(rb"\{(\d+)\}$", answer[pos:end])
        pos = end + 2
        if size:
            yield pos
            pos += int(size.group(1))
            yield pos


def every(step: Callable[[], int], limit: int) -> Iterator[int]:
    offset = 0
    while offset < limit:
        offset += step()
        yield offset


def at_random(answer: bytes, chosen: random.Random) -> list[bytes]:
    return pieces(answer, every(lambda: chosen.randint(1, 9000), len(answer)))


SPLITS: dict[str, Callable[[bytes], list[bytes]]] = {
    "whole": lambda a: [a],
    "a-byte-at-a-time": lambda a: [a[i : i + 1] for i in range(len(a))],
    "random": lambda a: at_random(a, random.Random(7)),
    "crlf-split": lambda a: pieces(a, (m.start() + 1 for m in re.finditer(rb"\r\n", a))),
    "literal-a-read": lambda a: pieces(a, literal_bounds(a)),
    "transport-reads": lambda a: pieces(a, iter(range(262144, len(a), 262144))),
}


async def stock_reads(recorded: Recorded, cut: list[bytes]) -> Any:
    protocol = selected_protocol(recorded.tag)
    command = asyncio.ensure_future(protocol.uid("fetch", recorded.uids, recorded.parts, timeout=5))
    await asyncio.sleep(0)  # sent
    for piece in cut:
        protocol.data_received(piece)
    return await asyncio.wait_for(command, 5)


async def session_reads(recorded: Recorded, cut: list[bytes]) -> tuple[Any, ImapSession]:
    protocol = selected_protocol(recorded.tag)
    session = ImapSession(_Client(protocol), "replay")  # type: ignore[arg-type]
    command = asyncio.ensure_future(session._uid_fetch(recorded.uids, recorded.parts))
    await asyncio.sleep(0)  # sent
    assert session._reader is not None  # read by the session, not by aioimaplib
    for piece in cut:
        protocol.data_received(piece)
    response = await asyncio.wait_for(command, 5)
    assert session._reader is None  # aioimaplib reads on
    return response, session


def shown(response: Any) -> tuple[str, list[tuple[str, bytes]]]:
    return response.result, [(type(line).__name__, bytes(line)) for line in response.lines]


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("part", list(PARTS))
async def test_a_recorded_answer_read_in_pieces_is_read_as_stock_aioimaplib_reads_it(
    recorded: dict[tuple[str, str], Recorded], part: str, split: str
) -> None:
    one = recorded[part, SMALL if split == "a-byte-at-a-time" else ALL]
    cut = SPLITS[split](one.answer)
    assert b"".join(cut) == one.answer
    stock = await stock_reads(one, cut)
    ours, _ = await session_reads(one, cut)
    assert shown(ours) == shown(stock)
    assert shown(stock) == shown(one.response)  # as read live
    assert _read_answer(ours.lines) == read_as_before(stock.lines)
    if part == "refused":
        assert stock.result == "BAD"
    elif part == "whole" and one.uids == ALL:
        sent = [raw.replace(b"\x00", b"\x80") for raw in MESSAGES]  # Dovecot's NUL
        assert [bytes(x) for x in stock.lines if isinstance(x, bytearray)] == sent


async def test_what_follows_the_answer_in_the_same_read_is_aioimaplibs_again(
    recorded: dict[tuple[str, str], Recorded],
) -> None:
    one = recorded["whole", SMALL]
    # The answer, then the start of an untagged line in the same read; its end and a BYE next.
    cut = [one.answer + b"* 9 EXI", b"STS\r\n* BYE going away\r\n"]
    ours, session = await session_reads(one, cut)
    assert shown(ours) == shown(one.response)
    assert session.bye == "going away"  # read by aioimaplib (the session's BYE hook)
    assert session.client.protocol.incomplete_line == b""


# Live, through a proxy that splits the answers -----------------------------------------------


def fetched_by_stock(response: Any) -> Fetched:
    refused = None if response.result == "OK" else _text(response)
    literals, sizes, empty = read_as_before(response.lines)
    return Fetched(literals, sizes, refused, empty)


# How ImapSession.fetch read the lines before _read_answer (three passes, commit 614c8b6):
# the reference _read_answer is held to.


def _fetched(lines: list[Any]) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    uid: int | None = None
    data: bytes | None = None

    def keep() -> None:
        if uid is not None and data is not None:
            found[uid] = data

    for line in lines:
        if isinstance(line, bytearray):
            data = bytes(line)
            continue
        if _FETCH_START.match(line):
            keep()
            uid, data = None, None
        if uid is None and (match := _UID.search(line)):
            uid = int(match.group(1))
    keep()
    return found


def _empty(lines: list[Any]) -> set[int]:
    found: set[int] = set()
    for line in lines:
        if not (isinstance(line, bytes) and _FETCH_START.match(line)):
            continue
        if _EMPTY_SECTION.search(line) and (uid := _UID.search(line)):
            found.add(int(uid.group(1)))
    return found


def _sizes(lines: list[Any]) -> dict[int, int]:
    found: dict[int, int] = {}
    for line in lines:
        if isinstance(line, bytes) and _FETCH_START.match(line):
            uid, size = _UID.search(line), _SIZE.search(line)
            if uid and size:
                found[int(uid.group(1))] = int(size.group(1))
    return found


def read_as_before(lines: list[Any]) -> tuple[dict[int, bytes], dict[int, int], set[int]]:
    return _fetched(lines), _sizes(lines), _empty(lines)


@pytest.mark.parametrize("sizes", ["random", "one-byte"])
async def test_a_session_fetches_what_stock_aioimaplib_fetches(
    mailbox: ImapServer, sizes: str
) -> None:
    stock = await stock_client(mailbox.host, mailbox.port)
    async with chunking_proxy(mailbox.host, mailbox.port) as proxy:
        session = await session_for(proxy.host, proxy.port)
        chosen = random.Random(11)
        proxy.pieces = (lambda: 1) if sizes == "one-byte" else (lambda: chosen.randint(1, 70000))
        uids = [2, 3, 4, 5, 6] if sizes == "one-byte" else list(range(2, 2 + len(MESSAGES)))
        message_set = ",".join(str(u) for u in uids)
        try:
            for parts in PARTS.values():
                got = await session.fetch(uids, parts)
                expected = fetched_by_stock(await stock.uid("fetch", message_set, parts))
                assert got == expected, parts
            # aioimaplib reads the session's other commands as before
            assert await session.uids_after(0) == list(range(1, 2 + len(MESSAGES)))
            assert await session.uid_exists(3)
        finally:
            await session.close()
            await stock.logout()
    assert got.refused  # the last parts asked for: refused, in the server's words


async def test_a_server_silent_mid_answer_is_a_timeout(mailbox: ImapServer) -> None:
    async with chunking_proxy(mailbox.host, mailbox.port) as proxy:
        session = await session_for(proxy.host, proxy.port)
        session.client.timeout = 0.5
        proxy.silent_after = 100_000  # in the middle of the 262,144-byte message
        started = time.monotonic()
        try:
            with pytest.raises(ServerTimedOut, match="did not answer"):
                await session.fetch([6, 7, 8], sync_engine.MESSAGE_FIELDS)
            assert time.monotonic() - started < 5
            assert session.abandoned  # not reused: its answer may still come
        finally:
            await session.close()


async def test_an_answer_slower_than_the_timeout_but_never_silent_for_it_is_read(
    mailbox: ImapServer,
) -> None:
    async with chunking_proxy(mailbox.host, mailbox.port) as proxy:
        session = await session_for(proxy.host, proxy.port)
        session.client.timeout = 0.5
        proxy.pieces = lambda: 8000
        proxy.delay = 0.15  # 9 pieces of the 65,536-byte message: about 1.3 s in all
        started = time.monotonic()
        try:
            got = await session.fetch([7], sync_engine.MESSAGE_FIELDS)
        finally:
            await session.close()
    assert time.monotonic() - started > 1
    assert got.data == {7: MESSAGES[5]} and got.refused is None


# Made-up answers of a hostile server ----------------------------------------------------------


def made_up_answer(chosen: random.Random, tag: bytes) -> bytes:
    """An answer to a UID FETCH tagged `tag` from a server that sends odd things: parentheses
    in quoted strings (unbalancing the FETCH line), unsolicited lines and literals, empty lines,
    continuations, a stray tagged line, FETCH-like and tagged lines inside literals. Its
    literals are inside an open parenthesis, as a server's are (aioimaplib forgets one that
    starts a read with the FETCH line's parentheses closed: malformed, and read otherwise)."""

    def body() -> bytes:
        bits = [b"(", b")", b"\r\n", b"* 5 FETCH (", b"{3}\r\n", tag + b" OK", b"\r", b"\n"]
        bits.append(bytes(chosen.randrange(256) for _ in range(chosen.randint(0, 40))))
        return b"".join(chosen.choice(bits) for _ in range(chosen.randint(0, 12)))

    def piece(n: int) -> bytes:
        kind = chosen.randrange(12)
        if kind <= 3:
            data = body()
            after = chosen.choice([b")", b" UID %d)" % n, b" FLAGS (\\Seen))"])
            return b"* %d FETCH (UID %d BODY[] {%d}\r\n%s%s\r\n" % (n, n, len(data), data, after)
        if kind == 4:
            return b"* %d FETCH (UID %d FLAGS (\\Seen))\r\n" % (n, n)
        if kind == 5:
            return b'* %d FETCH (UID %d X "%s")\r\n' % (n, n, chosen.choice([b"(", b")"]))
        if kind == 6:
            data = body()
            return b"* %d FOO {%d}\r\n%s\r\n" % (n, len(data), data)
        if kind == 7:
            return chosen.choice([b"\r\n", b"+ go on\r\n", b"* FETCH odd\r\n", b"x y\r\n"])
        if kind == 8:
            return chosen.choice([b"* 3 EXISTS\r\n", b"* OK still here\r\n", b"* BYE maybe\r\n"])
        if kind == 9 and chosen.random() < 0.1:
            return b"ZZ9 OK not yours\r\n"
        return b"* %d FETCH (UID %d RFC822.SIZE %d)\r\n" % (n, n, chosen.randrange(10**6))

    pieces_ = [piece(n) for n in range(1, chosen.randint(1, 12))]
    end = tag + chosen.choice([b" OK done", b" NO [SERVERBUG] no", b" BAD what"]) + b"\r\n"
    return b"".join(pieces_) + end + chosen.choice([b"", b"* 2 EXPUNGE\r\n", b"* 4 EXI"])


def fed(protocol: aioimaplib.IMAP4ClientProtocol, cut: list[bytes]) -> str | None:
    """What is left of a failure to read `cut` (aioimaplib's Abort on a stray tag)."""
    for piece in cut:
        try:
            protocol.data_received(piece)
        except aioimaplib.AioImapException as exc:
            return f"{type(exc).__name__}: {exc}"
    return None


def random_cut(answer: bytes, chosen: random.Random) -> list[bytes]:
    ends: list[int] = []
    while (ends[-1] if ends else 0) < len(answer):
        ends.append((ends[-1] if ends else 0) + chosen.choice([1, 1, 2, 3, 7, 40, 500]))
    ends = sorted({*ends, *literal_bounds(answer)})  # and a read ending with each literal
    # Not right after a literal's announcement (see made_up_answer).
    return pieces(answer, iter([e for e in ends if not answer[:e].endswith(b"}\r\n")]))


def keep_byes(protocol: aioimaplib.IMAP4ClientProtocol) -> list[str]:
    """What an ImapSession's BYE hook would keep, from a stock protocol."""
    byes: list[str] = []
    untagged = protocol._untagged_response

    def keep_bye(line: bytes) -> Any:
        if line.upper().startswith(b"* BYE"):
            byes.append(line[5:].strip().decode(errors="replace")[:300])
        return untagged(line)

    protocol._untagged_response = keep_bye  # type: ignore[method-assign]
    return byes


@pytest.mark.parametrize("seed", range(0, 800, 100))
async def test_made_up_hostile_answers_are_read_as_stock_aioimaplib_reads_them(seed: int) -> None:
    for n in range(seed, seed + 100):
        chosen = random.Random(n)
        answer = made_up_answer(chosen, b"ABC1")
        cut = random_cut(answer, chosen) if n % 3 else [answer]

        stock = selected_protocol("ABC1")
        tasks = [asyncio.ensure_future(stock.uid("fetch", "1:*", "(UID BODY.PEEK[])", timeout=5))]
        await asyncio.sleep(0)
        stock_command = stock.pending_async_commands["FETCH"]
        byes = keep_byes(stock)
        stock_failure = fed(stock, cut)

        ours = selected_protocol("ABC1")
        session = ImapSession(_Client(ours), "replay")  # type: ignore[arg-type]
        tasks.append(asyncio.ensure_future(session._uid_fetch("1:*", "(UID BODY.PEEK[])")))
        await asyncio.sleep(0)
        assert session._reader is not None
        our_command = session._reader.command
        our_failure = fed(ours, cut)

        assert our_failure == stock_failure, (n, answer)
        assert shown(our_command.response) == shown(stock_command.response), (n, answer)
        lines = stock_command.response.lines
        assert _read_answer(lines) == read_as_before(lines), (n, answer)
        assert session.bye == (byes[-1] if byes else None), (n, answer)
        if our_failure is None:  # aioimaplib reads on from the same place
            assert ours.incomplete_line == stock.incomplete_line, (n, answer)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for command in (stock_command, our_command):
            command._timer.cancel()
