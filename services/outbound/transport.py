"""Turning an outbox row into a message, and the ways of sending it.

SMTP (PORTICO_SMTP_URL) or .eml files for the platform's own mail; a connected mailbox's
SMTP server for replies from Inbox+ (MailboxSmtpTransport). Every transport has
`async send(message)`, for an EmailMessage or a WireMessage (services/outbound/wire: the
platform's mail, written directly), and raises TemporaryFailure (try again later) or
PermanentFailure (never will work) with the server's reason, so the delivery loop needs to
know nothing about SMTP; and `async aclose()`, which ends its open connections.

The SMTP transports keep their connections open between messages (services/outbound/
smtp_pool: reuse, and what happens when a reused connection turns out closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import ssl
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from models import OutboundEmail
from portico.settings import Settings
from services.outbound.failures import (
    DeliveryFailure,
    PermanentFailure,
    TemporaryFailure,
    internal_fault,
)
from services.outbound.outbox import (
    EXTRA_HEADERS,
    MAX_EXTRA_HEADER,
    Bodies,
    header_text,
)
from services.outbound.smtp_pool import Outgoing, SmtpPool
from services.outbound.wire import WireMessage, ascii_address, build_wire, platform_sender
from services.shared import network

log = logging.getLogger(__name__)

SMTP_TIMEOUT_SECONDS = 60.0
SMTPS_PORT = 465  # a mailbox's smtpTls on this port is implicit TLS, elsewhere STARTTLS
QUIT_SECONDS = 2.0
MAX_NAME_WORD = 70  # characters of one word of a From name build_message can fold
# Connections kept open per SMTP server: as many as a worker sends at once by default.
POOL_SIZE = 8


def scrub(text: str, secret: str | None) -> str:
    """`text` with every whole occurrence of `secret` replaced by ***: servers have no reason
    to echo a password; if one ever does, it goes no further.

    Whole: not glued to a letter, digit or underscore on either side, so a short password
    leaves words alone (`p` does not touch "port") while one that begins or ends with
    punctuation is still found next to spaces, quotes, brackets or other punctuation (a
    regex \\b would miss "hunter2!" at the end of a sentence)."""
    return _whole(secret).sub("***", text) if secret else text


def mentions(exc: BaseException, secret: str | None) -> bool:
    """Whether `secret` is anywhere in the text of `exc` or of an exception it came from (a
    logged traceback would show it). Any occurrence, not only whole ones as scrub replaces:
    a wrong yes costs only a traceback left out of the log."""
    if not secret:
        return False
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if secret in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _whole(secret: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(secret)}(?!\w)")


class OutboxMessage(EmailMessage):
    """An EmailMessage that remembers its outbox row (for the file transport's file name)."""

    row_id: int | None = None


class Transport(Protocol):
    async def send(self, message: Outgoing) -> None: ...

    async def prune(self) -> None: ...

    async def aclose(self) -> None: ...


def build_message(
    row: OutboundEmail,
    bodies: Bodies,
    settings: Settings,
    date: datetime | None = None,
    sender: str | None = None,
) -> OutboxMessage:
    """multipart/alternative (text, then HTML) with From, To, Subject, Message-ID and Date.

    `sender` is the From address when the row goes through a connected mailbox (a reply);
    PORTICO_MAIL_FROM's otherwise. The row's extra headers (In-Reply-To, References) follow
    Message-ID. A row without HTML (a reply a person wrote) is plain text only.

    The header values were cleaned when the row was written; the email policy refuses any
    CR or LF left in a header value, a second guard against header injection.
    """
    message = OutboxMessage()
    message.row_id = row.pk
    address = ascii_address(sender) if sender else platform_sender(settings)
    name = header_text(row.from_name)
    if any(len(word) > MAX_NAME_WORD for word in name.split()):
        # The email package folds such a word into a blank line, which ends the headers
        # early (To and the rest would be lost): the address alone is sent.
        name = ""
    message["From"] = Address(display_name=name, addr_spec=address)
    try:
        message["To"] = Address(addr_spec=ascii_address(row.to_address))
    except (ValueError, HeaderParseError) as exc:  # the parser's defects are ValueErrors
        raise PermanentFailure(f"{row.to_address} is not a valid address: {exc}") from exc
    message["Subject"] = header_text(row.subject)
    message["Message-ID"] = row.message_id
    for name, value in (row.headers or {}).items():
        if name not in EXTRA_HEADERS:  # written by a bug or by hand: never sent blindly
            raise PermanentFailure(f"the message has a header Portico does not send: {name}")
        message[name] = header_text(str(value), MAX_EXTRA_HEADER)
    message["Date"] = format_datetime(date or datetime.now(UTC))
    message.set_content(bodies.text)
    if bodies.html:
        message.add_alternative(bodies.html, subtype="html")
    return message


def outgoing_message(row: OutboundEmail, bodies: Bodies, settings: Settings) -> Outgoing:
    """The platform's own mail for `row`: written directly (services/outbound/wire), or by
    build_message when the row has extra headers (their folding is the email package's)."""
    if row.headers:
        return build_message(row, bodies, settings)
    return build_wire(row, bodies, settings)


def transport_for(settings: Settings) -> Transport:
    """SMTP when PORTICO_SMTP_URL is set, else .eml files under the var folder."""
    if settings.smtp_url:
        config = SmtpConfig.from_url(settings.smtp_url)
        # A send must end well inside the lease that protects it (services/loops/delivery.py).
        timeout = min(config.timeout, settings.mail_lease_seconds / 4)
        return SmtpTransport(
            replace(config, timeout=timeout), pool_size=settings.mail_send_concurrency
        )
    return FileTransport(settings.outbox_dir)


@dataclass(frozen=True)
class SmtpConfig:
    hostname: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log or traceback
    use_tls: bool = False  # smtps://: TLS from the first byte
    start_tls: bool | None = None  # True: required, False: never, None: when offered
    validate_certs: bool = True
    timeout: float = SMTP_TIMEOUT_SECONDS

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """`smtp://user:pass@host:port?starttls=1`, `smtps://…` for implicit TLS.

        Credentials are URL-decoded (a password with '@' is written %40). Query options:
        starttls=1|0 (default: upgrade when the server offers it), verify=0 (accept any
        certificate: development only), timeout=SECONDS.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError(f"PORTICO_SMTP_URL must start with smtp:// or smtps://, not {url!r}")
        if not parts.hostname:
            raise ValueError("PORTICO_SMTP_URL has no host")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        use_tls = parts.scheme == "smtps"
        start_tls = _flag(query["starttls"]) if "starttls" in query else None
        if use_tls and start_tls:
            raise ValueError("smtps:// is TLS already; starttls=1 does not apply")
        return cls(
            hostname=parts.hostname,
            port=parts.port or (465 if use_tls else 587 if start_tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            use_tls=use_tls,
            start_tls=False if use_tls else start_tls,
            validate_certs=_flag(query.get("verify", "1")),
            timeout=float(query.get("timeout", SMTP_TIMEOUT_SECONDS)),
        )

    @classmethod
    def for_mailbox(
        cls, host: str, port: int, tls: bool, username: str, password: str, timeout: float
    ) -> SmtpConfig:
        """A connected mailbox's SMTP server: smtpTls on is implicit TLS on SMTPS_PORT and
        STARTTLS (required) on every other port; off is plain SMTP."""
        implicit = tls and port == SMTPS_PORT
        return cls(
            hostname=host,
            port=port,
            username=username,
            password=password,
            use_tls=implicit,
            start_tls=tls and not implicit,
            timeout=timeout,
        )


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a yes/no value in PORTICO_SMTP_URL: {value!r}")


class SmtpTransport:
    """SMTP over connections kept open between messages (SmtpPool); `config.timeout` bounds
    each send, a new connection included."""

    def __init__(self, config: SmtpConfig, *, pool_size: int = POOL_SIZE) -> None:
        self.config = config
        self.pool = SmtpPool(self._open, pool_size)

    def __str__(self) -> str:  # for the log: never the credentials
        tls = " (TLS)" if self.config.use_tls else " (STARTTLS)" if self.config.start_tls else ""
        return f"SMTP to {self.config.hostname}:{self.config.port}{tls}"

    async def send(self, message: Outgoing) -> None:
        try:
            # aiosmtplib's timeout is per command; this one bounds the whole conversation.
            async with asyncio.timeout(self.config.timeout):
                await self._converse(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # One recipient per message, so this is that recipient's answer.
            raise _classify(exc.recipients[0]) from exc
        except DeliveryFailure:
            raise
        except aiosmtplib.SMTPAuthenticationError as exc:
            # Our credentials, not this message: keep it queued while the operator fixes them.
            raise TemporaryFailure(f"authentication failed: {_reply(exc)}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _classify(exc) from exc
        except TimeoutError as exc:  # ours or aiosmtplib's (SMTPTimeoutError)
            raise TemporaryFailure(f"the SMTP server did not answer in time: {exc}") from exc
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            # Refused or dropped connections, timeouts, TLS trouble, STARTTLS not offered.
            raise TemporaryFailure(f"{type(exc).__name__}: {exc}") from exc

    async def prune(self) -> None:
        await self.pool.prune()

    async def aclose(self) -> None:
        await self.pool.aclose()

    async def _converse(self, message: Outgoing) -> None:
        await self.pool.send(message)

    async def _open(self) -> aiosmtplib.SMTP:
        """A new connection: greeted, STARTTLS as configured, logged in when configured."""
        config = self.config
        smtp = aiosmtplib.SMTP(
            hostname=config.hostname,
            port=config.port,
            username=config.username,
            password=config.password,
            use_tls=config.use_tls,
            start_tls=config.start_tls,
            validate_certs=config.validate_certs,
            timeout=config.timeout,
        )
        try:
            await smtp.connect()
        except BaseException:
            smtp.close()
            raise
        return smtp


class NoStartTls(Exception):
    """TLS is on for a mailbox's SMTP server, on a port that means STARTTLS, and the server
    does not offer it."""


class MailboxSmtp:
    """One conversation with a connected mailbox's SMTP server, under the one set of rules
    that connectMailbox checks (services/mail/logins.check_smtp) and replies are sent by
    (MailboxSmtpTransport): the host resolved once and vetted (services/shared/network:
    HostNotAllowed unless `allow_private` or public), the connection made to a vetted
    address while TLS checks the host name, implicit TLS when `config.use_tls`
    (SmtpConfig.for_mailbox), STARTTLS required when `config.start_tls` (never silently
    skipped), and a login only when the server offers AUTH (a relay that trusts the network
    offers none). `phase` says how far it got: connect (until an SMTP server has greeted),
    ehlo, starttls, auth."""

    def __init__(self, config: SmtpConfig, *, allow_private: bool) -> None:
        self.config = config
        self.allow_private = allow_private
        self.phase = "connect"
        self.smtp = aiosmtplib.SMTP(
            hostname=config.hostname,
            port=config.port,
            use_tls=config.use_tls,
            start_tls=False,  # below, and required when asked for
            validate_certs=config.validate_certs,
            timeout=config.timeout,
        )

    async def open(self) -> aiosmtplib.SMTP:
        """Connected, secured and logged in as the rules say; NoStartTls when STARTTLS is
        required and not offered."""
        config, smtp = self.config, self.smtp
        destination = await network.resolve(
            config.hostname, config.port, allow_private=self.allow_private
        )
        sock = await network.connect(destination)
        try:
            # aiosmtplib wants no port with a socket; TLS still checks config.hostname.
            await smtp.connect(sock=sock, port=None)
        except BaseException:
            sock.close()
            raise
        self.phase = "ehlo"  # an SMTP server greeted
        await smtp.ehlo()
        if config.start_tls:
            self.phase = "starttls"
            if not smtp.supports_extension("starttls"):
                raise NoStartTls(f"{config.hostname}:{config.port}")
            await smtp.starttls()
            await smtp.ehlo()
        if config.username and config.password and smtp.supports_extension("auth"):
            self.phase = "auth"
            await smtp.login(config.username, config.password)
        return smtp

    async def quit(self) -> None:
        """A polite QUIT, briefly: a server slow to say goodbye changes nothing."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(QUIT_SECONDS):
                await self.smtp.quit()

    def close(self) -> None:
        self.smtp.close()


class MailboxSmtpTransport(SmtpTransport):
    """Through a connected mailbox's own SMTP server, as connectMailbox checked it
    (MailboxSmtp: the same TLS and login rules).

    The mailbox's password never leaves in an error: a failure's reason (stored as the
    delivery's lastError, and logged) has it replaced by ***, should a server echo it.
    A host that is not public is refused as connectMailbox refuses it (unless allowed)."""

    def __init__(
        self, config: SmtpConfig, *, allow_private: bool, pool_size: int = POOL_SIZE
    ) -> None:
        super().__init__(config, pool_size=pool_size)
        self.allow_private = allow_private

    @classmethod
    def for_server(
        cls,
        host: str,
        port: int,
        tls: bool,
        username: str,
        password: str,
        settings: Settings,
    ) -> MailboxSmtpTransport:
        # A send must end well inside the lease that protects it (delivery.py).
        timeout = min(SMTP_TIMEOUT_SECONDS, settings.mail_lease_seconds / 4)
        config = SmtpConfig.for_mailbox(host, port, tls, username, password, timeout)
        return cls(
            config,
            allow_private=settings.private_mail_hosts_allowed,
            pool_size=settings.mail_send_concurrency,
        )

    async def send(self, message: Outgoing) -> None:
        password = self.config.password
        try:
            await super().send(message)
        except DeliveryFailure as exc:
            if not mentions(exc, password):
                raise
            raise type(exc)(scrub(str(exc), password)) from None
        except Exception as exc:  # a bug: the delivery loop would store and log its text
            if not mentions(exc, password):
                raise
            reason = scrub(f"{type(exc).__name__}: {exc}", password)
            log.error("%s: unexpected error while sending: %s", self, reason)
            raise TemporaryFailure(internal_fault(exc)) from None

    async def _open(self) -> aiosmtplib.SMTP:
        session = MailboxSmtp(self.config, allow_private=self.allow_private)
        try:
            return await session.open()
        except NoStartTls as exc:
            session.close()
            raise TemporaryFailure(
                f"the SMTP server {exc} does not offer STARTTLS, which the mailbox requires"
            ) from None
        except network.HostNotAllowed as exc:
            session.close()
            # Like a refused connection: the operator may yet allow the host.
            raise TemporaryFailure(str(exc)) from None
        except BaseException:
            session.close()
            raise


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {exc.message}".strip()


def _classify(exc: aiosmtplib.SMTPResponseException) -> DeliveryFailure:
    if 500 <= exc.code < 600:
        return PermanentFailure(_reply(exc))
    return TemporaryFailure(_reply(exc))


_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._@-]+")


class FileTransport:
    """The embedded default: each message as `{row id}-{message id}.eml` in one folder.

    Written to a temporary file and renamed, so a reader never sees half a message; a retry
    of the same row replaces its file instead of adding a second one.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __str__(self) -> str:
        return f".eml files in {self.folder}"

    def path_for(self, message: Outgoing) -> Path:
        if isinstance(message, WireMessage):
            message_id, row_id = message.message_id, message.row_id
        else:
            message_id, row_id = str(message["Message-ID"] or ""), getattr(message, "row_id", None)
        safe_id = _UNSAFE_FILENAME.sub("_", message_id).strip("_.")
        name = f"{row_id}-{safe_id}" if row_id is not None else safe_id or secrets.token_hex(8)
        return self.folder / f"{name}.eml"

    async def send(self, message: Outgoing) -> None:
        data = message.data if isinstance(message, WireMessage) else message.as_bytes()
        try:
            # A thread: fsync may block, and this loop may be serving requests too.
            await asyncio.to_thread(self._write, self.path_for(message), data)
        except OSError as exc:  # a full disk or a missing permission may be fixed later
            raise TemporaryFailure(f"cannot write the .eml file: {exc}") from exc

    async def prune(self) -> None:
        """Nothing held open."""

    async def aclose(self) -> None:
        """Nothing held open."""

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(temp, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
