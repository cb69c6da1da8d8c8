"""A TCP proxy in front of the test Dovecot, to break an IMAP conversation where a test wants.

Point a mailbox at `proxy.port` (see `imap_proxy`): the bytes go through to Dovecot unchanged
unless the test asks for a fault:
- `cut_body_fetch_after = n`: once a FETCH of whole messages (BODY.PEEK[]) is under way, the
  connection is cut (both ways, as a server killed mid-answer) after n bytes of its answer;
  once only.
- `hold_body_fetch = True`: the answer to a FETCH of whole messages is held back (a server
  slow to answer) until `release` is set; `body_fetch_seen` is set when such a FETCH is sent.
- `strip_sizes = True`: RFC822.SIZE items are taken out of the server's answers (a server that
  does not say how large a message is).
- `rewrite`: (old, new) byte pairs replaced in what the client sends (e.g. to name a charset
  the server does not know).
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

_SIZE = re.compile(rb"RFC822\.SIZE \d+ ?")


class ImapProxy:
    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.host = "127.0.0.1"
        self.port = 0
        self.cut_body_fetch_after: int | None = None
        self.hold_body_fetch = False
        self.strip_sizes = False
        self.rewrite: list[tuple[bytes, bytes]] = []
        self.body_fetch_seen = asyncio.Event()
        self.release = asyncio.Event()
        self.cuts = 0
        self.sent_lines: list[bytes] = []
        self._writers: set[asyncio.StreamWriter] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        # A held answer must stay with Dovecot (still writing it, so a kill cuts it), not pile
        # up in this side's receive buffer, which loopback autotuning grows to megabytes.
        up_writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        self._writers.update((writer, up_writer))
        in_body_fetch = asyncio.Event()

        def close() -> None:
            for w in (writer, up_writer):
                w.close()

        async def to_server() -> None:
            while line := await reader.readline():
                self.sent_lines.append(line)
                # Commands go one at a time: a new one means the last was answered.
                if b"FETCH" in line.upper() and b"BODY.PEEK[]" in line.upper():
                    in_body_fetch.set()
                    self.body_fetch_seen.set()
                elif line[:1].isalnum():  # a command (not the rest of a literal)
                    in_body_fetch.clear()
                for old, new in self.rewrite:
                    line = line.replace(old, new)
                up_writer.write(line)
                await up_writer.drain()

        async def to_client() -> None:
            while data := await up_reader.read(65536):
                if self.strip_sizes:
                    data = _SIZE.sub(b"", data)
                if not in_body_fetch.is_set():
                    answered = 0
                else:
                    if self.hold_body_fetch:
                        await self.release.wait()
                    if self.cut_body_fetch_after is not None:
                        answered += len(data)
                        if answered > self.cut_body_fetch_after:
                            keep = len(data) - (answered - self.cut_body_fetch_after)
                            writer.write(data[:keep])
                            self.cut_body_fetch_after = None
                            self.cuts += 1
                            await writer.drain()
                            close()
                            return
                writer.write(data)
                await writer.drain()

        with suppress(ConnectionError, OSError):
            tasks = [asyncio.ensure_future(to_server()), asyncio.ensure_future(to_client())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                close()
                self._writers.difference_update((writer, up_writer))

    def cut_all(self) -> None:
        """Cuts every connection now."""
        for w in list(self._writers):
            w.close()


@asynccontextmanager
async def imap_proxy(host: str, port: int) -> AsyncIterator[ImapProxy]:
    """A running proxy to the IMAP server at host:port; its `port` is set."""
    proxy = ImapProxy(host, port)
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        proxy.release.set()
        proxy.cut_all()
        server.close()
        with suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
