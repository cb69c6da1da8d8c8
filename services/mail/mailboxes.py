"""The firm's connected mailboxes (EMAIL SYNC): connecting one, listing them.

`connect_mailbox` checks the IMAP and the SMTP login (services/mail/logins, which holds the
transport rules) before it saves anything and answers a failure with a stable code (IMAP_/
SMTP_ AUTH_FAILED, CONNECTION_FAILED, TLS_FAILED; HOST_NOT_ALLOWED for a host that is not
public, unless settings.private_mail_hosts_allowed). The password is stored encrypted
(crypto.fernet(settings, "mailbox-password")); it is never returned, logged, audited or put
into an error message; `mailbox_password` reads it back for logging in.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from models import Mailbox, StaffMember
from portico.settings import Settings
from services.mail.logins import MailLoginError, MailServer, check_imap, check_smtp
from services.shared import audit, crypto
from services.shared.emails import validate_address
from services.shared.errors import ErrorCode, InputError, UserError, input_error
from services.shared.scope import FirmScope
from services.shared.wakeups import MAIL_SYNC

log = logging.getLogger(__name__)

PASSWORD_PURPOSE = "mailbox-password"
MAX_HOST_LENGTH = 255
MAX_USERNAME_LENGTH = 255
MAX_PASSWORD_LENGTH = 1024


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


# Which input field each failure points at.
_FIELDS = {
    ErrorCode.IMAP_AUTH_FAILED: "password",
    ErrorCode.IMAP_CONNECTION_FAILED: "imapHost",
    ErrorCode.IMAP_TLS_FAILED: "imapTls",
    ErrorCode.SMTP_AUTH_FAILED: "password",
    ErrorCode.SMTP_CONNECTION_FAILED: "smtpHost",
    ErrorCode.SMTP_TLS_FAILED: "smtpTls",
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
    allow_private = settings.private_mail_hosts_allowed
    # Both at once: the wait is the slower of the two, and every problem is reported.
    results = await asyncio.gather(
        check_imap(imap, new.username, new.password, allow_private=allow_private),
        check_smtp(smtp, new.username, new.password, allow_private=allow_private),
        return_exceptions=True,
    )
    errors: list[UserError] = []
    for result, host_field in zip(results, ("imapHost", "smtpHost"), strict=True):
        if isinstance(result, MailLoginError):
            field_name = _FIELDS.get(result.code, host_field)  # HOST_NOT_ALLOWED: the host
            errors.append(UserError(result.code, str(result), ("input", field_name)))
        elif isinstance(result, BaseException):
            raise result
    if errors:
        raise InputError(*errors)
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
    MAIL_SYNC.notify()
    return mailbox


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
                ErrorCode.INVALID_USERNAME,
                f"The username must be 1 to {MAX_USERNAME_LENGTH} printable characters.",
                ("input", "username"),
            )
        )
    password = new.password
    if not password or len(password) > MAX_PASSWORD_LENGTH or not password.isprintable():
        errors.append(
            UserError(
                ErrorCode.INVALID_PASSWORD,
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
                ErrorCode.INVALID_HOST,
                f"{name} must be a host name or IP address (1 to {MAX_HOST_LENGTH} characters, "
                "no spaces).",
                ("input", name),
            )
        )
    return host


def _port(value: int, name: str, errors: list[UserError]) -> None:
    if not 1 <= value <= 65535:
        errors.append(
            UserError(
                ErrorCode.INVALID_PORT, f"{name} must be between 1 and 65535.", ("input", name)
            )
        )


def _exists(address: str) -> InputError:
    return input_error(
        ErrorCode.MAILBOX_EXISTS,
        f"{address} is already connected in this firm.",
        "input",
        "address",
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
