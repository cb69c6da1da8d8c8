"""Logging in to a mailbox's servers: opening an IMAP session, checking the IMAP and SMTP logins.

connectMailbox checks both logins with these before it saves anything, and the sync, the IDLE
watcher and filing replies open IMAP through `open_imap`, so all of them log in alike. A
failure is a MailLoginError with a stable code (IMAP_/SMTP_ AUTH_FAILED, CONNECTION_FAILED,
TLS_FAILED) and a readable reason that never holds the password.

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


async def open_imap(
    server: MailServer, username: str, password: str, *, wait: float | None = None
) -> aioimaplib.IMAP4:
    """A logged-in IMAP client, or MailLoginError with an IMAP_* code."""
    timeout = CHECK_TIMEOUT_SECONDS if wait is None else wait
    if server.tls:
        context = ssl.create_default_context()
        client: aioimaplib.IMAP4 = aioimaplib.IMAP4_SSL(
            host=server.host, port=server.port, timeout=timeout, ssl_context=context
        )
    else:
        client = aioimaplib.IMAP4(host=server.host, port=server.port, timeout=timeout)
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
                f"{_describe(exc, password)}",
            ) from None
        if response.result != "OK":
            answer = scrub(_imap_text(response.lines), password)
            raise MailLoginError(
                ErrorCode.IMAP_AUTH_FAILED,
                f"The IMAP server {server} refused the username or password"
                + (f": {answer}" if answer else "."),
            )
    except BaseException:
        close_imap(client)
        raise
    return client


async def check_imap(server: MailServer, username: str, password: str) -> None:
    client = await open_imap(server, username, password)
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
    server: MailServer, username: str, password: str, *, wait: float | None = None
) -> None:
    """Connects, secures and logs in as replies will be sent (services/outbound/transport
    .MailboxSmtp); MailLoginError with an SMTP_* code on failure."""
    timeout = CHECK_TIMEOUT_SECONDS if wait is None else wait
    config = SmtpConfig.for_mailbox(
        server.host, server.port, server.tls, username, password, timeout
    )
    session = MailboxSmtp(config)
    try:
        async with asyncio.timeout(timeout):
            await session.open()
        await session.quit()  # checked
    except NoStartTls:
        raise MailLoginError(
            ErrorCode.SMTP_TLS_FAILED,
            f"The SMTP server {server} does not offer STARTTLS: turn smtpTls off, "
            f"or use port {SMTPS_PORT} for TLS from the first byte.",
        ) from None
    except TimeoutError:
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
        return MailLoginError(
            ErrorCode.SMTP_CONNECTION_FAILED,
            f"Could not connect to the SMTP server {server}: {reason}",
        )
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
    if isinstance(exc, TimeoutError):
        hint = "" if server.tls else " (a TLS port? turn imapTls on)"
        return MailLoginError(
            ErrorCode.IMAP_CONNECTION_FAILED,
            f"The IMAP server {server} did not greet within the time allowed{hint}.",
        )
    return MailLoginError(
        ErrorCode.IMAP_CONNECTION_FAILED,
        f"Could not connect to the IMAP server {server}: {_describe(exc)}",
    )


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
    text = str(exc).strip() or type(exc).__name__
    return scrub(text, password)[:300]
