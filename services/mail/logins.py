"""Logging in to a mailbox's servers: opening an IMAP session, checking the IMAP and SMTP logins.

connectMailbox checks both logins with these before it saves anything, and the sync, the IDLE
watcher and filing replies open IMAP through `open_imap`, so all of them log in alike. A
failure is a MailLoginError with a stable code (IMAP_/SMTP_ AUTH_FAILED, CONNECTION_FAILED,
TLS_FAILED, or HOST_NOT_ALLOWED) and a readable reason that never holds the password.

Where they connect (services/shared/network): the host is resolved once and every address
vetted (HOST_NOT_ALLOWED for a non-public one unless `allow_private`), then the connection
goes to a vetted address while TLS checks the host name. Before a server has greeted, every
failure (refused, unreachable, timed out, no greeting, not a mail server) is one and the same
CONNECTION_FAILED sentence: the answer must not tell an open port from a closed one.

Transport rules:
- IMAP: imapTls on = TLS from the first byte (IMAP4_SSL, usually port 993); off = plain IMAP.
- SMTP: the rules replies are sent by (services/outbound/transport.MailboxSmtp): smtpTls on =
  implicit TLS on port 465, STARTTLS (required) on every other port; off = plain SMTP. AUTH
  is tried when the server offers it and skipped when it offers none.
- Certificates are always verified (the system's trust store); a self-signed certificate is a
  TLS failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from typing import Any

import aioimaplib
import aiosmtplib

from services.outbound.transport import (
    SMTPS_PORT,
    MailboxSmtp,
    NoStartTls,
    SmtpConfig,
    scrub,
)
from services.shared import network
from services.shared.errors import ErrorCode

CHECK_TIMEOUT_SECONDS = 10.0  # per server, the whole conversation
LOGOUT_SECONDS = 2.0  # for the server's goodbye, after a check or a session


class _RedactLogin(logging.Filter):
    """aioimaplib logs each command it sends at DEBUG, masking the password only as typed: a
    password with a quote or backslash is sent escaped and would show. Drop LOGIN lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if "LOGIN" in message and message.startswith("Sending"):
            record.msg, record.args = "Sending : <LOGIN command, redacted>", ()
        return True


# A logger's filters see only its own records: aioimaplib logs on its module's logger.
logging.getLogger("aioimaplib.aioimaplib").addFilter(_RedactLogin())


@dataclass(frozen=True)
class MailServer:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class MailLoginError(Exception):
    """A failed IMAP or SMTP check: `code` is one of the *_FAILED codes, `str()` says why
    (the server's answer when there is one; never the password)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class _VettedImap(aioimaplib.IMAP4):
    """aioimaplib's client, connected to a vetted address of `destination` (not to the name
    again) with TLS (when `ssl_context`) checking the host name."""

    def __init__(
        self, destination: network.Destination, timeout: float, ssl_context: ssl.SSLContext | None
    ) -> None:
        self._destination = destination
        super().__init__(
            host=destination.host, port=destination.port, timeout=timeout, ssl_context=ssl_context
        )

    def create_client(
        self,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop | None,
        conn_lost_cb: Any = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # As aioimaplib's own, but through _connect: its `_client_task` is what
        # wait_hello_from_server awaits and close_imap cancels.
        local_loop = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = aioimaplib.IMAP4ClientProtocol(local_loop, conn_lost_cb)
        self._client_task = local_loop.create_task(self._connect(local_loop, ssl_context))

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, ssl_context: ssl.SSLContext | None
    ) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
        sock = await network.connect(self._destination)
        try:
            return await loop.create_connection(
                lambda: self.protocol,
                sock=sock,
                ssl=ssl_context,
                server_hostname=self._destination.host if ssl_context else None,
            )
        except BaseException:
            sock.close()
            raise


async def open_imap(
    server: MailServer,
    username: str,
    password: str,
    *,
    allow_private: bool,
    wait: float | None = None,
) -> aioimaplib.IMAP4:
    """A logged-in IMAP client, or MailLoginError with an IMAP_* code (HOST_NOT_ALLOWED for a
    host that is not public, unless `allow_private`)."""
    timeout = CHECK_TIMEOUT_SECONDS if wait is None else wait
    try:
        async with asyncio.timeout(timeout):
            destination = await network.resolve(
                server.host, server.port, allow_private=allow_private
            )
    except network.HostNotAllowed as exc:
        raise _not_allowed("IMAP", server, exc) from None
    except (OSError, TimeoutError):  # no such name, or no answer from DNS
        raise _unreachable("IMAP", server) from None
    context = ssl.create_default_context() if server.tls else None
    client = _VettedImap(destination, timeout, context)
    try:
        try:
            await client.wait_hello_from_server()
        except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
            raise _imap_connect_error(server, exc) from None
        if not server.tls and "LOGINDISABLED" in _capabilities(client):
            raise MailLoginError(
                ErrorCode.IMAP_TLS_FAILED,
                f"The IMAP server {server} accepts passwords only over TLS: turn imapTls on "
                "(usually with port 993).",
            )
        try:
            response = await client.login(_quoted(username), password)
        except TimeoutError:
            raise MailLoginError(
                ErrorCode.IMAP_CONNECTION_FAILED,
                f"The IMAP server {server} did not answer the login within {timeout:g} s.",
            ) from None
        except (OSError, aioimaplib.AioImapException) as exc:
            raise MailLoginError(
                ErrorCode.IMAP_CONNECTION_FAILED,
                f"The IMAP server {server} dropped the connection during login: "
                f"{_scrub_imap(_describe(exc, password), password)}",
            ) from None
        if response.result != "OK":
            answer = _scrub_imap(_imap_text(response.lines), password)
            raise MailLoginError(
                ErrorCode.IMAP_AUTH_FAILED,
                f"The IMAP server {server} refused the username or password"
                + (f": {answer}" if answer else "."),
            )
    except BaseException:
        close_imap(client)
        raise
    return client


async def check_imap(
    server: MailServer, username: str, password: str, *, allow_private: bool
) -> None:
    client = await open_imap(server, username, password, allow_private=allow_private)
    try:
        # Checked. A polite LOGOUT, briefly: a server slow to say goodbye changes nothing.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(LOGOUT_SECONDS):
                await client.logout()
    finally:
        close_imap(client)


def close_imap(client: aioimaplib.IMAP4) -> None:
    """Drops the connection (or the attempt to make one) without a word to the server."""
    task = getattr(client, "_client_task", None)  # aioimaplib's pending connect, if any
    if task is not None and not task.done():
        task.cancel()
    transport = client.protocol.transport if client.protocol else None
    if transport is not None:
        transport.close()


async def check_smtp(
    server: MailServer,
    username: str,
    password: str,
    *,
    allow_private: bool,
    wait: float | None = None,
) -> None:
    """Connects, secures and logs in as replies will be sent (services/outbound/transport
    .MailboxSmtp); MailLoginError with an SMTP_* code (or HOST_NOT_ALLOWED) on failure."""
    timeout = CHECK_TIMEOUT_SECONDS if wait is None else wait
    config = SmtpConfig.for_mailbox(
        server.host, server.port, server.tls, username, password, timeout
    )
    session = MailboxSmtp(config, allow_private=allow_private)
    try:
        async with asyncio.timeout(timeout):
            await session.open()
        await session.quit()  # checked
    except network.HostNotAllowed as exc:
        raise _not_allowed("SMTP", server, exc) from None
    except NoStartTls:
        raise MailLoginError(
            ErrorCode.SMTP_TLS_FAILED,
            f"The SMTP server {server} does not offer STARTTLS: turn smtpTls off, "
            f"or use port {SMTPS_PORT} for TLS from the first byte.",
        ) from None
    except TimeoutError:
        if session.phase == "connect":
            raise _unreachable("SMTP", server) from None
        code = (
            ErrorCode.SMTP_TLS_FAILED
            if session.phase == "starttls"
            else ErrorCode.SMTP_CONNECTION_FAILED
        )
        raise MailLoginError(
            code, f"The SMTP server {server} did not answer within {timeout:g} s."
        ) from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise _smtp_error(server, session.phase, config.use_tls, exc, password) from None
    finally:
        session.close()


def _smtp_error(
    server: MailServer, phase: str, implicit: bool, exc: BaseException, password: str
) -> MailLoginError:
    reason = _describe(exc, password)
    if phase == "connect" and implicit and _tls_trouble(exc):
        return MailLoginError(
            ErrorCode.SMTP_TLS_FAILED, f"TLS with the SMTP server {server} failed: {reason}"
        )
    if phase == "connect":
        return _unreachable("SMTP", server)
    if phase == "starttls":
        return MailLoginError(
            ErrorCode.SMTP_TLS_FAILED, f"STARTTLS with the SMTP server {server} failed: {reason}"
        )
    if phase == "auth" and isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return MailLoginError(
            ErrorCode.SMTP_AUTH_FAILED,
            f"The SMTP server {server} refused the username or password: {reason}",
        )
    if phase == "auth" and not isinstance(exc, aiosmtplib.SMTPServerDisconnected | OSError):
        # e.g. "No suitable authentication method found."
        return MailLoginError(
            ErrorCode.SMTP_AUTH_FAILED, f"Could not log in to the SMTP server {server}: {reason}"
        )
    return MailLoginError(
        ErrorCode.SMTP_CONNECTION_FAILED,
        f"The SMTP server {server} dropped the connection: {reason}",
    )


def _imap_connect_error(server: MailServer, exc: BaseException) -> MailLoginError:
    if _tls_trouble(exc):
        return MailLoginError(
            ErrorCode.IMAP_TLS_FAILED,
            f"TLS with the IMAP server {server} failed: {_describe(exc)}"
            + (" (is it a plain IMAP port? turn imapTls off)" if _plain_peer(exc) else ""),
        )
    return _unreachable("IMAP", server)


_UNREACHABLE = {
    "IMAP": (ErrorCode.IMAP_CONNECTION_FAILED, "imapTls"),
    "SMTP": (ErrorCode.SMTP_CONNECTION_FAILED, "smtpTls"),
}


def _unreachable(protocol: str, server: MailServer) -> MailLoginError:
    """One sentence for a refused connection, an unreachable host, a timeout and a listener
    that does not greet as a mail server: telling them apart would map the network."""
    code, tls_field = _UNREACHABLE[protocol]
    return MailLoginError(
        code,
        f"Could not connect to the {protocol} server {server}: no {protocol} server answered "
        f"there (check the host, the port and {tls_field}).",
    )


def _not_allowed(protocol: str, server: MailServer, exc: network.HostNotAllowed) -> MailLoginError:
    return MailLoginError(
        ErrorCode.HOST_NOT_ALLOWED, f"Not connecting to the {protocol} server {server}: {exc}."
    )


def _scrub_imap(text: str, password: str) -> str:
    """Without the password as typed, nor as IMAP quoting sends it (quotes and backslashes
    escaped), should a server echo the LOGIN command."""
    escaped = aioimaplib.quoted(password)[1:-1]
    return scrub(scrub(text, password), escaped)


def _quoted(value: str) -> str:
    # aioimaplib quotes the password but sends the username as an atom: quote it, so a
    # username with a space (or a quote) still logs in.
    return aioimaplib.quoted(value)


def _capabilities(client: aioimaplib.IMAP4) -> set[str]:
    return {str(c).upper() for c in client.protocol.capabilities}


def _imap_text(lines: list[Any]) -> str:
    parts = [
        line.decode("utf-8", "replace") if isinstance(line, bytes) else str(line) for line in lines
    ]
    return " ".join(p.strip() for p in parts if p.strip())[:300]


def _tls_trouble(exc: BaseException | None) -> bool:
    """Whether an SSL error is behind `exc` (aiosmtplib wraps them in its own errors)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ssl.SSLError | ssl.CertificateError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _plain_peer(exc: BaseException) -> bool:
    return "WRONG_VERSION_NUMBER" in str(exc).upper()


def _describe(exc: BaseException, password: str | None = None) -> str:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        # The server's words as sent: str() would be a tuple's repr, whose escaping (a
        # backslash doubled) hides an echoed password from scrub.
        text = f"{exc.code} {exc.message}".strip()
    else:
        text = str(exc).strip() or type(exc).__name__
    return scrub(text, password)[:300]
