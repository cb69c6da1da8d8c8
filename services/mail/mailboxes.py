"""The firm's connected mailboxes (EMAIL SYNC): connecting one, listing them, syncing now.

`connect_mailbox` checks the IMAP and the SMTP login before it saves anything and answers a
failure with a stable code (IMAP_/SMTP_ AUTH_FAILED, CONNECTION_FAILED, TLS_FAILED). The
password is stored encrypted (crypto.fernet(settings, "mailbox-password")); it is never
returned, logged, audited or put into an error message.

Transport rules:
- IMAP: imapTls on = TLS from the first byte (IMAP4_SSL, usually port 993); off = plain IMAP.
- SMTP: smtpTls on = implicit TLS on port 465, STARTTLS (required) on every other port (587,
  25, 2525...); off = plain SMTP. AUTH is tried when the server offers it and skipped when it
  offers none (a relay that trusts the network).
- Certificates are always verified (the system's trust store); a self-signed certificate is a
  TLS failure.

`open_imap` and `mailbox_password` are shared with the sync engine (services/mail/sync_engine.py), so
both log in alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

import aioimaplib
import aiosmtplib
from tortoise.exceptions import IntegrityError
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from models import Mailbox, StaffMember
from portico.settings import Settings
from services.outbound.transport import SMTPS_PORT, scrub
from services.shared import audit, crypto
from services.shared.emails import validate_address
from services.shared.errors import InputError, UserError, input_error
from services.shared.pubsub import EventBus
from services.shared.scope import FirmScope

log = logging.getLogger(__name__)

PASSWORD_PURPOSE = "mailbox-password"
CHECK_TIMEOUT_SECONDS = 10.0  # per server, the whole conversation
GOODBYE_SECONDS = 2.0  # LOGOUT / QUIT after a successful check
MAX_HOST_LENGTH = 255
MAX_USERNAME_LENGTH = 255
MAX_PASSWORD_LENGTH = 1024


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
class NewMailbox:
    """connectMailbox's input; the password never shows in a repr (logs, tracebacks)."""

    address: str
    imap_host: str
    imap_port: int
    imap_tls: bool
    smtp_host: str
    smtp_port: int
    smtp_tls: bool
    username: str
    password: str = field(repr=False)


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

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# Which input field each failure points at.
_FIELDS = {
    "IMAP_AUTH_FAILED": "password",
    "IMAP_CONNECTION_FAILED": "imapHost",
    "IMAP_TLS_FAILED": "imapTls",
    "SMTP_AUTH_FAILED": "password",
    "SMTP_CONNECTION_FAILED": "smtpHost",
    "SMTP_TLS_FAILED": "smtpTls",
}


def mailboxes(scope: FirmScope) -> QuerySet[Mailbox]:
    """The firm's mailboxes by address."""
    return scope.query(Mailbox).order_by("address_normalized", "id")


def encrypt_password(settings: Settings, password: str) -> str:
    return crypto.fernet(settings, PASSWORD_PURPOSE).encrypt(password.encode()).decode("ascii")


def mailbox_password(settings: Settings, mailbox: Mailbox) -> str:
    """The stored password in clear, for logging in (never for showing)."""
    token = mailbox.password_encrypted.encode("ascii")
    return crypto.fernet(settings, PASSWORD_PURPOSE).decrypt(token).decode()


async def connect_mailbox(
    scope: FirmScope,
    new: NewMailbox,
    settings: Settings,
    staff: StaffMember | None = None,
) -> Mailbox:
    """Validates the input, checks both logins, then saves the mailbox (nothing on failure)."""
    new = _clean(new)
    normalized = new.address.lower()
    if await scope.query(Mailbox).filter(address_normalized=normalized).exists():
        raise _exists(new.address)
    imap = MailServer(new.imap_host, new.imap_port, new.imap_tls)
    smtp = MailServer(new.smtp_host, new.smtp_port, new.smtp_tls)
    # Both at once: the wait is the slower of the two, and every problem is reported.
    results = await asyncio.gather(
        check_imap(imap, new.username, new.password),
        check_smtp(smtp, new.username, new.password),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    for failure in failures:
        if not isinstance(failure, MailLoginError):
            raise failure
    if failures:
        raise InputError(
            *(
                UserError(f.code, str(f), ("input", _FIELDS[f.code]))
                for f in failures
                if isinstance(f, MailLoginError)
            )
        )
    try:
        async with in_transaction():
            mailbox = await Mailbox.create(
                firm_id=scope.firm_id,
                address=new.address,
                address_normalized=normalized,
                imap_host=new.imap_host,
                imap_port=new.imap_port,
                imap_tls=new.imap_tls,
                smtp_host=new.smtp_host,
                smtp_port=new.smtp_port,
                smtp_tls=new.smtp_tls,
                username=new.username,
                password_encrypted=encrypt_password(settings, new.password),
                created_by=staff,
            )
            await audit.record(
                scope,
                "MAILBOX_CONNECTED",
                account_id=None,
                email=new.address,
                staff=staff,
                after=_audited(new),
            )
    except IntegrityError:  # connected twice at once
        raise _exists(new.address) from None
    log.info("mailbox %s connected (firm %s, id %s)", new.address, scope.firm_id, mailbox.pk)
    # This process's sync loop (if any) starts on the new mailbox now, not an interval later.
    from services.loops import mail_sync  # here: mail_sync imports this module

    mail_sync.notify()
    return mailbox


async def sync_now(
    scope: FirmScope, mailbox_id: int | None, settings: Settings, bus: EventBus | None = None
) -> Mailbox:
    """Syncs one mailbox of the firm now; returns it as the sync left it."""
    mailbox = await scope.get(Mailbox, mailbox_id, "id")
    try:
        # Imported here: the sync engine is optional to this module (and built separately).
        from services.mail.sync_engine import sync_mailbox
    except ImportError as exc:
        if exc.name != "services.mail.sync_engine":
            raise  # the engine is there but broken: an internal error, not "unavailable"
        raise input_error(
            "SYNC_UNAVAILABLE", "Mailbox sync is not available on this server.", "id"
        ) from None
    await sync_mailbox(scope, mailbox, settings, bus)
    return await scope.get(Mailbox, mailbox.pk, "id")


# -- Checking the logins -------------------------------------------------------------------


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
                "IMAP_TLS_FAILED",
                f"The IMAP server {server} accepts passwords only over TLS: turn imapTls on "
                "(usually with port 993).",
            )
        try:
            response = await client.login(_quoted(username), password)
        except TimeoutError:
            raise MailLoginError(
                "IMAP_CONNECTION_FAILED",
                f"The IMAP server {server} did not answer the login within {timeout:g} s.",
            ) from None
        except (OSError, aioimaplib.AioImapException) as exc:
            raise MailLoginError(
                "IMAP_CONNECTION_FAILED",
                f"The IMAP server {server} dropped the connection during login: "
                f"{_describe(exc, password)}",
            ) from None
        if response.result != "OK":
            answer = scrub(_imap_text(response.lines), password)
            raise MailLoginError(
                "IMAP_AUTH_FAILED",
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
            async with asyncio.timeout(GOODBYE_SECONDS):
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
    """Connects (implicit TLS on 465, STARTTLS elsewhere when tls is on), then logs in when
    the server offers AUTH; MailLoginError with an SMTP_* code on failure."""
    timeout = CHECK_TIMEOUT_SECONDS if wait is None else wait
    implicit = server.tls and server.port == SMTPS_PORT
    smtp = aiosmtplib.SMTP(
        hostname=server.host, port=server.port, use_tls=implicit, start_tls=False, timeout=timeout
    )
    phase = "connect"
    try:
        async with asyncio.timeout(timeout):
            await smtp.connect()
            await smtp.ehlo()
            if server.tls and not implicit:
                phase = "starttls"
                if not smtp.supports_extension("starttls"):
                    raise MailLoginError(
                        "SMTP_TLS_FAILED",
                        f"The SMTP server {server} does not offer STARTTLS: turn smtpTls off, "
                        f"or use port {SMTPS_PORT} for TLS from the first byte.",
                    )
                await smtp.starttls()
                await smtp.ehlo()
            if smtp.supports_extension("auth"):
                phase = "auth"
                await smtp.login(username, password)
        # Checked. A polite QUIT, briefly: a server slow to say goodbye changes nothing.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(GOODBYE_SECONDS):
                await smtp.quit()
    except MailLoginError:
        raise
    except TimeoutError:
        code = "SMTP_TLS_FAILED" if phase == "starttls" else "SMTP_CONNECTION_FAILED"
        raise MailLoginError(
            code, f"The SMTP server {server} did not answer within {timeout:g} s."
        ) from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise _smtp_error(server, phase, implicit, exc, password) from None
    finally:
        smtp.close()


def _smtp_error(
    server: MailServer, phase: str, implicit: bool, exc: BaseException, password: str
) -> MailLoginError:
    reason = _describe(exc, password)
    if phase == "connect" and implicit and _tls_trouble(exc):
        return MailLoginError(
            "SMTP_TLS_FAILED", f"TLS with the SMTP server {server} failed: {reason}"
        )
    if phase == "connect":
        return MailLoginError(
            "SMTP_CONNECTION_FAILED", f"Could not connect to the SMTP server {server}: {reason}"
        )
    if phase == "starttls":
        return MailLoginError(
            "SMTP_TLS_FAILED", f"STARTTLS with the SMTP server {server} failed: {reason}"
        )
    if phase == "auth" and isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return MailLoginError(
            "SMTP_AUTH_FAILED",
            f"The SMTP server {server} refused the username or password: {reason}",
        )
    if phase == "auth" and not isinstance(exc, aiosmtplib.SMTPServerDisconnected | OSError):
        # e.g. "No suitable authentication method found."
        return MailLoginError(
            "SMTP_AUTH_FAILED", f"Could not log in to the SMTP server {server}: {reason}"
        )
    return MailLoginError(
        "SMTP_CONNECTION_FAILED", f"The SMTP server {server} dropped the connection: {reason}"
    )


def _imap_connect_error(server: MailServer, exc: BaseException) -> MailLoginError:
    if _tls_trouble(exc):
        return MailLoginError(
            "IMAP_TLS_FAILED",
            f"TLS with the IMAP server {server} failed: {_describe(exc)}"
            + (" (is it a plain IMAP port? turn imapTls off)" if _plain_peer(exc) else ""),
        )
    if isinstance(exc, TimeoutError):
        hint = "" if server.tls else " (a TLS port? turn imapTls on)"
        return MailLoginError(
            "IMAP_CONNECTION_FAILED",
            f"The IMAP server {server} did not greet within the time allowed{hint}.",
        )
    return MailLoginError(
        "IMAP_CONNECTION_FAILED", f"Could not connect to the IMAP server {server}: {_describe(exc)}"
    )


# -- Input ---------------------------------------------------------------------------------


def _clean(new: NewMailbox) -> NewMailbox:
    """Trimmed input, or every problem with it at once."""
    errors: list[UserError] = []
    address = new.address
    try:
        address, _ = validate_address(new.address, "input", "address")
    except InputError as exc:
        errors.extend(exc.errors)
    imap_host = _host(new.imap_host, "imapHost", errors)
    smtp_host = _host(new.smtp_host, "smtpHost", errors)
    _port(new.imap_port, "imapPort", errors)
    _port(new.smtp_port, "smtpPort", errors)
    username = new.username.strip()
    if not username or len(username) > MAX_USERNAME_LENGTH or not username.isprintable():
        errors.append(
            UserError(
                "INVALID_USERNAME",
                f"The username must be 1 to {MAX_USERNAME_LENGTH} printable characters.",
                ("input", "username"),
            )
        )
    password = new.password
    if not password or len(password) > MAX_PASSWORD_LENGTH or not password.isprintable():
        errors.append(
            UserError(
                "INVALID_PASSWORD",
                f"The password must be 1 to {MAX_PASSWORD_LENGTH} characters without line "
                "breaks or other control characters.",
                ("input", "password"),
            )
        )
    if errors:
        raise InputError(*errors)
    return NewMailbox(
        address=address,
        imap_host=imap_host,
        imap_port=new.imap_port,
        imap_tls=new.imap_tls,
        smtp_host=smtp_host,
        smtp_port=new.smtp_port,
        smtp_tls=new.smtp_tls,
        username=username,
        password=password,
    )


def _host(value: str, name: str, errors: list[UserError]) -> str:
    host = value.strip()
    if (
        not host
        or len(host) > MAX_HOST_LENGTH
        or any(not c.isprintable() or c.isspace() for c in host)
    ):
        errors.append(
            UserError(
                "INVALID_HOST",
                f"{name} must be a host name or IP address (1 to {MAX_HOST_LENGTH} characters, "
                "no spaces).",
                ("input", name),
            )
        )
    return host


def _port(value: int, name: str, errors: list[UserError]) -> None:
    if not 1 <= value <= 65535:
        errors.append(
            UserError("INVALID_PORT", f"{name} must be between 1 and 65535.", ("input", name))
        )


def _exists(address: str) -> InputError:
    return input_error(
        "MAILBOX_EXISTS", f"{address} is already connected in this firm.", "input", "address"
    )


def _audited(new: NewMailbox) -> dict[str, Any]:
    """What the audit trail keeps of a connected mailbox: everything but the password."""
    return {
        "address": new.address,
        "imapHost": new.imap_host,
        "imapPort": new.imap_port,
        "imapTls": new.imap_tls,
        "smtpHost": new.smtp_host,
        "smtpPort": new.smtp_port,
        "smtpTls": new.smtp_tls,
        "username": new.username,
    }


# -- Helpers -------------------------------------------------------------------------------


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
