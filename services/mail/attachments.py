"""Attachments of synced mail: kept by content hash (as documents are), listed per message,
and saved into the Documents of the accounts whose auto-save attachments option is on.

Storing a message's attachments has two steps. `keep` runs before the message's transaction
and writes the contents (services/shared/files.store_content: once per content in the file
store, shared with uploads). `record` then writes the rows inside that transaction. A crash
between the two leaves at most a content no row points to, never a row without its content.

What is not kept is still listed, with `sha256` null and `skipped_reason` saying why: over
the upload limit (PORTICO_MAX_UPLOAD_BYTES, the one size limit for files) or unreadable.

Auto-save (`auto_save`, in the same transaction as the message or its new links): each kept
attachment becomes a Document of each account with the option on, unless that account already
has a document with the same content (uploaded or saved before). Only types uploads accept
(PORTICO_UPLOAD_TYPES, judged by the file name as for uploads) are saved. The documents are
listed as uploaded by nobody, and no DOCUMENT_UPLOADS notification goes out: the client's
own correspondence is no news to them.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from models import Account, Attachment, Document
from portico.settings import Settings
from services.mail.parse import ParsedAttachment
from services.shared import filenames, files
from services.shared.scope import FirmScope
from services.webhooks import emit

MB = 1024 * 1024
UNREADABLE = "could not be read: not kept"
AUTO_SAVE_SLACK = timedelta(hours=1)


@dataclass(frozen=True)
class Kept:
    """An attachment ready to be recorded: its file written, or the reason it is not."""

    filename: str
    content_type: str
    size: int
    sha256: str | None
    skipped_reason: str | None


async def keep(parsed: Sequence[ParsedAttachment], settings: Settings) -> list[Kept]:
    """Writes the content of each attachment within the size limit to the file store, once
    per content, and says why the others are not kept. Call it before the transaction."""
    kept: list[Kept] = []
    limit = settings.max_upload_bytes
    for position, attachment in enumerate(parsed):
        name = filename_for(attachment, position)
        sha256: str | None = None
        reason: str | None = None
        if attachment.unreadable:
            reason = UNREADABLE
        elif attachment.content is None or attachment.size > limit:
            reason = too_large(limit)
        else:
            sha256 = await files.store_content(attachment.content, settings)
        kept.append(Kept(name, attachment.content_type, attachment.size, sha256, reason))
    return kept


def filename_for(attachment: ParsedAttachment, position: int) -> str:
    """The sent name made safe, or "attachment-N" with the extension of its declared type."""
    name = filenames.safe_filename(attachment.filename)
    if name:
        return name
    extension = mimetypes.guess_extension(attachment.content_type) or ""
    return f"attachment-{position + 1}{extension}"


def too_large(limit: int) -> str:
    size = f"{limit / MB:g} MB" if limit >= MB else f"{limit:,} bytes"
    return f"larger than {size}: not kept"


async def record(scope: FirmScope, message_id: int, kept: Sequence[Kept]) -> None:
    """The message's attachment rows, in the order they came (inside its transaction)."""
    await record_many(scope, [(message_id, kept)])


async def record_many(scope: FirmScope, messages: Sequence[tuple[int, Sequence[Kept]]]) -> None:
    """The attachment rows of several messages (id, kept) in one statement (inside their
    transaction), each message's in the order they came."""
    rows = [
        Attachment(
            firm_id=scope.firm_id,
            message_id=message_id,
            position=position,
            filename=item.filename,
            content_type=item.content_type,
            size=item.size,
            sha256=item.sha256,
            skipped_reason=item.skipped_reason,
        )
        for message_id, kept in messages
        for position, item in enumerate(kept)
    ]
    if rows:
        await Attachment.bulk_create(rows)


def auto_saves(
    sent_at: datetime, since: datetime | None, sender_auth: str | None, settings: Settings
) -> bool:
    """Whether a message's attachments are auto-saved: "future synced mail", sent since
    `since` (its mailbox was connected), give or take AUTO_SAVE_SLACK (the Date header is the
    sender's clock, and mail may take a while to arrive), from a sender that did not fail
    authentication (`sender_auth`; with mail_auth_strict, one that passed it)."""
    if since is None or sent_at < since - AUTO_SAVE_SLACK:
        return False
    return sender_auth == "PASS" if settings.mail_auth_strict else sender_auth != "FAIL"


async def auto_save(
    scope: FirmScope, message_id: int, account_ids: Iterable[int], settings: Settings
) -> list[Document]:
    """Saves the kept attachments of the message into the Documents of those of
    `account_ids` with auto-save on (inside the transaction that stores or links the
    message). The accounts are locked first, so two passes saving the same content into one
    account at once (PostgreSQL) save it once."""
    wanted = sorted(set(account_ids))
    if not wanted:
        return []
    accounts = [
        a.pk
        for a in await scope.query(Account)
        .filter(id__in=wanted, auto_save_attachments=True)
        .order_by("id")
        .select_for_update()
    ]
    if not accounts:
        return []
    rows = (
        await scope.query(Attachment)
        .filter(message_id=message_id, sha256__not_isnull=True)
        .order_by("position")
    )
    savable = [
        (row, kind)
        for row in rows
        if (kind := files.document_type(row.filename, row.content_type)) in settings.upload_types
    ]
    if not savable:
        return []
    held = set(
        await scope.query(Document)
        .filter(account_id__in=accounts, sha256__in=sorted({row.sha256 for row, _ in savable}))
        .values_list("account_id", "sha256")
    )
    new: list[Document] = []
    for account_id in accounts:
        for row, kind in savable:
            if (account_id, row.sha256) in held:
                continue  # the account has this content already: saved once
            held.add((account_id, row.sha256))
            new.append(
                Document(
                    firm_id=scope.firm_id,
                    account_id=account_id,
                    filename=row.filename,
                    content_type=kind,
                    size=row.size,
                    sha256=row.sha256,
                    attachment_id=row.pk,
                    uploaded_by_id=None,
                )
            )
    if new:
        await Document.bulk_create(new)
        await emit.documents_saved_from_mail(
            scope.firm_id, [(d.account_id, d.attachment_id) for d in new]
        )
    return new


async def by_message(scope: FirmScope, message_ids: Sequence[int]) -> dict[int, list[Attachment]]:
    """The attachments of each message, in the order they came in the message."""
    rows = (
        await scope.query(Attachment)
        .filter(message_id__in=list(message_ids))
        .order_by("message_id", "position")
    )
    found: dict[int, list[Attachment]] = {pk: [] for pk in message_ids}
    for row in rows:
        found[row.message_id].append(row)
    return found
