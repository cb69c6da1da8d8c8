"""aiosmtpd as a process of its own, for a mail host of tests/support/netns.py's network (a
thread of the test process cannot listen inside another namespace).

    ip netns exec NS python -m tests.support.smtp_host --host 10.77.0.5 --port 2525 --folder DIR

It runs tests/support/smtp.py's SmtpServer on that address until SIGTERM, and writes each
message it accepts to DIR as `<n>.eml`, headed by `X-Peer: <the sender's address>` (written
aside, then renamed: a reader never sees half of one). `received(DIR)` reads them back, parsed, in the order they arrived.
"""

from __future__ import annotations

import argparse
import signal
import threading
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from tests.support.smtp import SmtpServer


class FolderSmtpServer(SmtpServer):
    """An SmtpServer that also keeps each accepted message as a file."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            with self._lock:
                self.count += 1
                number = self.count
            part = self.folder / f".{number}.eml.part"
            # Where it came from, as a receiving server's Received header would say.
            peer = f"X-Peer: {session.peer[0]}\r\n".encode()
            part.write_bytes(peer + (envelope.original_content or envelope.content))
            part.rename(self.folder / f"{number}.eml")
        return reply


def received(folder: Path) -> list[EmailMessage]:
    """The messages the server accepted so far, oldest first."""
    files = sorted(folder.glob("*.eml"), key=lambda path: int(path.stem))
    return [message_from_bytes(path.read_bytes(), policy=policy.default) for path in files]  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--folder", type=Path, required=True)
    args = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = FolderSmtpServer(args.folder)
    server.host, server.port = args.host, args.port
    server.start()
    print(f"smtp listening on {args.host}:{args.port}", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
