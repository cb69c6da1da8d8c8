"""A throwaway Dovecot IMAP server for tests (configuration from shared/notes/dovecot.md).

Use the `imap` fixture (import `imap_fixture`): a server on a free loopback port whose
static passdb accepts any user with `PASSWORD`, so each test can use its own mailbox; put
mail in with `append`.
"""

from __future__ import annotations

import asyncio
import imaplib
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.services import need_dovecot

PASSWORD = "imap-secret"

CONFIG = """
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={dir}/home/%u
}}
mail_location = maildir:{dir}/home/%u/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
namespace inbox {{
  inbox = yes
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
}}
"""


@dataclass
class ImapServer:
    host: str
    port: int
    folder: Path
    binary: str

    def append(self, user: str, raw: bytes, folder: str = "INBOX") -> None:
        """Puts a message into `user`'s folder, as a mail server delivering it would."""
        with imaplib.IMAP4(self.host, self.port) as client:
            client.login(user, PASSWORD)
            client.append(folder, "", imaplib.Time2Internaldate(time.time()), raw)
            client.logout()

    def deliver_to_maildir(self, user: str, raw: bytes) -> None:
        """Puts a message into `user`'s INBOX the way a local delivery agent does (Maildir
        tmp/ then new/): no IMAP login, and it works while the IMAP server is down."""
        maildir = self.folder / "home" / user / "Maildir"
        name = f"{int(time.time())}.P{os.getpid()}Q{secrets.token_hex(4)}.portico-test"
        tmp = maildir / "tmp" / name
        tmp.write_bytes(raw)
        tmp.chmod(0o644)
        tmp.rename(maildir / "new" / name)

    def stop(self) -> None:
        pid_file = self.folder / "run" / "master.pid"
        if pid_file.exists():
            subprocess.run(["kill", pid_file.read_text().strip()], check=False)
            for _ in range(50):
                if not _listening(self.host, self.port):
                    break
                time.sleep(0.1)

    def start(self) -> None:
        subprocess.run([self.binary, "-c", str(self.folder / "dovecot.conf")], check=True)
        for _ in range(100):
            if _listening(self.host, self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not listen:\n{(self.folder / 'dovecot.log').read_text()}")

    def ensure_running(self) -> None:
        """Starts the server again if a test left it stopped."""
        if not _listening(self.host, self.port):
            self.start()

    def sessions(self, user: str) -> list[int]:
        """The processes serving `user` (their working directory is the user's home)."""
        home = str(self.folder / "home" / user)
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with suppress(OSError):
                    if os.readlink(entry / "cwd") == home:
                        pids.append(int(entry.name))
        return pids

    def end_sessions(self, user: str, how: signal.Signals = signal.SIGTERM) -> None:
        """Ends the server's processes still serving `user`: as a shutdown does (SIGTERM:
        Dovecot says BYE first), or as a crash does (SIGKILL: the connection just ends).

        Stopping Dovecot's master closes the listener at once, but a session already open is
        served for a few more seconds; its process is stopped here so the test does not wait
        for that.
        """
        pids = self.sessions(user)
        assert pids, f"no Dovecot process serves {user}"
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, how)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in pids):
            assert time.monotonic() < deadline, "the Dovecot session did not end"
            time.sleep(0.05)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_dovecot(binary: str) -> Iterator[ImapServer]:
    """A Dovecot on a free loopback port with its own folder, gone after the block."""
    folder = Path(tempfile.mkdtemp(prefix="portico-dovecot-"))
    try:
        folder.chmod(0o755)
        for sub in ("run", "state", "home"):
            (folder / sub).mkdir()
        shutil.chown(folder / "home", "dovecot", "dovecot")
        port = _free_port()
        config = CONFIG.format(dir=folder, port=port, password=PASSWORD)
        (folder / "dovecot.conf").write_text(config)
        server = ImapServer("127.0.0.1", port, folder, binary)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(name="imap", scope="module")
def imap_fixture() -> Iterator[ImapServer]:
    with running_dovecot(need_dovecot()) as server:
        yield server


class TinyImap:
    """An IMAP server on 127.0.0.1 (TLS from the first byte with `context`) that greets,
    accepts any LOGIN and says goodbye: enough for connectMailbox's login check where
    Dovecot's plain port will not do. It counts connections and keeps every line it was
    sent: what a server the caller picked would learn."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self.lines: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
        with suppress(ConnectionError, ssl.SSLError):
            while line := await reader.readline():
                self.lines.append(line)
                tag, _, rest = line.decode(errors="replace").partition(" ")
                command = rest.split(" ", 1)[0].strip().upper()
                if command == "LOGOUT":
                    writer.write(f"* BYE\r\n{tag} OK LOGOUT done\r\n".encode())
                    break
                if command == "CAPABILITY":
                    writer.write(b"* CAPABILITY IMAP4rev1\r\n")
                writer.write(f"{tag} OK {command} done\r\n".encode())
                await writer.drain()
            await writer.drain()
        writer.close()


@asynccontextmanager
async def tiny_imap(context: ssl.SSLContext | None = None) -> AsyncIterator[TinyImap]:
    """A running TinyImap; its `port` is set."""
    tiny = TinyImap()
    server = await asyncio.start_server(tiny.serve, "127.0.0.1", 0, ssl=context)
    tiny.port = server.sockets[0].getsockname()[1]
    try:
        yield tiny
    finally:
        server.close()
        await server.wait_closed()
