"""Documents of an account: stored once per content (SHA-256) under the files folder,
listed per account, readable by the firm's staff and by clients with access to the account.

The files themselves, their names and types are services/shared/files' (which also keeps the
attachments of synced mail)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tortoise.transactions import in_transaction

from models import Account, Document, Session, StaffMember
from portico.settings import Settings
from services.portal import access, notify
from services.shared import filenames, files
from services.shared.errors import ErrorCode, input_error
from services.shared.scope import FirmScope


async def upload(
    scope: FirmScope,
    staff: StaffMember,
    account_id: int | None,
    filename: str | None,
    read: Callable[[int], Awaitable[bytes]],
    settings: Settings,
) -> Document:
    """Stores the file, lists it in the account and notifies DOCUMENT_UPLOADS recipients.

    Over the size limit or of a type not allowed: refused, and no file is left behind.
    """
    account = await scope.get(Account, account_id, "accountId")
    name = filenames.clean_filename(filename, "file")
    content_type = files.document_type(name)
    if content_type not in settings.upload_types:
        raise input_error(
            ErrorCode.UNSUPPORTED_TYPE, f"Files of type {content_type} are not accepted.", "file"
        )
    sha256, size = await files.store_stream(read, settings)
    async with in_transaction():
        document = await Document.create(
            firm_id=scope.firm_id,
            account=account,
            filename=name,
            content_type=content_type,
            size=size,
            sha256=sha256,
            uploaded_by=staff,
        )
        await notify.notify_client_event(
            scope,
            account.pk,
            "DOCUMENT_UPLOADS",
            f"New document: {name}",
            f"{name} was added to the documents of {account.name}.",
            None,
            settings,
        )
    return document


async def readable(session: Session | None, document_id: int | None) -> Document | None:
    """The document if this session may read it: the firm's staff, or a client who may
    enter its account now. None otherwise (also for other firms' ids)."""
    if session is None or document_id is None:
        return None
    document = await Document.get_or_none(pk=document_id)
    if document is None or document.firm_id != session.firm_id:
        return None
    if session.staff_member_id is not None:
        return document
    if session.portal_user_id is not None:
        allowed = await access.client_account_ids(session.portal_user_id)
        return document if document.account_id in allowed else None
    return None
