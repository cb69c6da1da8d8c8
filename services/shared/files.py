"""File contents, stored once each by SHA-256, and the names and types files are listed under.

Two stores, chosen by PORTICO_FILE_STORE: "folder" (the files folder, PORTICO_FILES_DIR, one
file per content named by its hash) and "database" (models/files: FileChunk rows of up to
1 MiB, and a StoredFile row written in the same transaction as the last chunk), so that every
host of a deployment reads the same files without a shared disk. A reader never sees half a
content in either: the folder's files are written aside and moved into place.

Uploads (services/portal/documents) stream in through `store_stream`; the attachments of
synced mail (services/mail/attachments) are bytes already in memory, for `store_content`.
`find` gives a content to read in chunks (from the chosen store, else from the other one, so
that downloads keep working while `move` carries the contents across); `forget` removes the
contents nothing refers to from both stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mimetypes
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models import Attachment, Document, FileChunk, StoredFile
from portico.settings import Settings
from services.shared.errors import ErrorCode, input_error

CHUNK = 1024 * 1024  # also the size of a FileChunk
WRITE_IN_THREAD_BYTES = 1024 * 1024  # bigger contents are written off the event loop
_PAGE = 500  # StoredFile rows per query when moving

Read = Callable[[int], Awaitable[bytes]]


def path_for(settings: Settings, sha256: str) -> Path:
    return settings.resolved_files_dir / sha256[:2] / sha256


def document_type(name: str, declared: str | None = None) -> str:
    """A document's type, judged by its name's extension (never by what a sender claims);
    `declared` only when the name says nothing."""
    return mimetypes.guess_type(name)[0] or declared or "application/octet-stream"


# Writing


async def store_content(content: bytes, settings: Settings) -> str:
    """Stores bytes already in memory (a mail attachment) as uploads are stored, once per
    content; returns their SHA-256. The caller checks the size limit."""
    sha256 = hashlib.sha256(content).hexdigest()
    if settings.file_store == "database":
        await _db_store(_reader(content), None, sha256)
        return sha256
    if path_for(settings, sha256).is_file():
        return sha256  # the same content is already there
    if len(content) > WRITE_IN_THREAD_BYTES:
        await asyncio.to_thread(_write, content, sha256, settings)
    else:
        _write(content, sha256, settings)
    return sha256


async def store_stream(read: Read, settings: Settings) -> tuple[str, int]:
    """Streams a file (an upload) in while hashing it; its SHA-256 and size. Over
    PORTICO_MAX_UPLOAD_BYTES: TOO_LARGE, nothing kept."""
    if settings.file_store == "database":
        return await _db_store(read, settings.max_upload_bytes, None)
    return await _folder_store(read, settings, settings.max_upload_bytes, None)


def _too_large(limit: int) -> Exception:
    return input_error(
        ErrorCode.TOO_LARGE, f"Files are at most {limit // (1024 * 1024)} MiB.", "file"
    )


class _Mismatch(Exception):
    """A content moved between stores did not hash to its name: it stays where it was."""


def _reader(content: bytes) -> Read:
    view, offset = memoryview(content), 0

    async def read(size: int) -> bytes:
        nonlocal offset
        piece = bytes(view[offset : offset + size])
        offset += len(piece)
        return piece

    return read


async def _pieces(read: Read) -> AsyncIterator[bytes]:
    """`read`'s bytes in pieces of exactly CHUNK (the last one shorter), however it answers."""
    buffer = bytearray()
    while data := await read(CHUNK):
        buffer += data
        while len(buffer) >= CHUNK:
            yield bytes(buffer[:CHUNK])
            del buffer[:CHUNK]
    if buffer:
        yield bytes(buffer)


# The folder store


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


async def _folder_store(
    read: Read, settings: Settings, limit: int | None, expect: str | None
) -> tuple[str, int]:
    temporary = _temporary(settings)
    digest, size = hashlib.sha256(), 0
    try:
        with temporary.open("wb") as out:
            async for chunk in _pieces(read):
                size += len(chunk)
                if limit is not None and size > limit:
                    raise _too_large(limit)
                digest.update(chunk)
                await asyncio.to_thread(out.write, chunk)
            if expect is not None:  # a move: the source goes next, so the copy must be on disk
                if digest.hexdigest() != expect:
                    raise _Mismatch(expect)
                await asyncio.to_thread(os.fsync, out.fileno())
        _move_into_place(temporary, digest.hexdigest(), settings)
    finally:
        temporary.unlink(missing_ok=True)
    return digest.hexdigest(), size


async def _folder_chunks(path: Path, offset: int = 0) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        handle.seek(offset)
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            yield chunk
    finally:
        handle.close()


# The database store


async def _db_store(read: Read, limit: int | None, expect: str | None) -> tuple[str, int]:
    """Writes the chunks under a pending name while hashing them, then in the same
    transaction names them by the hash and writes the StoredFile: all or nothing. A content
    already stored is not written twice (the transaction is rolled back)."""
    if expect is not None and (present := await StoredFile.get_or_none(sha256=expect)):
        return expect, present.size
    pending = "pending-" + secrets.token_hex(28)
    digest, size, count = hashlib.sha256(), 0, 0
    try:
        async with in_transaction():
            async for chunk in _pieces(read):
                size += len(chunk)
                if limit is not None and size > limit:
                    raise _too_large(limit)
                digest.update(chunk)
                await FileChunk.create(sha256=pending, seq=count, data=chunk)
                count += 1
            sha256 = digest.hexdigest()
            if expect is not None and sha256 != expect:
                raise _Mismatch(expect)
            if await StoredFile.exists(sha256=sha256):
                raise _Present()
            await FileChunk.filter(sha256=pending).update(sha256=sha256)
            await StoredFile.create(sha256=sha256, size=size, chunks=count)
    except _Present:
        pass
    except IntegrityError:
        # The same content stored at the same moment by another request: theirs counts.
        if not await StoredFile.exists(sha256=digest.hexdigest()):
            raise
    return digest.hexdigest(), size


class _Present(Exception):
    """The content is stored already: roll back this copy of it."""


async def _db_chunks(sha256: str, count: int, moved_to: Path | None = None) -> AsyncIterator[bytes]:
    """One chunk per query: a download never holds more than 1 MiB of it. A chunk gone
    meanwhile was moved to the folder (`move` writes the file before removing the chunks):
    the rest is read from `moved_to` from the same offset."""
    offset = 0
    for seq in range(count):
        found = await FileChunk.filter(sha256=sha256, seq=seq).values_list("data", flat=True)
        if not found:
            if moved_to is None:
                raise FileNotFoundError(f"content {sha256} lost its chunk {seq} while being read")
            async for chunk in _folder_chunks(moved_to, offset):  # FileNotFoundError: gone
                yield chunk
            return
        offset += len(found[0])
        yield bytes(found[0])


# Reading


@dataclass(frozen=True)
class Content:
    """A stored content, to read in chunks; `path` is set when it is a file of the folder."""

    sha256: str
    size: int
    store: Literal["folder", "database"]
    path: Path | None
    _chunks: int
    _moved_to: Path | None = None  # the database's: where `move --to folder` writes it

    def chunks(self) -> AsyncIterator[bytes]:
        if self.path is not None:
            return _folder_chunks(self.path)
        return _db_chunks(self.sha256, self._chunks, self._moved_to)


async def find(settings: Settings, sha256: str) -> Content | None:
    """The content in the chosen store, else in the other one (a move half done); None if
    neither has it."""
    order = ("database", "folder") if settings.file_store == "database" else ("folder", "database")
    for store in order:
        if (found := await _find_in(settings, sha256, store)) is not None:
            return found
    return None


async def _find_in(
    settings: Settings, sha256: str, store: Literal["folder", "database"]
) -> Content | None:
    if store == "folder":
        path = path_for(settings, sha256)
        try:
            return Content(sha256, path.stat().st_size, "folder", path, 0)
        except (FileNotFoundError, NotADirectoryError):
            return None
    row = await StoredFile.get_or_none(sha256=sha256)
    if row is None:
        return None
    return Content(sha256, row.size, "database", None, row.chunks, path_for(settings, sha256))


async def exists(settings: Settings, sha256: str) -> bool:
    return await find(settings, sha256) is not None


# Removing


async def forget(settings: Settings, sha256s: Iterable[str]) -> list[str]:
    """Removes the contents that no document or attachment row refers to any more, in any
    firm (contents are shared), from both stores; the ones removed. Call it after the
    deleting transaction committed. (An upload of the same content racing the last delete
    can lose its content: the content is written before its row; rare enough to leave.)"""
    wanted = set(sha256s)
    if not wanted:
        return []
    used = set(await Document.filter(sha256__in=wanted).values_list("sha256", flat=True))
    used |= set(await Attachment.filter(sha256__in=wanted).values_list("sha256", flat=True))
    removed = sorted(wanted - used)
    if not removed:
        return []
    for sha256 in removed:
        path_for(settings, sha256).unlink(missing_ok=True)
    async with in_transaction():
        await StoredFile.filter(sha256__in=removed).delete()
        await FileChunk.filter(sha256__in=removed).delete()
    return removed


# Moving between the stores (`portico files move`)


@dataclass
class Moved:
    moved: int = 0
    already_there: int = 0  # found whole at the destination: only the source copy removed
    failed: int = 0  # did not hash to its name: left in the source store
    gone: int = 0  # forgotten meanwhile (nothing refers to it any more): nothing to move


async def move(settings: Settings, to: Literal["folder", "database"]) -> Moved:
    """Moves every content of the other store into `to`. Idempotent and resumable: a content
    already whole at the destination is not copied again, and a source copy is removed only
    once the destination holds the whole content."""
    counts = Moved()
    if to == "database":
        for path in _folder_contents(settings):
            await _folder_to_database(settings, path, counts)
    else:
        after = ""
        while page := await _stored_after(after):
            for sha256 in page:
                await _database_to_folder(settings, sha256, counts)
            after = page[-1]
    return counts


def _folder_contents(settings: Settings) -> list[Path]:
    folder = settings.resolved_files_dir
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("??/*") if len(p.name) == 64 and p.is_file())


async def _stored_after(after: str) -> list[str]:
    query = StoredFile.filter(sha256__gt=after).order_by("sha256").limit(_PAGE)
    return list(await query.values_list("sha256", flat=True))


async def _folder_to_database(settings: Settings, path: Path, counts: Moved) -> None:
    if await StoredFile.exists(sha256=path.name):
        counts.already_there += 1
    else:
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            counts.gone += 1
            return
        try:
            await _db_store(lambda size: asyncio.to_thread(handle.read, size), None, path.name)
        except _Mismatch:
            counts.failed += 1
            return
        finally:
            handle.close()
        counts.moved += 1
        # Its last document deleted while it was copied: forget found nothing in the
        # database then, so it is looked at again now.
        if path.name in await forget(settings, [path.name]):
            return
    await asyncio.to_thread(_remove, path)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # the subfolder goes with its last content
        path.parent.rmdir()


async def _database_to_folder(settings: Settings, sha256: str, counts: Moved) -> None:
    if path_for(settings, sha256).is_file():  # written aside and moved into place: whole
        counts.already_there += 1
    else:
        row = await StoredFile.get_or_none(sha256=sha256)
        if row is None:
            counts.gone += 1
            return
        chunks = _db_chunks(sha256, row.chunks)

        async def read(size: int) -> bytes:
            return await anext(chunks, b"")

        try:
            await _folder_store(read, settings, None, sha256)
        except _Mismatch:
            counts.failed += 1
            return
        except FileNotFoundError:  # forgotten while copied (its chunks deleted)
            counts.gone += 1
            return
        counts.moved += 1
        if sha256 in await forget(settings, [sha256]):
            return  # forgotten meanwhile, the new file with it
    async with in_transaction():
        await StoredFile.filter(sha256=sha256).delete()
        await FileChunk.filter(sha256=sha256).delete()
