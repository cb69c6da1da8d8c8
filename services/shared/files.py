"""The files folder: contents stored once each, named by their SHA-256, and the names and
types files are listed under.

Uploads (services/portal/documents) stream in through `store_stream`; the attachments of
synced mail (services/mail/attachments) are bytes already in memory, for `store_content`.
Both write a temporary file and move it into place, so a reader never sees half a file and
the same content stored twice is one file.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from models import Attachment, Document
from portico.settings import Settings
from services.shared.errors import ErrorCode, input_error

CHUNK = 1024 * 1024
WRITE_IN_THREAD_BYTES = 1024 * 1024  # bigger contents are written off the event loop


def path_for(settings: Settings, sha256: str) -> Path:
    return settings.resolved_files_dir / sha256[:2] / sha256


def document_type(name: str, declared: str | None = None) -> str:
    """A document's type, judged by its name's extension (never by what a sender claims);
    `declared` only when the name says nothing."""
    return mimetypes.guess_type(name)[0] or declared or "application/octet-stream"


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


async def store_stream(
    read: Callable[[int], Awaitable[bytes]], settings: Settings
) -> tuple[str, int]:
    """Streams a file (an upload) to a temporary file while hashing it, then moves it into
    place; its SHA-256 and size. Over PORTICO_MAX_UPLOAD_BYTES: TOO_LARGE, nothing kept."""
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


async def forget(settings: Settings, sha256s: Iterable[str]) -> list[str]:
    """Removes the contents that no document or attachment row refers to any more, in any
    firm (contents are shared); the ones removed. Call it after the deleting transaction
    committed. (An upload of the same content racing the last delete can lose its file: the
    content is written before its row; rare enough to leave.)"""
    wanted = set(sha256s)
    if not wanted:
        return []
    used = set(await Document.filter(sha256__in=wanted).values_list("sha256", flat=True))
    used |= set(await Attachment.filter(sha256__in=wanted).values_list("sha256", flat=True))
    removed = sorted(wanted - used)
    for sha256 in removed:
        path_for(settings, sha256).unlink(missing_ok=True)
    return removed
