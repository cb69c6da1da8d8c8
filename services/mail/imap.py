"""An IMAP session as the sync reads a mailbox: logged in, failing fast, and the parsers of
the answers it reads.

`ImapSession` wraps a logged-in aioimaplib client (services/mail/logins.open_imap, so it logs
in exactly as connectMailbox checked the login) whose every command fails fast with a
readable MailSyncError when the connection drops, the server does not answer within
IMAP_TIMEOUT, or the command fails (`guarded`). It finds INBOX and the Sent folder
(SPECIAL-USE `\\Sent`, else a usual name), selects a folder (its UIDVALIDITY and UIDNEXT),
searches UIDs and fetches parts of messages. The IDLE watcher (services/mail/idle) is one.

Reading what a server may refuse message by message (issue 14): `fetch` returns what
came back with the server's refusal (NO or BAD) instead of raising, so the sync can tell the
one message that fails from the rest, and ServerHungUp when the server said BYE and hung up
during it (what Dovecot does when it cannot read a message).
History searches take up to SEARCH_GROUP addresses a SEARCH (one read of the folder for all),
use `CHARSET UTF-8` for non-ASCII addresses, in quoted UTF-8 strings, and report a refused
address on its own (`search_participants`). RFC 3501 wants a literal for
8-bit text; aioimaplib cannot send one in SEARCH: it answers the server's continuation
request only for APPEND, and refuses CR or LF in any argument, so not even a LITERAL+
(`{n+}` CRLF text) literal goes through. Dovecot and most servers read the quoted string.

Reading FETCH answers: aioimaplib's own reader is quadratic in a batch's answer (it rescans
every line of the answer for each new one, copies the rest of a read at each line, restarts its
timer at each line) and formats every read for its debug log. A session reads the answer to its
own UID FETCH with `_FetchReader` instead: the same per-line handling (aioimaplib's
`_handle_line`, so the same lines, results and failures), literals taken by their size, the
parenthesis count kept as lines come (`_LinearFetch`), the timer restarted once per read. The
rest of the conversation, and a FETCH begun while aioimaplib is mid-answer, stay aioimaplib's.

Stopping: a session given a `stop` event fails its command in flight (and every later one) with
SyncStopped as soon as it is set, so a pass stopping mid-FETCH hands its mailbox back at once
instead of waiting for a large answer; nothing written to the database is interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Self, TypeVar

import aioimaplib

from models import Mailbox
from portico.settings import Settings
from services.mail.logins import (
    LOGOUT_SECONDS,
    MailLoginError,
    MailServer,
    close_imap,
    open_imap,
)

log = logging.getLogger(__name__)
_AIOIMAPLIB_LOG = logging.getLogger(aioimaplib.__name__ + ".aioimaplib")  # its "Received" lines

IMAP_TIMEOUT = 30.0  # seconds without an answer before a command counts as failed
LATE_ANSWER_SECONDS = 0.2  # an answer that came with the connection's end is still read
SEARCH_GROUP = 25  # addresses a history SEARCH at most: 75 keys, ORs 7 levels deep
# and at most this much of their text: each is written 3 times, and the command stays under
# the 8,192 octets a server is asked to take in a line (RFC 7162, section 4)
SEARCH_GROUP_BYTES = 2_000

INBOX = "INBOX"
SENT = "SENT"
# Fallback when no folder carries SPECIAL-USE \Sent: the usual names, most usual first,
# compared without case on the last level of the name ("INBOX.Sent" counts as "Sent").
SENT_NAMES = ("sent", "sent items", "sent messages")

T = TypeVar("T")


class MailSyncError(Exception):
    """A failure worth showing as the mailbox's last error (its text holds no secret)."""


class ServerHungUp(MailSyncError):
    """The server said BYE and closed the connection during a command: with its words (e.g.
    Dovecot's "FETCH failed: Internal error occurred" for a message it cannot read)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"The IMAP server {where} closed the connection: {reason}")
        self.reason = reason


class ServerTimedOut(MailSyncError):
    """The server did not answer a command within IMAP_TIMEOUT (the connection may still
    bring its answer later, so it is not reused)."""


class SyncStopped(Exception):  # not an error: the process is stopping
    """The session's `stop` was set: its command in flight was abandoned."""


@dataclass
class Fetched:
    """What a UID FETCH brought: each UID's literal, the RFC822.SIZE of those that carry one,
    and the server's words when it refused the command (NO or BAD) for some of them."""

    data: dict[int, bytes] = field(default_factory=dict)
    sizes: dict[int, int] = field(default_factory=dict)
    refused: str | None = None
    # UIDs answered with an empty section instead of a literal (`BODY[]<n> ""`: a part asked
    # past the message's end), told apart from a UID the server sent nothing for.
    empty: set[int] = field(default_factory=set)


def _searched_uids(response: aioimaplib.Response) -> set[int]:
    """The UIDs of a UID SEARCH answer (its untagged lines)."""
    uids: set[int] = set()
    for line in response.lines[:-1]:
        if isinstance(line, bytes):
            uids.update(int(u) for u in re.findall(rb"\d+", line))
    return uids


def _search_groups(addresses: Sequence[str]) -> list[tuple[list[str], str | None]]:
    """`addresses` in groups of one SEARCH each, with their charset: ASCII ones with none,
    the others with UTF-8 (in quoted strings). A group holds at most SEARCH_GROUP addresses
    and SEARCH_GROUP_BYTES of them."""
    groups: list[tuple[list[str], str | None]] = []
    for charset in (None, "UTF-8"):
        group: list[str] = []
        size = 0
        for address in addresses:
            if address.isascii() != (charset is None):
                continue
            length = len(address.encode())
            if group and (len(group) == SEARCH_GROUP or size + length > SEARCH_GROUP_BYTES):
                groups.append((group, charset))
                group, size = [], 0
            group.append(address)
            size += length
        if group:
            groups.append((group, charset))
    return groups


def _any_participant(addresses: Sequence[str]) -> str:
    """A SEARCH key for mail with any of `addresses` in From, To or Cc: ORs nested as a
    balanced tree, so many addresses stay a few levels deep."""
    keys = [
        f"({field} {aioimaplib.quoted(a)})" for a in addresses for field in ("FROM", "TO", "CC")
    ]
    while len(keys) > 1:
        pairs = [f"(OR {keys[i]} {keys[i + 1]})" for i in range(0, len(keys) - 1, 2)]
        keys = pairs + keys[len(pairs) * 2 :]
    return keys[0]


@dataclass
class Searched:
    """UIDs that matched, and the addresses the server refused to search, with its words."""

    uids: list[int] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


_LIST_LINE = re.compile(rb'^\((?P<flags>[^)]*)\) (?P<delim>NIL|"(?:[^"\\]|\\.)*") (?P<name>.*)$')
_LITERAL = re.compile(rb"^\{(\d+)\+?\}$")
_FETCH_START = re.compile(rb"^\d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")
_EMPTY_SECTION = re.compile(rb'BODY\[[^\]]*\](?:<\d+>)? (?:""|NIL)')


async def guarded(
    command: Callable[[], Awaitable[T]],
    lost: asyncio.Event,
    where: str,
    what: str,
    stop: asyncio.Event | None = None,
) -> T:
    """The answer of the IMAP command `command()` makes, or MailSyncError as soon as the
    connection drops (`lost` is set by the protocol), the server does not answer in time, or
    the command fails; SyncStopped as soon as `stop` is set. The caller checks `stop` before:
    the command is made here, once, since a coroutine made and never awaited is a warning."""
    task = asyncio.ensure_future(command())
    waits = {asyncio.ensure_future(lost.wait())}
    if stop is not None:
        waits.add(asyncio.ensure_future(stop.wait()))
    try:
        done, _ = await asyncio.wait({task, *waits}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        for wait in waits:
            wait.cancel()
    if task not in done and lost.is_set():
        # The answer may have come just before the server hung up (a refusal, then BYE):
        # it is taken if it is there.
        await asyncio.wait({task}, timeout=LATE_ANSWER_SECONDS)
        done = {task} if task.done() else done
    if task not in done:
        task.cancel()
        if stop is not None and stop.is_set() and not lost.is_set():
            raise SyncStopped
        raise MailSyncError(f"The IMAP server {where} closed the connection ({what}).")
    try:
        return task.result()
    except (TimeoutError, aioimaplib.CommandTimeout):
        raise ServerTimedOut(f"The IMAP server {where} did not answer ({what}).") from None
    except aioimaplib.AioImapException as exc:
        raise MailSyncError(f"IMAP error from {where} ({what}): {exc}") from None
    except OSError as exc:
        raise MailSyncError(f"Connection to {where} failed ({what}): {exc}") from None


class _LinearFetch(aioimaplib.FetchCommand):
    """aioimaplib's FETCH command as `_FetchReader` feeds it: whether the last FETCH line is still
    open (its parentheses unbalanced) is counted from the lines added since the last look, not
    from all of them again; the timer is restarted by the reader once per read, not per line."""

    def __init__(
        self,
        tag: str,
        *args: str,
        prefix: str,
        loop: asyncio.AbstractEventLoop,
        timeout: float | None,
    ) -> None:
        super().__init__(tag, *args, prefix=prefix, loop=loop, timeout=timeout)
        self._counted = 0  # lines counted into _open
        self._open = 0  # "(" less ")" since the last FETCH line (since the first line if none)

    def wait_data(self) -> bool:
        # aioimaplib's: the bytes lines (literals are bytearrays) from the last "n FETCH (" on.
        lines = self._resp_lines
        for index in range(self._counted, len(lines)):
            line = lines[index]
            if isinstance(line, bytes):
                opened = line.count(b"(") - line.count(b")")
                fetch_line = self.FETCH_MESSAGE_DATA_RE.match(line)
                self._open = opened if fetch_line else self._open + opened
        self._counted = len(lines)
        return self._open != 0

    def append_to_resp(self, line: bytes, result: str = "Pending") -> None:
        self._resp_result = result
        self._resp_lines.append(line)


class _FetchReader:
    """Reads what the server sends while `command` (a _LinearFetch) is answered, as
    aioimaplib's IMAP4ClientProtocol.data_received and _handle_responses would, in one pass.
    `feed` returns None while the answer goes on, then the bytes after it (for aioimaplib).

    Where a read ends changes nothing, with one exception for a malformed answer: a literal
    announced at the very end of a read while the FETCH line's parentheses are closed (a
    literal outside the FETCH's list) is read here, where aioimaplib loses track of it and
    reads its bytes as lines."""

    def __init__(self, protocol: aioimaplib.IMAP4ClientProtocol, command: _LinearFetch) -> None:
        self.command = command
        self._loop = protocol.loop
        self._handle_line = protocol._handle_line
        self._partial = b""  # a line not ended yet
        self._current: aioimaplib.Command | None = None  # the command the next line belongs to
        self._literal: bytearray | None = None
        self._literal_left = 0
        self._literal_to: aioimaplib.Command | None = None

    def feed(self, data: bytes) -> bytes | None:
        if _AIOIMAPLIB_LOG.isEnabledFor(logging.DEBUG):
            _AIOIMAPLIB_LOG.debug("Received : %s", data)
        command = self.command
        if not command._event.is_set():
            command._reset_timer()
        if self._partial:
            data = self._partial + data
            self._partial = b""
        view = memoryview(data)
        end = len(data)
        pos = 0
        while True:
            if self._literal is not None:
                take = min(self._literal_left, end - pos)
                self._literal += view[pos : pos + take]
                pos += take
                self._literal_left -= take
                if self._literal_left:
                    return None
                self._end_literal()
            elif self._current is None and command._event.is_set():
                return data[pos:]  # answered: the rest is aioimaplib's again
            line_end = data.find(b"\r\n", pos)
            if line_end < 0:
                self._partial = data[pos:]  # b"" at the end of the read
                return None
            line = data[pos:line_end]
            pos = line_end + 2
            self._line(line)

    def _line(self, line: bytes) -> None:
        cmd = self._handle_line(line, self._current)
        literal = aioimaplib.literal_data_re.match(line) if b"{" in line else None
        if literal is not None:
            if cmd is None:  # aioimaplib reads it into a command of its own and drops it
                cmd = aioimaplib.Command("NIL", "unused", loop=self._loop)
            self._current = self._literal_to = cmd
            self._literal = bytearray()
            self._literal_left = int(literal.group("size"))
            if not self._literal_left:
                self._end_literal()
        elif cmd is not None and cmd.wait_data():
            self._current = cmd
        else:
            self._current = None

    def _end_literal(self) -> None:
        assert self._literal is not None and self._literal_to is not None
        self._literal_to.append_to_resp(self._literal)  # type: ignore[arg-type]
        self._literal = self._literal_to = None


class ImapSession:
    """A logged-in aioimaplib client whose every command fails fast when the connection drops
    (aioimaplib alone would wait for its timeout)."""

    def __init__(self, client: aioimaplib.IMAP4, where: str) -> None:
        self.client = client
        self.where = where
        self.lost = asyncio.Event()
        self.stop: asyncio.Event | None = None  # set: commands fail with SyncStopped
        self.abandoned = False  # a command was abandoned midway (stop)
        self.bye: str | None = None  # the server's last words, when it said BYE
        protocol = client.protocol
        protocol.conn_lost_cb = lambda _exc: self.lost.set()
        self._keep_bye(protocol)
        # What the server sends goes through `_received`: to aioimaplib, or to the reader of
        # a FETCH answer while one is read.
        self._reader: _FetchReader | None = None
        self._aioimaplib_received = protocol.data_received
        protocol.data_received = self._received

    def _received(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:
            self._aioimaplib_received(data)
            return
        rest = reader.feed(data)
        if rest is not None:
            self._reader = None
            if rest:
                self._aioimaplib_received(rest)

    async def _uid_fetch(self, message_set: str, parts: str) -> aioimaplib.Response:
        """`client.uid("fetch", ...)`, its answer read by a _FetchReader when nothing else is
        under way (aioimaplib's own reader is at rest: no command pending, no line half-read)."""
        protocol = self.client.protocol
        at_rest = (
            self._reader is None
            and protocol.state in aioimaplib.Commands["UID"].valid_states
            and protocol.pending_sync_command is None
            and not protocol.pending_async_commands
            and not protocol.incomplete_line
            and protocol.current_command is None
        )
        if not at_rest:
            return await self.client.uid("fetch", message_set, parts)
        command = _LinearFetch(
            protocol.new_tag(),
            message_set,
            parts,
            prefix="UID",
            loop=protocol.loop,
            timeout=self.client.timeout,
        )
        reader = self._reader = _FetchReader(protocol, command)
        try:
            return await protocol.execute(command)
        except BaseException:
            # Not sent: aioimaplib reads on. Sent (then abandoned or timed out): the reader
            # reads on until the end of a line leaves nothing half-read, then aioimaplib.
            sent = (
                command._event.is_set() or protocol.pending_async_commands.get("FETCH") is command
            )
            if not sent and self._reader is reader:
                self._reader = None
            raise

    def _keep_bye(self, protocol: object) -> None:
        """aioimaplib drops an untagged BYE that comes during a command; its text is kept to
        tell a server that hung up on purpose (refusing a message) from one that died. This
        wraps a private method of aioimaplib (pinned <3 in pyproject.toml): without it the
        session works the same, only every hang-up counts as a lost connection (no message
        blamed, the pass fails)."""
        untagged = getattr(protocol, "_untagged_response", None)
        if not callable(untagged):
            log.warning("aioimaplib has no _untagged_response: a BYE's reason is not kept")
            return

        def keep_bye(line: bytes) -> object:
            if line.upper().startswith(b"* BYE"):
                self.bye = line[5:].strip().decode(errors="replace")[:300]
            return untagged(line)

        protocol._untagged_response = keep_bye  # type: ignore[attr-defined]

    @classmethod
    async def open(cls, mailbox: Mailbox, password: str, settings: Settings) -> Self:
        """Logs in as connectMailbox checked it (services/mail/logins.open_imap), to a host
        vetted as it vetted it: `settings` say whether private hosts are allowed."""
        allow_private = settings.private_mail_hosts_allowed
        server = MailServer(mailbox.imap_host, mailbox.imap_port, mailbox.imap_tls)
        try:
            client = await open_imap(
                server, mailbox.username, password, allow_private=allow_private, wait=IMAP_TIMEOUT
            )
        except MailLoginError as exc:
            raise MailSyncError(str(exc)) from None
        return cls(client, str(server))

    async def call(self, what: str, command: Callable[[], Awaitable[T]]) -> T:
        if self.stop is not None and self.stop.is_set():
            raise SyncStopped  # before any command: nothing abandoned, LOGOUT as usual
        try:
            return await guarded(command, self.lost, self.where, what, self.stop)
        except (SyncStopped, ServerTimedOut):
            # A command was abandoned midway: its answer may still come, so the connection
            # is closed without the courtesy of a LOGOUT (which would queue behind it).
            self.abandoned = True
            raise

    async def folders(self) -> list[tuple[str, str]]:
        """(role, name) of INBOX and, when there is one, the Sent folder."""
        args = ['""', '"*"']
        if self.client.has_capability("SPECIAL-USE") and self.client.has_capability(
            "LIST-EXTENDED"
        ):
            args += ["RETURN", "(SPECIAL-USE)"]
        protocol = self.client.protocol
        response = await self.call(
            "LIST", lambda: asyncio.wait_for(protocol.simple_command("LIST", *args), IMAP_TIMEOUT)
        )
        if response.result != "OK":
            raise MailSyncError(f"The IMAP server {self.where} refused LIST: {_text(response)}")
        listed = _list_entries(response.lines)
        found = [(INBOX, "INBOX")]
        sent = _sent_folder(listed)
        if sent is not None:
            found.append((SENT, sent))
        return found

    async def select(self, name: str) -> tuple[int | None, int | None]:
        """Selects the folder; its UIDVALIDITY and UIDNEXT (None when not given)."""
        response = await self.call(
            f"SELECT {name}", lambda: self.client.select(aioimaplib.quoted(name))
        )
        if response.result != "OK":
            raise MailSyncError(
                f"The IMAP server {self.where} refused to open {name}: {_text(response)}"
            )
        return folder_status(response)

    async def uids_after(self, last_uid: int) -> list[int]:
        response = await self.call(
            "UID SEARCH", lambda: self.client.uid_search("UID", f"{last_uid + 1}:*", charset=None)
        )
        if response.result != "OK":
            raise MailSyncError(f"The IMAP server {self.where} refused SEARCH: {_text(response)}")
        return sorted(_searched_uids(response))

    async def search_participants(self, addresses: Sequence[str]) -> Searched:
        """UIDs in the selected folder with any of `addresses` in From, To or Cc. Up to
        SEARCH_GROUP addresses a SEARCH (the server reads the folder once for all of them);
        a group the server refuses (NO or BAD, e.g. no CHARSET UTF-8 for a non-ASCII
        address) is searched again address by address, so one refused address is reported
        in `refused` alone and does not keep the others from being searched."""
        found = Searched()
        uids: set[int] = set()
        groups = _search_groups(addresses)
        while groups:
            group, charset = groups.pop()
            criteria = _any_participant(group)
            response = await self.call(
                "UID SEARCH", partial(self.client.uid_search, criteria, charset=charset)
            )
            if response.result == "OK":
                uids |= _searched_uids(response)
            elif len(group) > 1:
                groups.extend(([address], charset) for address in group)
            else:
                found.refused[group[0]] = (
                    f"The IMAP server {self.where} refused to search for {group[0]}: "
                    f"{_text(response)}"
                )
        found.uids = sorted(uids)
        return found

    async def uid_exists(self, uid: int) -> bool:
        """Whether the selected folder still holds `uid` (not expunged meanwhile)."""
        response = await self.call(
            "UID SEARCH", lambda: self.client.uid_search("UID", str(uid), charset=None)
        )
        if response.result != "OK":
            return True  # cannot tell: counted as there, so a failure is not taken for gone
        return uid in _searched_uids(response)

    async def fetch(self, uids: Sequence[int], parts: str) -> Fetched:
        """UID FETCH of `parts` (one literal per message): the literal of each UID, and the
        RFC822.SIZE of each when asked for. A refusal (NO or BAD: the server could not read
        some message) comes back in `refused` with whatever it did send, for the caller to
        sort out by UID; a lost connection or a timeout raises MailSyncError."""
        message_set = ",".join(str(u) for u in uids)
        try:
            response = await self.call("UID FETCH", lambda: self._uid_fetch(message_set, parts))
        except MailSyncError:
            # A server going down says so too ("Server shutting down."): no message's fault.
            if (
                self.bye is not None
                and self.lost.is_set()
                and "shutting down" not in self.bye.lower()
            ):
                raise ServerHungUp(self.where, self.bye) from None
            raise
        refused = None if response.result == "OK" else _text(response)
        literals, sizes, empty = _read_answer(response.lines)
        return Fetched(literals, sizes, refused, empty)

    async def close(self) -> None:
        try:
            if not self.lost.is_set() and not self.abandoned:
                await asyncio.wait_for(self.client.logout(), LOGOUT_SECONDS)
        except Exception as exc:  # logging out of a broken connection: it is gone anyway
            log.debug("IMAP logout from %s: %s", self.where, exc)
        finally:
            close_imap(self.client)


def folder_status(response: aioimaplib.Response) -> tuple[int | None, int | None]:
    """UIDVALIDITY and UIDNEXT from a SELECT or EXAMINE answer (None when not given)."""
    uidvalidity = uidnext = None
    for line in response.lines:
        if isinstance(line, bytes):
            if match := _UIDVALIDITY.search(line):
                uidvalidity = int(match.group(1))
            if match := _UIDNEXT.search(line):
                uidnext = int(match.group(1))
    return uidvalidity, uidnext


def _text(response: aioimaplib.Response) -> str:
    """The server's words in a tagged answer."""
    lines = [line for line in response.lines if isinstance(line, bytes)]
    return lines[-1].decode(errors="replace")[:300] if lines else response.result


def _list_entries(lines: Sequence[bytes | bytearray]) -> list[tuple[set[str], str, str]]:
    """(flags, delimiter, name) of each folder in a LIST answer (names as the server sent
    them: modified UTF-7, unquoted)."""
    entries: list[tuple[set[str], str, str]] = []
    for index, line in enumerate(lines):
        if not isinstance(line, bytes) or not (match := _LIST_LINE.match(line)):
            continue
        flags = {f.lower() for f in match.group("flags").decode(errors="replace").split()}
        delim = _unquote(match.group("delim"))
        raw_name = match.group("name").strip()
        if _LITERAL.match(raw_name):
            following = lines[index + 1] if index + 1 < len(lines) else b""
            name = bytes(following).decode(errors="replace")
        else:
            name = _unquote(raw_name)
        if "\\noselect" in flags or "\\nonexistent" in flags:
            continue
        entries.append((flags, "" if delim == "NIL" else delim, name))
    return entries


def _unquote(value: bytes) -> str:
    text = value.decode(errors="replace")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _sent_folder(entries: Sequence[tuple[set[str], str, str]]) -> str | None:
    for flags, _, name in entries:
        if "\\sent" in flags:
            return name
    by_name: dict[str, str] = {}
    for _, delim, name in entries:
        leaf = name.rsplit(delim, 1)[-1] if delim else name
        by_name.setdefault(leaf.casefold(), name)
    for candidate in SENT_NAMES:
        if candidate in by_name:
            return by_name[candidate]
    return None


def _read_answer(
    lines: Sequence[bytes | bytearray],
) -> tuple[dict[int, bytes], dict[int, int], set[int]]:
    """From the lines of a UID FETCH answer, in one pass: {uid: literal} (the UID before or
    after the literal), {uid: RFC822.SIZE} and the UIDs answered with an empty section (`""`
    or NIL) instead of a literal, both read from a message's FETCH line."""
    literals: dict[int, bytes] = {}
    sizes: dict[int, int] = {}
    empty: set[int] = set()
    uid: int | None = None
    data: bytes | None = None
    for line in lines:
        if isinstance(line, bytearray):
            data = bytes(line)
            continue
        if _FETCH_START.match(line):
            if uid is not None and data is not None:
                literals[uid] = data
            uid, data = None, None
            if match := _UID.search(line):
                uid = int(match.group(1))
                if size := _SIZE.search(line):
                    sizes[uid] = int(size.group(1))
                if _EMPTY_SECTION.search(line):
                    empty.add(uid)
        elif uid is None and (match := _UID.search(line)):
            uid = int(match.group(1))
    if uid is not None and data is not None:
        literals[uid] = data
    return literals, sizes, empty
