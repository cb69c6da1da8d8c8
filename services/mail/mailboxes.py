"""The firm's connected mailboxes (EMAIL SYNC): connecting, changing and disconnecting one,
listing them.

`connect_mailbox` checks the IMAP and the SMTP login (services/mail/logins, which holds the
transport rules) before it saves anything and answers a failure with a stable code (IMAP_/
SMTP_ AUTH_FAILED, CONNECTION_FAILED, TLS_FAILED; HOST_NOT_ALLOWED for a host that is not
public, unless settings.private_mail_hosts_allowed). The password is stored encrypted
(crypto.fernet(settings, "mailbox-password")); it is never returned, logged, audited or put
into an error message; `mailbox_password` reads it back for logging in.

`update_mailbox` checks the login the mailbox would have exactly so (nothing saved on
failure) and clears a FAILED status; it reuses the stored password only for the same servers
and user name (elsewhere the caller could read it). `disconnect_mailbox` deletes the row,
which stops its sync (services/loops/mail_sync, the lease of services/mail/sync_engine),
keeping its mail or deleting what came only through it (`only_through`,
services/mail/removal).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from cryptography.fernet import InvalidToken
from tortoise.exceptions import IntegrityError
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from models import (
    HistoryImport,
    Mailbox,
    MailboxFolder,
    MailboxVisibility,
    Message,
    OutboundEmail,
    StaffMember,
    SyncStatus,
)
from portico.settings import Settings
from services.mail import removal, threads
from services.mail.logins import MailLoginError, MailServer, check_imap, check_smtp
from services.shared import audit, crypto, files, network
from services.shared.emails import validate_address
from services.shared.errors import ErrorCode, InputError, UserError, input_error
from services.shared.scope import FirmScope
from services.shared.wakeups import MAIL_SYNC

log = logging.getLogger(__name__)

PASSWORD_PURPOSE = "mailbox-password"
MAX_HOST_LENGTH = 255
MAX_USERNAME_LENGTH = 255
MAX_PASSWORD_LENGTH = 1024

T = TypeVar("T")


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
    visibility: MailboxVisibility = MailboxVisibility.SHARED


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
    await _check_logins(new, settings)
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
                # PERSONAL: its connecting member's own (a CLI connection has none: SHARED).
                visibility=new.visibility if staff is not None else MailboxVisibility.SHARED,
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


@dataclass(frozen=True)
class MailboxChanges:
    """updateMailbox's input: None keeps the stored value; the password never shows in a repr."""

    imap_host: str | None = None
    imap_port: int | None = None
    imap_tls: bool | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_tls: bool | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)


async def update_mailbox(
    scope: FirmScope,
    mailbox_id: int | None,
    changes: MailboxChanges,
    settings: Settings,
    staff: StaffMember | None = None,
    visibility: MailboxVisibility | None = None,
) -> Mailbox:
    """Changes how the mailbox logs in: the settings it would have are validated and both
    logins checked as connectMailbox does, and nothing is saved on failure. A FAILED mailbox
    is IDLE again (its last error was about the old settings) and the sync loops start its
    next pass afresh (services/loops/mail_sync restarts a mailbox's task when its settings
    change; the password is encrypted anew on every update, so even an update that changes
    nothing else is seen). A password left null keeps the stored one, but only for the same
    servers and user name.

    `visibility` switches it between SHARED and PERSONAL (services/mail/threads.set_visibility:
    the member who connected it only, FORBIDDEN before anything is checked or saved); given
    alone, no login is checked."""
    mailbox = await scope.get(Mailbox, mailbox_id, "id")
    if visibility is not None:
        threads.check_switch(mailbox, visibility, staff)
        if changes == MailboxChanges():  # only who reads it
            async with in_transaction():
                await _switch(scope, mailbox, visibility, staff, settings)
            MAIL_SYNC.notify()  # its sync task starts afresh, storing mail as it is now
            return await scope.get(Mailbox, mailbox.pk, "id")
    threads.check_manages(mailbox, staff, owner_only=True)  # its logins
    kept_password = changes.password is None
    wanted = NewMailbox(
        address=mailbox.address,
        imap_host=_keep(changes.imap_host, mailbox.imap_host),
        imap_port=_keep(changes.imap_port, mailbox.imap_port),
        imap_tls=_keep(changes.imap_tls, mailbox.imap_tls),
        smtp_host=_keep(changes.smtp_host, mailbox.smtp_host),
        smtp_port=_keep(changes.smtp_port, mailbox.smtp_port),
        smtp_tls=_keep(changes.smtp_tls, mailbox.smtp_tls),
        username=_keep(changes.username, mailbox.username),
        password=_KEPT if changes.password is None else changes.password,
    )
    errors: list[UserError] = []
    # The stored password goes only where it went before: sent to a host (or a plain-text
    # port, or as another user) the caller picks, it would be theirs to read.
    if kept_password and _login_of(wanted) != _login_of(_as_new(mailbox)):
        errors.append(
            UserError(
                ErrorCode.INVALID_PASSWORD,
                "Give the password again when you change the server or the user name.",
                ("input", "password"),
            )
        )
    try:
        new = _clean(wanted)
    except InputError as exc:
        raise InputError(*exc.errors, *errors) from None  # every problem at once
    if errors:
        raise InputError(*errors)
    if kept_password:
        new = replace(new, password=_stored_password(settings, mailbox))
    await _check_logins(new, settings)
    before = _audited(_as_new(mailbox))
    after = _audited(new)
    values: dict[str, Any] = {
        _COLUMNS[name]: value for name, value in after.items() if value != before[name]
    }
    values["password_encrypted"] = encrypt_password(settings, new.password)
    async with in_transaction():
        if not await scope.query(Mailbox).filter(id=mailbox.pk).update(**values):
            raise _not_found()  # disconnected meanwhile
        # Only a FAILED status is reset: a pass in flight owns SYNCING and writes its outcome.
        await (
            scope.query(Mailbox)
            .filter(id=mailbox.pk, sync_status=SyncStatus.FAILED)
            .update(sync_status=SyncStatus.IDLE, last_error=None)
        )
        await audit.record(
            scope,
            "MAILBOX_UPDATED",
            account_id=None,
            email=mailbox.address,
            staff=staff,
            before={k: v for k, v in before.items() if v != after[k]},
            after={
                **{k: v for k, v in after.items() if v != before[k]},
                "passwordChanged": changes.password is not None,
            },
        )
        if visibility is not None:
            await _switch(scope, mailbox, visibility, staff, settings)
    log.info("mailbox %s updated (firm %s)", mailbox.pk, scope.firm_id)
    MAIL_SYNC.notify()  # this process's loop restarts the mailbox's task now
    return await scope.get(Mailbox, mailbox.pk, "id")


async def _switch(
    scope: FirmScope,
    mailbox: Mailbox,
    visibility: MailboxVisibility,
    staff: StaffMember | None,
    settings: Settings,
) -> None:
    """The visibility change, audited, inside the caller's transaction."""
    before = mailbox.visibility
    if not await threads.set_visibility(scope, mailbox, visibility, staff, settings):
        return
    await audit.record(
        scope,
        "MAILBOX_UPDATED",
        account_id=None,
        email=mailbox.address,
        staff=staff,
        before={"visibility": str(before)},
        after={"visibility": str(visibility)},
    )


async def disconnect_mailbox(
    scope: FirmScope,
    mailbox_id: int | None,
    settings: Settings,
    staff: StaffMember | None = None,
    *,
    delete_messages: bool = False,
) -> Mailbox:
    """Removes the mailbox (its folder cursors and history imports go with it); the row as it
    was. Its sync stops: a pass in flight, here or in another process, ends at its next
    lease check (the row is gone), and this process's loop ends the mailbox's task (IDLE
    connection closed) at once, other processes' loops within an interval.

    The synced mail stays readable (no longer updated, `Message.mailbox` null), or with
    `delete_messages` the mail that came only through this mailbox is deleted
    (`only_through`), with its attachments."""
    mailbox = await scope.get(Mailbox, mailbox_id, "id")
    threads.check_manages(mailbox, staff, owner_only=delete_messages)
    sha256s: set[str] = set()
    async with in_transaction():
        # Locked first (PostgreSQL): a pass storing a message of this mailbox right now
        # commits before it, so that message is counted below and none is stored after.
        locked = await scope.query(Mailbox).filter(id=mailbox.pk).select_for_update().first()
        if locked is None:
            raise _not_found()  # disconnected meanwhile
        deleted: list[int] = []
        if delete_messages:
            deleted = await only_through(scope, locked)
            sha256s = await removal.delete_messages(scope, deleted, settings, forget_files=False)
        # The database does these too (SET NULL, CASCADE); said here, they hold whatever the
        # connection's foreign-key settings.
        await scope.query(Message).filter(mailbox_id=locked.pk).update(mailbox_id=None)
        await scope.query(OutboundEmail).filter(mailbox_id=locked.pk).update(mailbox_id=None)
        await scope.query(HistoryImport).filter(mailbox_id=locked.pk).delete()
        await MailboxFolder.filter(mailbox_id=locked.pk).delete()
        await scope.query(Mailbox).filter(id=locked.pk).delete()
        await audit.record(
            scope,
            "MAILBOX_DISCONNECTED",
            account_id=None,
            email=locked.address,
            staff=staff,
            before=_audited(_as_new(locked)),
            after={"deleteMessages": delete_messages, "messagesDeleted": len(deleted)},
        )
    await files.forget(settings, sha256s)
    log.info(
        "mailbox %s disconnected (firm %s, %d messages deleted)",
        locked.pk,
        scope.firm_id,
        len(deleted),
    )
    MAIL_SYNC.notify()  # this process's loop ends the mailbox's task now
    return locked


async def only_through(scope: FirmScope, mailbox: Mailbox) -> list[int]:
    """The messages that came only through `mailbox`: stored through it (`Message.mailbox`,
    which names the mailbox a message was first stored through, or a reply was sent through)
    and with no other mailbox of the firm among their sender and recipients (that mailbox has
    its own copy, which its sync will not read again). Mail already kept without a mailbox
    (an earlier disconnect) is not this mailbox's."""
    others = {
        a.lower()
        for a in await scope.query(Mailbox)
        .exclude(id=mailbox.pk)
        .values_list("address_normalized", flat=True)
    }
    rows = await (
        scope.query(Message)
        .filter(mailbox_id=mailbox.pk)
        .values_list("id", "from_address", "to_addresses", "cc_addresses")
    )
    return [
        message_id
        for message_id, sender, to, cc in rows
        if not others & {a.lower() for a in (sender, *(to or []), *(cc or [])) if a}
    ]


async def _check_logins(new: NewMailbox, settings: Settings) -> None:
    """Both logins at once (the wait is the slower of the two, and every problem is
    reported); an InputError naming the field of each failure."""
    imap = MailServer(new.imap_host, new.imap_port, new.imap_tls)
    smtp = MailServer(new.smtp_host, new.smtp_port, new.smtp_tls)
    allow_private = settings.private_mail_hosts_allowed
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


def _stored_password(settings: Settings, mailbox: Mailbox) -> str:
    try:
        return mailbox_password(settings, mailbox)
    except (InvalidToken, UnicodeError):
        raise input_error(
            ErrorCode.INVALID_PASSWORD,
            "The stored password cannot be read (was PORTICO_SECRET_KEY changed?): give the "
            "password again.",
            "input",
            "password",
        ) from None


def _keep(value: T | None, stored: T) -> T:
    return stored if value is None else value


# Stands in for a password not given while the input is cleaned (it passes the checks).
_KEPT = "kept"


def _login_of(new: NewMailbox) -> tuple[Any, ...]:
    """Where and as whom the mailbox logs in, compared as `_clean` would save it."""
    return (
        new.imap_host.strip(),
        new.imap_port,
        new.imap_tls,
        new.smtp_host.strip(),
        new.smtp_port,
        new.smtp_tls,
        new.username.strip(),
    )


def _as_new(mailbox: Mailbox) -> NewMailbox:
    return NewMailbox(
        address=mailbox.address,
        imap_host=mailbox.imap_host,
        imap_port=mailbox.imap_port,
        imap_tls=mailbox.imap_tls,
        smtp_host=mailbox.smtp_host,
        smtp_port=mailbox.smtp_port,
        smtp_tls=mailbox.smtp_tls,
        username=mailbox.username,
        password="",
    )


def _not_found() -> InputError:
    return input_error(ErrorCode.NOT_FOUND, "No such Mailbox.", "id")


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
        visibility=new.visibility,
    )


def _host(value: str, name: str, errors: list[UserError]) -> str:
    host = value.strip()
    if (
        not host
        or len(host) > MAX_HOST_LENGTH
        or any(not c.isprintable() or c.isspace() for c in host)
        or not network.has_ascii_form(host)
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


# The column of each audited field.
_COLUMNS = {
    "address": "address",
    "imapHost": "imap_host",
    "imapPort": "imap_port",
    "imapTls": "imap_tls",
    "smtpHost": "smtp_host",
    "smtpPort": "smtp_port",
    "smtpTls": "smtp_tls",
    "username": "username",
}


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
