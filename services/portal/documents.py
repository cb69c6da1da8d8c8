"""Documents of an account: stored once per content (SHA-256) in the file store,
listed per account, readable by the firm's staff and by clients with access to the account.

The files themselves, their names and types are services/shared/files' (which also keeps the
attachments of synced mail)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from tortoise.transactions import in_transaction

from models import Account, Document, Session, StaffMember
from portico.settings import Settings
from services.portal import access, notify
from services.shared import audit, filenames, files
from services.shared.errors import ErrorCode, input_error
from services.shared.scope import FirmScope
from services.webhooks import emit


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
        await emit.document_uploaded(document)
    return document


async def delete_document(
    scope: FirmScope, staff: StaffMember, document_id: int | None, settings: Settings
) -> Document:
    """Deletes one document (audited); its content goes too once nothing refers to it.

    The download ends with the row: GET /documents/{id} reads the row on every request."""
    document = await scope.get(Document, document_id, "id")
    async with in_transaction():
        sha256s = await delete_documents(scope, [document.pk], staff=staff)
    await files.forget(settings, sha256s)  # after the commit: a rollback keeps the file
    return document


async def delete_documents(
    scope: FirmScope,
    document_ids: Iterable[int],
    *,
    staff: StaffMember | None,
    reason: str | None = None,
    audit_each: bool = True,
) -> list[str]:
    """Deletes the scope's documents among `document_ids`, one DOCUMENT_DELETED audit entry
    each (with `reason`, e.g. "account deleted") unless `audit_each` is False (the caller
    records the deletion itself: deleteAccount, whose account's entries go with it), and
    returns their contents' SHA-256s.

    Contract: the caller holds the transaction, and after it commits passes the returned
    SHA-256s to `services.shared.files.forget(settings, sha256s)`, which removes only the
    contents no document or attachment row refers to any more. Never remove files inside
    the transaction: a rollback would bring back rows whose files are gone."""
    rows = await scope.query(Document).filter(pk__in=list(document_ids)).order_by("id")
    for row in rows if audit_each else []:
        before = {"document": row.pk, "filename": row.filename, "sha256": row.sha256}
        if reason is not None:
            before["reason"] = reason
        await audit.record(
            scope, "DOCUMENT_DELETED", account_id=row.account_id, staff=staff, before=before
        )
    if rows:
        await scope.query(Document).filter(pk__in=[row.pk for row in rows]).delete()
    return sorted({row.sha256 for row in rows})


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
