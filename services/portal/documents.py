"""Documents of an account: stored once per content (SHA-256) under the files folder,
listed per account, readable by the firm's staff and by clients with access to the account.

The same storage keeps the attachments of synced mail (services/mail/attachments): `store_content`
for bytes already in memory, `safe_filename` and `document_type` for their names and types."""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from tortoise.transactions import in_transaction

from models import Account, Document, Session, StaffMember
from portico.settings import Settings
from services.portal import access, notify
from services.shared.errors import ErrorCode, input_error
from services.shared.scope import FirmScope

CHUNK = 1024 * 1024
WRITE_IN_THREAD_BYTES = 1024 * 1024  # bigger contents are written off the event loop
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


def path_for(settings: Settings, sha256: str) -> Path:
    return settings.resolved_files_dir / sha256[:2] / sha256


def safe_filename(filename: str | None) -> str:
    """The name without its path, control characters or slashes, at most 255 characters;
    "" when nothing is left."""
    name = (filename or "").strip().replace("\\", "/")
    return _UNSAFE.sub("_", os.path.basename(name))[-255:].strip(" .")


def clean_filename(filename: str | None) -> str:
    name = safe_filename(filename)
    if not name:
        raise input_error(ErrorCode.INVALID_FILENAME, "The file needs a name.", "file")
    return name


def document_type(name: str, declared: str | None = None) -> str:
    """A document's type, judged by its name's extension (never by what a sender claims);
    `declared` only when the name says nothing."""
    return mimetypes.guess_type(name)[0] or declared or "application/octet-stream"


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
    name = clean_filename(filename)
    content_type = document_type(name)
    if content_type not in settings.upload_types:
        raise input_error(
            ErrorCode.UNSUPPORTED_TYPE, f"Files of type {content_type} are not accepted.", "file"
        )
    sha256, size = await _store(read, settings)
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


async def store_content(content: bytes, settings: Settings) -> str:
    """Stores bytes already in memory (a mail attachment) as uploads are stored, once per
    content; returns their SHA-256. The caller checks the size limit."""
    sha256 = hashlib.sha256(content).hexdigest()
    if path_for(settings, sha256).is_file():
        return sha256  # the same content is already there
    if len(content) > WRITE_IN_THREAD_BYTES:
        await asyncio.to_thread(_write, content, sha256, settings)
    else:
        _write(content, sha256, settings)
    return sha256


def _write(content: bytes, sha256: str, settings: Settings) -> None:
    temporary = _temporary(settings)
    try:
        temporary.write_bytes(content)
        _move_into_place(temporary, sha256, settings)
    finally:
        temporary.unlink(missing_ok=True)


def _temporary(settings: Settings) -> Path:
    folder = settings.resolved_files_dir / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / secrets.token_hex(16)


def _move_into_place(temporary: Path, sha256: str, settings: Settings) -> None:
    final = path_for(settings, sha256)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temporary, final)  # same content, same name: replacing is harmless


async def _store(read: Callable[[int], Awaitable[bytes]], settings: Settings) -> tuple[str, int]:
    """Streams the upload to a temporary file while hashing it, then moves it into place."""
    temporary = _temporary(settings)
    digest, size = hashlib.sha256(), 0
    try:
        with temporary.open("wb") as out:
            while chunk := await read(CHUNK):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    limit = settings.max_upload_bytes // (1024 * 1024)
                    raise input_error(
                        ErrorCode.TOO_LARGE, f"Files are at most {limit} MiB.", "file"
                    )
                digest.update(chunk)
                out.write(chunk)
        _move_into_place(temporary, digest.hexdigest(), settings)
    finally:
        temporary.unlink(missing_ok=True)
    return digest.hexdigest(), size


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
