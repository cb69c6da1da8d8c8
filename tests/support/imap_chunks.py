"""A TCP proxy in front of the test Dovecot that hands the server's answers to the client in
pieces (see `chunking_proxy`), to read IMAP answers split where a test wants:
- `pieces`: the size of each next piece written to the client (e.g. always 1, or random);
  each piece is written on its own (TCP_NODELAY), `delay` seconds apart;
- `silent_after = n`: once a FETCH is under way, the answer stops after n bytes of it (a
  server gone silent mid-answer); the connection stays open.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress


class ChunkingProxy:
    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.host = "127.0.0.1"
        self.port = 0
        self.pieces: Callable[[], int] | None = None
        self.delay = 0.0
        self.silent_after: int | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._writers.update((writer, up_writer))
        fetching = asyncio.Event()

        async def to_server() -> None:
            while line := await reader.readline():
                if b" FETCH " in line.upper():
                    fetching.set()
                up_writer.write(line)
                await up_writer.drain()

        async def to_client() -> None:
            answered = 0
            while data := await up_reader.read(65536):
                if fetching.is_set() and self.silent_after is not None:
                    data = data[: max(0, self.silent_after - answered)]
                    answered += len(data)
                    if not data:
                        continue  # silent: what the server sends is dropped
                while data:
                    size = self.pieces() if self.pieces is not None else len(data)
                    writer.write(data[:size])
                    data = data[size:]
                    await writer.drain()
                    await asyncio.sleep(self.delay)

        with suppress(ConnectionError, OSError):
            tasks = [asyncio.ensure_future(to_server()), asyncio.ensure_future(to_client())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for w in (writer, up_writer):
                    w.close()
                self._writers.difference_update((writer, up_writer))


@asynccontextmanager
async def chunking_proxy(host: str, port: int) -> AsyncIterator[ChunkingProxy]:
    """A running proxy to the IMAP server at host:port; its `port` is set."""
    proxy = ChunkingProxy(host, port)
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        for w in list(proxy._writers):
            w.close()
        server.close()
        with suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
