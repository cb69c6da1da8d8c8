"""The database connection killed while a sync pass stores a chunk (PostgreSQL: a real
`pg_terminate_backend`, no mocks). The pass fails with a readable error, nothing of the chunk
is written (no message without its links, attachments or documents), and the next pass
stores every message exactly once (services/mail/store: one transaction per chunk).

How the kill lands mid-store every time: a watcher connection holds an EXCLUSIVE lock on
message_account (reads go on, writes wait), so the pass's chunk transaction inserts its
messages, attachments and auto-saved documents, then waits on its INSERT of the links. The
watcher sees that wait in pg_stat_activity, terminates every other backend of the test
database (the pass's, the pool's idle ones), and lets go of its lock."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from portico.settings import Settings
from schema import ids
from tests.support.api import Firm
from tests.support.databases import Database
from tests.support.imap import ImapServer, imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.mail import add_mailbox
from tests.test_attachments import PDF, client_in, papers

MESSAGES = 60  # one batch, its headers in two FETCHes (HEADER_BATCH, 50)
SYNC = """mutation($id: ID!) { syncMailbox(id: $id) {
  errors { code message } mailbox { lastError syncStatus } } }"""
COUNTS = """SELECT (SELECT count(*) FROM message), (SELECT count(*) FROM message_account),
  (SELECT count(*) FROM attachment), (SELECT count(*) FROM document),
  (SELECT count(*) FROM message m WHERE NOT EXISTS
     (SELECT 1 FROM message_account l WHERE l.message_id = m.id)),
  (SELECT count(DISTINCT message_key) FROM message)"""
BLOCKED = """SELECT pid FROM pg_stat_activity WHERE datname = current_database()
  AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' AND query ILIKE '%message_account%'"""
TERMINATE = """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
  WHERE datname = current_database() AND pid <> pg_backend_pid()"""


async def _kill_mid_store(url: str, started: asyncio.Event) -> int:
    """Holds the links' table, waits for the pass to block on it inside its chunk
    transaction, then terminates every other backend; how many."""
    watcher = await asyncpg.connect(url)
    try:
        async with watcher.transaction():
            await watcher.execute("LOCK TABLE message_account IN EXCLUSIVE MODE")
            started.set()
            for _ in range(3000):
                # pg_stat_activity is read once per transaction unless told otherwise.
                await watcher.execute("SELECT pg_stat_clear_snapshot()")
                if await watcher.fetch(BLOCKED):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the pass never reached the store")
            return await watcher.fetchval(TERMINATE)
    finally:
        await watcher.close()


async def test_the_connection_killed_mid_store_writes_nothing_and_resumes(
    acme: Firm,
    client: httpx.AsyncClient,
    settings: Settings,
    imap: ImapServer,
    clean_db: Database,
) -> None:
    if clean_db.backend != "postgres":
        pytest.skip("pg_terminate_backend is PostgreSQL's (PORTICO_TEST_DATABASE=postgres)")
    await client_in(acme.api, ("Miller Family", True))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    for n in range(MESSAGES):
        content = PDF + str(n).encode()
        imap.append(
            mailbox.username, papers(f"Papers {n}", [(f"p{n}.pdf", "application/pdf", content)])
        )
    variables = {"id": ids.encode("Mailbox", mailbox.pk)}

    started = asyncio.Event()
    killer = asyncio.create_task(_kill_mid_store(clean_db.url, started))
    await started.wait()
    failed = (await acme.api.data(SYNC, variables))["syncMailbox"]
    assert await killer >= 1

    # A readable error on the mailbox, no traceback; nothing of the chunk was written.
    error = failed["mailbox"]["lastError"]
    assert error and "Traceback" not in error and len(error) < 1000, failed
    assert failed["mailbox"]["syncStatus"] == "FAILED", failed
    assert "database connection was lost" in error and "none of them was stored" in error
    check = await asyncpg.connect(clean_db.url)
    try:
        assert tuple(await check.fetchrow(COUNTS)) == (0, 0, 0, 0, 0, 0)
        assert (await acme.api.data("{ inbox { totalCount } }"))["inbox"]["totalCount"] == 0

        # The next pass stores every message once, linked, with its attachment saved once.
        again = (await acme.api.data(SYNC, variables))["syncMailbox"]
        assert again == {"errors": [], "mailbox": {"lastError": None, "syncStatus": "IDLE"}}
        n = MESSAGES
        assert tuple(await check.fetchrow(COUNTS)) == (n, n, n, n, 0, n)
    finally:
        await check.close()
    assert (await acme.api.data("{ inbox { totalCount } }"))["inbox"]["totalCount"] == n
