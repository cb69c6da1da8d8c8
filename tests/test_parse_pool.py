"""services/mail/parse_pool against a real Dovecot: with PORTICO_SYNC_PARSE_PROCESSES set, half
of each batch is parsed in another process and stored exactly as the sync's own parse would
have it; a pool process that dies leaves its messages to the sync, and nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from models import Attachment, Message, SyncStatus
from services.mail import parse_pool, sync_engine
from services.mail.parse import parse_message
from tests.support.imap import ImapServer, imap_fixture  # noqa: F401
from tests.support.mail import add_mailbox, mail
from tests.test_mailsync import (
    JANE,
    World,
    stored,
    sync,
    world_fixture,  # noqa: F401  (the `world` fixture)
)
from tests.test_sync_hostile import with_settings


def letters(count: int) -> list[bytes]:
    """Mail of several shapes: text, HTML, both, attachments."""
    out = []
    for n in range(count):
        out.append(
            mail(
                JANE,
                "office@acme.example",
                f"Letter {n}",
                body=None if n % 3 == 0 else f"Text {n}",
                html=f"<p>Letter {n}</p>" if n % 2 else None,
                attachments=[(f"file {n}.pdf", "application/pdf", b"%PDF" * (n + 1))]
                if n % 4 == 1
                else (),
            )
        )
    return out


def as_stored(message: Message, attachments: list[Attachment]) -> tuple[Any, ...]:
    return (
        message.subject,
        message.text_body,
        message.html_body,
        message.from_address,
        message.sent_at,
        sorted((a.filename, a.content_type, a.size) for a in attachments),
    )


async def stored_by_subject(world: World) -> dict[str, tuple[Any, ...]]:
    found = {}
    for message in await stored(world):
        attachments = await Attachment.filter(message_id=message.pk)
        found[message.subject] = as_stored(message, attachments)
    return found


async def test_half_of_each_batch_parses_in_the_pool_and_stores_as_the_sync_parses_it(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pooled = with_settings(world, sync_parse_processes=1)
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    raws = letters(12)
    for raw in raws:
        imap.append(mailbox.username, raw)
    offloaded: list[int] = []
    offload = parse_pool.offload

    def counted(*args: Any, **kwargs: Any) -> Any:
        handed = offload(*args, **kwargs)
        if handed is not None:
            offloaded.extend(uid for uid in args[2] if uid in handed)
        return handed

    monkeypatch.setattr(parse_pool, "offload", counted)
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 6)  # two batches, each shared
    result = await sync(pooled, mailbox)
    assert (result.status, result.stored, result.failed) == (SyncStatus.IDLE, 12, 0)
    assert len(offloaded) == 6  # three of each batch of six

    # What the pool parsed is stored as the sync's own parse of the same bytes (as IMAP
    # serves them: CRLF) reads it.
    expected = {}
    for raw in raws:
        served = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        parsed = parse_message(served, max_attachment_bytes=world.settings.max_upload_bytes)
        expected[parsed.subject] = parsed
    for subject, row in (await stored_by_subject(world)).items():
        parsed = expected[subject]
        assert row[:4] == (parsed.subject, parsed.text_body, parsed.html_body, parsed.from_address)
        assert row[5] == sorted((a.filename, a.content_type, a.size) for a in parsed.attachments)


async def test_a_pool_process_that_died_leaves_its_messages_to_the_sync(
    world: World, imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pooled = with_settings(world, sync_parse_processes=1)
    mailbox = await add_mailbox(world.scope.firm_id, imap, world.settings)
    for raw in letters(8):
        imap.append(mailbox.username, raw)
    pool = parse_pool._executor(1)
    assert pool.submit(int, "1").result(timeout=60) == 1  # its process started
    for process in list(pool._processes.values()):  # type: ignore[attr-defined]
        os.kill(process.pid, signal.SIGKILL)
    result = await sync(pooled, mailbox)
    assert (result.status, result.stored, result.failed) == (SyncStatus.IDLE, 8, 0)
    assert sorted(m.subject for m in await stored(world)) == sorted(f"Letter {n}" for n in range(8))
    assert parse_pool._pool is not pool  # replaced on next use


def test_a_parse_that_raises_in_the_pool_is_left_to_the_sync() -> None:
    assert parse_pool._parse_all([b"Subject: fine\r\n\r\nx"], None)[0] is not None
    assert parse_pool._parse_all([None], None) == [None]  # type: ignore[list-item]


async def test_a_job_cancelled_with_its_replaced_pool_is_parsed_by_the_sync() -> None:
    """Another sync_parse_processes value replaces the pool, cancelling its queued jobs: their
    messages are the sync's to parse (None), not a cancellation of the sync."""
    raw = b"From: a@x.example\r\nSubject: s\r\n\r\n" + b"x" * 2000 + b"\r\n"
    messages = {uid: raw for uid in range(400)}
    uids = list(messages)
    handed = [parse_pool.offload(1, messages, uids, None) for _ in range(3)]  # one waits
    parse_pool.offload(2, messages, uids, None)
    waiting = handed[2]
    assert waiting is not None
    assert await waiting.parsed(uids[-1]) is None
    for offload in handed:
        assert offload is not None
        offload.cancel()


def test_pool_processes_end_when_the_process_that_made_them_is_killed() -> None:
    """An OOM kill of a worker leaves no pool process waiting for work forever."""
    script = (
        "import sys, time\n"
        "from services.mail import parse_pool\n"
        "pool = parse_pool._executor(1)\n"
        "pool.submit(int, '1').result()\n"
        "print(*pool._processes, flush=True)\n"
        "time.sleep(120)\n"
    )
    maker = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=Path(__file__).parents[1]
    )
    try:
        assert maker.stdout is not None
        [worker] = [int(pid) for pid in maker.stdout.readline().split()]
        maker.kill()
        maker.wait()
        deadline = time.monotonic() + 4 * parse_pool.PARENT_CHECK_SECONDS
        while time.monotonic() < deadline and _alive(worker):
            time.sleep(0.2)
        assert not _alive(worker)
    finally:
        maker.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended
