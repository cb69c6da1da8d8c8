"""The database file store (PORTICO_FILE_STORE=database) through the API: uploads, synced
attachments and exports read from chunks in the database, contents stored once and removed
with their last reference, and `portico files move` between the two stores."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from models import FileChunk, StoredFile
from portico.settings import Settings
from services.shared import files
from tests.support.api import Firm
from tests.support.crm_ops import UPDATE_ACCOUNT
from tests.support.imap import ImapServer, imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.login import FLAGS, invitee
from tests.support.mail import ANNA, add_mailbox
from tests.test_attachments import PNG, documents_of, papers, sync
from tests.test_documents import DELETE, upload
from tests.test_privacy import EXPORT, download

MIB = 1024 * 1024
SMALL = b"%PDF-1.4\n" + b"a small document\n" * 200
# Over two chunks, and no chunk boundary at a line's end.
BIG = b"%PDF-1.4\n" + hashlib.sha256(b"seed").digest() * (5 * MIB // 32 // 2)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def store(settings: Settings, tmp_path: Path) -> Settings:
    """The database store (emptied with the other tables by clean_db), with a files folder
    that must stay empty."""
    settings.files_dir = tmp_path / "files"
    settings.files_dir.mkdir()
    settings.file_store = "database"  # the app shares this settings object
    return settings


def folder_contents(settings: Settings) -> list[Path]:
    return sorted(p for p in settings.resolved_files_dir.rglob("*") if p.is_file())


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


async def uploaded(client: httpx.AsyncClient, acme: Firm, account: str, name: str, content: bytes):
    payload = (await upload(client, acme.api.token, account, name, content)).json()
    assert payload["data"]["uploadDocument"]["errors"] == [], payload
    return payload["data"]["uploadDocument"]["document"]


async def fetch(client: httpx.AsyncClient, acme: Firm, document: dict) -> httpx.Response:
    auth = {"Authorization": f"Bearer {acme.api.token}"}
    return await client.get("/documents/" + document["id"], headers=auth)


async def chunk_counts() -> dict[str, int]:
    return {
        f.sha256: await FileChunk.filter(sha256=f.sha256).count() for f in await StoredFile.all()
    }


async def test_uploads_download_from_chunks_are_stored_once_and_go_with_the_last_document(
    acme, client, store
):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    small = await uploaded(client, acme, anna.account_id, "small.pdf", SMALL)
    big = await uploaded(client, acme, anna.account_id, "big.pdf", BIG)
    assert len(BIG) > 2 * MIB and big["sha256"] == sha(BIG) and big["size"] == len(BIG)
    assert await chunk_counts() == {sha(SMALL): 1, sha(BIG): 3}
    assert (await StoredFile.get(sha256=sha(BIG))).chunks == 3

    for document, content in ((small, SMALL), (big, BIG)):
        got = await fetch(client, acme, document)
        assert got.status_code == 200 and got.content == content
        assert got.headers["content-type"].startswith("application/pdf")
        assert got.headers["content-length"] == str(len(content))
        assert got.headers["content-disposition"] == (
            f"attachment; filename*=UTF-8''{document['filename']}"
        )
        assert got.headers["cache-control"] == "private, no-store"
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-security-policy"] == "sandbox"
    assert (await client.get("/documents/" + big["id"])).status_code == 404  # no session

    # The same content again: a second document, one content.
    copy = await uploaded(client, acme, anna.account_id, "copy.pdf", BIG)
    assert copy["sha256"] == big["sha256"]
    assert await chunk_counts() == {sha(SMALL): 1, sha(BIG): 3}

    await acme.api.ok(DELETE, {"id": big["id"]})
    assert (await fetch(client, acme, copy)).content == BIG  # the copy still refers to it
    await acme.api.ok(DELETE, {"id": copy["id"]})
    assert await chunk_counts() == {sha(SMALL): 1}  # nothing refers to it: its chunks go
    assert await FileChunk.filter(sha256=sha(BIG)).count() == 0
    assert not await files.exists(store, sha(BIG)) and await files.exists(store, sha(SMALL))
    assert (await fetch(client, acme, copy)).status_code == 404
    assert folder_contents(store) == []


async def test_the_same_new_content_uploaded_at_once_is_stored_once(acme, client, store):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    names = [f"copy {n}.pdf" for n in range(4)]
    answers = await asyncio.gather(
        *(upload(client, acme.api.token, anna.account_id, name, BIG) for name in names)
    )
    assert [a.json()["data"]["uploadDocument"]["errors"] for a in answers] == [[]] * 4
    assert await chunk_counts() == {sha(BIG): 3}
    assert await FileChunk.all().count() == 3  # no pending chunks left behind
    for answer in answers:
        document = answer.json()["data"]["uploadDocument"]["document"]
        assert (await fetch(client, acme, document)).content == BIG


async def test_an_oversize_upload_leaves_no_chunks(acme, client, store):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    store.max_upload_bytes = 2 * MIB  # two chunks are written before the third is refused
    body = (await upload(client, acme.api.token, anna.account_id, "big.pdf", BIG)).json()
    assert body["data"]["uploadDocument"]["errors"][0]["code"] == "TOO_LARGE"
    assert await FileChunk.all().count() == 0 and await StoredFile.all().count() == 0
    assert folder_contents(store) == []


async def test_the_export_reads_its_documents_from_the_database(acme, client, store):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await uploaded(client, acme, anna.account_id, "Return.pdf", BIG)
    payload = await acme.api.ok(EXPORT, {"id": anna.contact_id})
    response = await download(client, payload["downloadUrl"])
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.testzip() is None
    [document] = archive.namelist()[:-1]
    assert document.endswith("/Return.pdf") and archive.read(document) == BIG
    assert folder_contents(store) == []


async def test_an_auto_saved_attachment_downloads_and_is_exported(
    acme, client, store, imap: ImapServer
):
    anna = await invitee(acme.api, "Miller Family", ANNA)
    await acme.api.ok(
        UPDATE_ACCOUNT, {"id": anna.account_id, "input": {"autoSaveAttachments": True}}
    )
    await acme.api.ok(
        FLAGS, {"input": {"accountEmailId": anna.account_email_id, "emailSync": True}}
    )
    mailbox = await add_mailbox(acme.owner.firm_id, imap, store)
    attached = [("Bescheid.pdf", "application/pdf", BIG), ("Beleg.png", "image/png", PNG)]
    imap.append(mailbox.username, papers("Papers", attached))
    await sync(acme.api, mailbox)

    saved = await documents_of(acme.api, anna.account_id)
    assert [d["filename"] for d in saved] == ["Beleg.png", "Bescheid.pdf"]
    for document, content in zip(saved, (PNG, BIG), strict=True):
        got = await fetch(client, acme, document)
        assert got.status_code == 200 and got.content == content
    assert await chunk_counts() == {sha(PNG): 1, sha(BIG): 3}

    payload = await acme.api.ok(EXPORT, {"id": anna.contact_id})
    archive = zipfile.ZipFile(io.BytesIO((await download(client, payload["downloadUrl"])).content))
    exported = {name.rsplit("/", 1)[-1]: archive.read(name) for name in archive.namelist()}
    assert exported["Bescheid.pdf"] == BIG and exported["Beleg.png"] == PNG
    assert folder_contents(store) == []


def portico_files_move(settings: Settings, to: str) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it, on the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTICO_")}
    env |= {
        "PORTICO_DATABASE_URL": settings.resolved_database_url,
        "PORTICO_FILES_DIR": str(settings.resolved_files_dir),
        "PORTICO_FILE_STORE": to,
    }
    return subprocess.run(
        [sys.executable, "-m", "portico", "files", "move", "--to", to],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


async def move(settings: Settings, to: str) -> str:
    done = await asyncio.to_thread(portico_files_move, settings, to)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_moving_between_the_stores_keeps_every_download(acme, client, store):
    store.file_store = "folder"
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    contents = {"small.pdf": SMALL, "big.pdf": BIG, "copy.pdf": SMALL, "png.png": PNG}
    documents = {
        name: await uploaded(client, acme, anna.account_id, name, content)
        for name, content in contents.items()
    }

    async def all_download() -> None:
        for name, document in documents.items():
            got = await fetch(client, acme, document)
            assert got.status_code == 200 and got.content == contents[name], name

    assert len(folder_contents(store)) == 3 and await StoredFile.all().count() == 0

    assert await move(store, "database") == "moved 3, already there 0, failed 0, gone meanwhile 0"
    assert folder_contents(store) == []
    assert await chunk_counts() == {sha(SMALL): 1, sha(BIG): 3, sha(PNG): 1}
    await all_download()  # still PORTICO_FILE_STORE=folder: read from the other store
    store.file_store = "database"
    await all_download()
    assert await move(store, "database") == "moved 0, already there 0, failed 0, gone meanwhile 0"

    # A move stopped after the copy and before removing the source: the rerun only removes it.
    left = store.resolved_files_dir / sha(PNG)[:2] / sha(PNG)
    left.parent.mkdir(exist_ok=True)
    left.write_bytes(PNG)
    assert await move(store, "database") == "moved 0, already there 1, failed 0, gone meanwhile 0"
    assert folder_contents(store) == []

    assert await move(store, "folder") == "moved 3, already there 0, failed 0, gone meanwhile 0"
    assert await StoredFile.all().count() == 0 and await FileChunk.all().count() == 0
    assert {p.name for p in folder_contents(store)} == {sha(SMALL), sha(BIG), sha(PNG)}
    await all_download()  # PORTICO_FILE_STORE=database still: read from the folder
    store.file_store = "folder"
    await all_download()
    assert await move(store, "folder") == "moved 0, already there 0, failed 0, gone meanwhile 0"

    # A file that no longer hashes to its name is not moved, and stays.
    broken = store.resolved_files_dir / sha(SMALL)[:2] / sha(SMALL)
    broken.write_bytes(b"damaged")
    failed = await asyncio.to_thread(portico_files_move, store, "database")
    assert failed.returncode != 0
    assert failed.stdout.strip() == "moved 2, already there 0, failed 1, gone meanwhile 0"
    assert broken.read_bytes() == b"damaged" and not await StoredFile.exists(sha256=sha(SMALL))


# Moves while the firm works --------------------------------------------------------------


async def test_a_download_under_way_when_the_store_moves_to_the_folder_completes(
    acme, client, store
):
    """The move writes the file before it removes the chunks: a download that finds a chunk
    gone reads the rest from the file, from the same offset."""
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await uploaded(client, acme, anna.account_id, "big.pdf", BIG)
    content = await files.find(store, sha(BIG))
    assert content is not None and content.store == "database"
    chunks = content.chunks()
    got = [await anext(chunks)]  # the first MiB went out
    await files.move(store, "folder")
    got += [chunk async for chunk in chunks]
    assert b"".join(got) == BIG


async def test_a_content_forgotten_while_moved_to_the_database_stays_forgotten(
    acme, client, store, monkeypatch
):
    """deleteDocument (or an erasure) while the move copies its content: forget found no
    database rows yet, so the move looks again once it committed them."""
    store.file_store = "folder"
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    document = await uploaded(client, acme, anna.account_id, "a.pdf", SMALL)
    copy = files._db_store

    async def deleted_meanwhile(read, limit, expect):  # type: ignore[no-untyped-def]
        await acme.api.ok(DELETE, {"id": document["id"]})  # forget runs after its commit
        return await copy(read, limit, expect)

    monkeypatch.setattr(files, "_db_store", deleted_meanwhile)
    moved = await files.move(store, "database")
    assert (moved.moved, moved.failed) == (1, 0)
    assert not await StoredFile.filter(sha256=sha(SMALL)).exists()
    assert not await FileChunk.filter(sha256=sha(SMALL)).exists()
    assert folder_contents(store) == []


async def test_a_content_forgotten_while_moved_to_the_folder_is_counted_gone(
    acme, client, store, monkeypatch
):
    """Its chunks deleted under the copy: the move goes on with the others, says so, and
    leaves no file."""
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    gone = await uploaded(client, acme, anna.account_id, "gone.pdf", BIG)
    await uploaded(client, acme, anna.account_id, "kept.pdf", SMALL)
    copy = files._folder_store

    async def deleted_meanwhile(read, settings, limit, expect):  # type: ignore[no-untyped-def]
        if expect == sha(BIG):
            await read(files.CHUNK)  # the copy began
            await acme.api.ok(DELETE, {"id": gone["id"]})
        return await copy(read, settings, limit, expect)

    monkeypatch.setattr(files, "_folder_store", deleted_meanwhile)
    moved = await files.move(store, "folder")
    assert (moved.moved, moved.gone, moved.failed) == (1, 1, 0)
    assert folder_contents(store) == [files.path_for(store, sha(SMALL))]
    assert not await StoredFile.exists()
