"""A real SMTP server for tests: aiosmtpd in a thread of the test process.

Use the `smtp` fixture (import `smtp_fixture` into the test module). It records every
message it accepts, parsed, and can be told to refuse: `fail_data("451 4.3.0 try later")`
answers the next DATA command with that reply, `refuse_rcpt("550 5.1.1 no such user")`
refuses every recipient, `slow(0.3)` makes every DATA take that long before the message is
kept and answered (a client that dies meanwhile leaves a message the server still keeps),
and `stop()` / `start()` take the server down and bring it back on the same port.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller


def free_port() -> int:
    """A port nobody listens on (bound once and released: fine for tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SmtpServer:
    """The aiosmtpd handler and what it received; thread-safe (the server has its own loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[EmailMessage] = []
        self._data_replies: list[str] = []
        self._rcpt_reply: str | None = None
        self._data_delay = 0.0
        self._controller: Controller | None = None
        self.data_commands = 0
        self.host = "127.0.0.1"
        self.port = 0

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    @property
    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return list(self._messages)

    def fail_data(self, reply: str, times: int = 1) -> None:
        """Answer the next `times` DATA commands with `reply` instead of accepting."""
        with self._lock:
            self._data_replies.extend([reply] * times)

    def refuse_rcpt(self, reply: str | None) -> None:
        """Answer every RCPT TO with `reply` (None: accept again)."""
        with self._lock:
            self._rcpt_reply = reply

    def slow(self, seconds: float) -> None:
        """Take `seconds` over every DATA before keeping the message and answering (0: fast)."""
        with self._lock:
            self._data_delay = seconds

    def start(self) -> None:
        """Listen on `port` (a free one on the first start); after `stop()`, the same port."""
        if self._controller is not None:
            return
        if not self.port:
            self.port = free_port()
        controller = Controller(self, hostname=self.host, port=self.port)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop listening: connections are refused until `start()` (received mail is kept)."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    @property
    def running(self) -> bool:
        return self._controller is not None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages

    # aiosmtpd handler hooks (called on the server's thread).

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        with self._lock:
            reply = self._rcpt_reply
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.data_commands += 1
            reply = self._data_replies.pop(0) if self._data_replies else None
            delay = self._data_delay
        if delay:
            await asyncio.sleep(delay)  # the server's own loop: other sessions go on
        if reply:
            return reply
        raw = envelope.original_content or envelope.content
        message = message_from_bytes(raw, policy=policy.default)
        with self._lock:
            self._messages.append(message)  # type: ignore[arg-type]
        return "250 2.0.0 OK: queued"


@pytest.fixture(name="smtp")
def smtp_fixture() -> Iterator[SmtpServer]:
    """A running SMTP server on 127.0.0.1, stopped after the test."""
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class AuthSmtpServer(SmtpServer):
    """An SmtpServer that offers AUTH (PLAIN, LOGIN) over plain SMTP and accepts any username
    with `password`; `logins` records each attempt as (username, accepted)."""

    def __init__(self, password: str) -> None:
        super().__init__()
        self.password = password
        self.logins: list[tuple[str, bool]] = []

    def start(self) -> None:
        if self._controller is not None:
            return
        if not self.port:
            self.port = free_port()
        controller = Controller(
            self,
            hostname=self.host,
            port=self.port,
            authenticator=self._authenticate,
            **self.controller_options(),
        )
        controller.start()
        self._controller = controller

    def controller_options(self) -> dict[str, Any]:
        return {"auth_require_tls": False}

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword  # here: this block is appended

        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        username = auth_data.login.decode("utf-8", "replace")
        with self._lock:
            accepted = auth_data.password.decode("utf-8", "replace") == self.password
            self.logins.append((username, accepted))
        return AuthResult(success=accepted, handled=False)


@pytest.fixture(name="smtp_auth")
def smtp_auth_fixture() -> Iterator[AuthSmtpServer]:
    """A running SMTP server that requires nothing but offers AUTH; set `password` first."""
    server = AuthSmtpServer(password="smtp-secret")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class EchoingSmtpServer(AuthSmtpServer):
    """An AuthSmtpServer whose refusal repeats the password it was given inside `reply`
    (`{password}` marks the place): a careless server, to prove the echo goes no further."""

    reply = '535 5.7.8 password "{password}" rejected.'

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        from aiosmtpd.smtp import AuthResult

        result = super()._authenticate(server, session, envelope, mechanism, auth_data)
        if result.success or not hasattr(auth_data, "password"):
            return result
        typed = auth_data.password.decode("utf-8", "replace")
        return AuthResult(success=False, handled=False, message=self.reply.format(password=typed))


class TlsSmtpServer(AuthSmtpServer):
    """An AuthSmtpServer that offers STARTTLS with `context` (tests/support/tls.py)."""

    def __init__(self, password: str, context: ssl.SSLContext) -> None:
        super().__init__(password)
        self.context = context

    def controller_options(self) -> dict[str, Any]:
        return {"tls_context": self.context}
