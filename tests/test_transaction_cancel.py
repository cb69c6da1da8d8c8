"""A task cancelled while it enters, runs or leaves a transaction gives its connection back
(portico/db_clients.py). Before, a cancellation that landed during BEGIN kept SQLite's one
connection locked for good, or kept one of PostgreSQL's pool connections, so the process's
later statements waited for ever. Cancellations come from a WebSocket operation completed or
closed by its client, a sync pass stopped, a timeout. What a cancelled transaction wrote is
there whole or not at all, seen from a connection of its own."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from tortoise.backends.asyncpg.client import TransactionWrapper
from tortoise.backends.sqlite.client import SqliteTransactionWrapper
from tortoise.transactions import in_transaction

from models import Firm
from portico.settings import Settings
from tests.support.api import Firm as FirmWithOwner
from tests.support.crm_ops import new_contact
from tests.support.databases import Database
from tests.support.websocket import serving, socket
from tests.test_crm_verbs import CONTACT, UPDATE_CONTACT

ROUNDS = 8  # more than the PostgreSQL pool's 5 connections
SECONDS = 10.0  # a connection kept for good fails the round instead of hanging the suite


class BeginHold:
    """When armed, holds the next transaction right after its BEGIN ran, until the task is
    cancelled: the cancellation lands where Tortoise used to keep the connection."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
        wrapper = SqliteTransactionWrapper if backend == "sqlite" else TransactionWrapper
        real_begin = wrapper.begin
        self.armed = False
        self.begun = asyncio.Event()

        async def begin(transaction: Any) -> None:
            await real_begin(transaction)
            if self.armed:
                self.armed = False
                self.begun.set()
                await asyncio.Event().wait()  # until cancelled

        monkeypatch.setattr(wrapper, "begin", begin)

    async def until_begun(self, started: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Starts what `started` does; its task, once a transaction began (and is held)."""
        self.begun.clear()
        self.armed = True
        task = asyncio.create_task(started())
        async with asyncio.timeout(SECONDS):
            await self.begun.wait()
        return task

    async def cancel_at_begin(self, started: Callable[[], Awaitable[None]]) -> None:
        """Starts what `started` does, cancels it once its transaction began, and waits
        until it has ended."""
        task = await self.until_begun(started)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_task_cancelled_twice_as_its_transaction_ends_goes_on_outside_it(
    clean_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled in a transaction, then again while its connection goes back to the pool: a
    task that handles the cancellation and goes on (a sync pass recording why it stopped)
    is outside the transaction, not on a connection already given back."""
    if clean_db.backend != "postgres":
        pytest.skip("a pool's release that can be waited for: PostgreSQL's")
    inside, releasing, let_go = asyncio.Event(), asyncio.Event(), asyncio.Event()
    release = asyncpg.Pool.release

    async def slow_release(pool: asyncpg.Pool, *args: Any, **kwargs: Any) -> None:
        async def gated() -> None:
            releasing.set()
            await let_go.wait()
            await release(pool, *args, **kwargs)

        await asyncio.shield(gated())  # as asyncpg's own: the release goes on when cancelled

    async def work() -> int:
        try:
            async with in_transaction():
                await Firm.create(name="Cancelled", slug="cancelled")
                inside.set()
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            return await Firm.all().count()  # the cancellation handled: work goes on
        raise AssertionError("not cancelled")

    task = asyncio.create_task(work())
    async with asyncio.timeout(SECONDS):
        await inside.wait()
    monkeypatch.setattr(asyncpg.Pool, "release", slow_release)
    task.cancel()
    async with asyncio.timeout(SECONDS):
        await releasing.wait()
    task.cancel()
    let_go.set()
    async with asyncio.timeout(SECONDS):
        assert await task == 0  # rolled back, and counted on a connection of its own


async def committed_slugs(database: Database) -> set[str]:
    """The firms' slugs as a connection of its own sees them: only what was committed."""
    if database.backend == "postgres":
        conn = await asyncpg.connect(database.url)
        try:
            return {row["slug"] for row in await conn.fetch("SELECT slug FROM firm")}
        finally:
            await conn.close()

    def read() -> set[str]:
        with sqlite3.connect(database.url.removeprefix("sqlite://")) as conn:
            return {slug for (slug,) in conn.execute("SELECT slug FROM firm")}

    return await asyncio.to_thread(read)


async def test_a_transaction_cancelled_at_begin_gives_its_connection_back(
    clean_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold = BeginHold(monkeypatch, clean_db.backend)
    for round_ in range(ROUNDS):

        async def write(round_: int = round_) -> None:
            async with in_transaction():
                await Firm.create(name="Cancelled", slug=f"cancelled-{round_}")

        await hold.cancel_at_begin(write)
        async with asyncio.timeout(SECONDS):
            # Outside any transaction: committed at once, not inside the cancelled BEGIN's
            # (the next transaction would commit that one first).
            await Firm.create(name="Alone", slug=f"alone-{round_}")
            assert f"alone-{round_}" in await committed_slugs(clean_db), f"round {round_}"
            async with in_transaction():
                await Firm.create(name="In a transaction", slug=f"next-{round_}")
            seen = await committed_slugs(clean_db)
        assert f"next-{round_}" in seen, f"round {round_}: {seen}"
    assert not {slug for slug in seen if slug.startswith("cancelled-")}


async def sweep_points(write: Callable[[str], Awaitable[None]]) -> list[int]:
    """Where to cancel `write`: its first few turns of the event loop, then steps of a 24th
    of the most turns one of three uncancelled writes took, up to twice that. A write takes
    hundreds of turns (the loop turns while the database answers), so each statement's wait
    is cut several times; on a busy machine a write can take longer (see `finished_at`)."""
    needed = 0
    for n in range(3):
        measured = asyncio.create_task(write(f"measured-{n}"))
        turns = 0
        while not measured.done():
            await asyncio.sleep(0)
            turns += 1
        await measured
        needed = max(needed, turns)
    return sorted({*range(8), *(needed * step // 24 for step in range(49))})


async def finished_at(
    last: int, write: Callable[[str], Awaitable[None]], written: Callable[[str], Awaitable[bool]]
) -> bool:
    """Whether a write cancelled later than `last` turns (doubling, up to a million) gets
    through whole: the sweep's end reached past COMMIT even where this machine was slow."""
    turns = last
    while turns < 1_000_000:
        turns *= 2
        await cancelled_after(turns, write(f"late-{turns}"))
        if await written(f"late-{turns}"):
            return True
    return False


async def cancelled_after(turns: int, write: Awaitable[None]) -> None:
    task = asyncio.ensure_future(write)
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def write_pair(tag: str) -> None:
    async with in_transaction():
        for slug in (f"first-{tag}", f"second-{tag}"):
            await Firm.create(name="Pair", slug=slug)


async def test_a_cancellation_anywhere_leaves_both_rows_or_neither(clean_db: Database) -> None:
    """Swept over a transaction: before the connection is taken, during BEGIN, the INSERTs
    and COMMIT, and after."""
    outcomes = set()
    for turns in await sweep_points(write_pair):
        await cancelled_after(turns, write_pair(str(turns)))
        async with asyncio.timeout(SECONDS):
            async with in_transaction():  # the connection is free again
                await Firm.create(name="Next", slug=f"next-{turns}")
            seen = await committed_slugs(clean_db)
        written = {f"first-{turns}", f"second-{turns}"} & seen
        assert len(written) != 1, f"after {turns} turns: {written} alone"
        outcomes.add(bool(written))
    assert False in outcomes, "no cancellation stopped a pair"
    if True not in outcomes:

        async def pair_written(tag: str) -> bool:
            return {f"first-{tag}", f"second-{tag}"} <= await committed_slugs(clean_db)

        assert await finished_at(turns, write_pair, pair_written), "no pair got through"


BULK = 50


async def write_bulk(tag: str) -> None:
    await Firm.bulk_create([Firm(name="Bulk", slug=f"bulk-{tag}-{n}") for n in range(BULK)])


async def test_a_bulk_insert_cancelled_outside_a_transaction_leaves_nothing_open(
    clean_db: Database,
) -> None:
    """A bulk insert outside any transaction runs in one of its own. Cancelled anywhere,
    its rows are all there or none, and the next plain write is committed at once, not left
    in a transaction nobody ends."""
    outcomes = set()
    for turns in await sweep_points(write_bulk):
        await cancelled_after(turns, write_bulk(str(turns)))
        async with asyncio.timeout(SECONDS):
            await Firm.create(name="Alone", slug=f"alone-{turns}")
            seen = await committed_slugs(clean_db)
        assert f"alone-{turns}" in seen, f"after {turns} turns"
        written = {slug for slug in seen if slug.startswith(f"bulk-{turns}-")}
        assert len(written) in (0, BULK), f"after {turns} turns: {len(written)} rows"
        outcomes.add(bool(written))
    assert False in outcomes, "no cancellation stopped a bulk insert"
    if True not in outcomes:

        async def bulk_written(tag: str) -> bool:
            return f"bulk-{tag}-{BULK - 1}" in await committed_slugs(clean_db)

        assert await finished_at(turns, write_bulk, bulk_written), "no bulk insert got through"


async def test_a_mutation_whose_socket_closes_at_begin_leaves_the_api_serving(
    clean_db: Database,
    settings: Settings,
    acme: FirmWithOwner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A staff member renames a contact over graphql-transport-ws and closes the socket while
    the rename's transaction begins: strawberry cancels the operation. Round after round,
    the API still answers, and the rename that was cancelled is not there."""
    anna = await new_contact(acme.api, "Anna", "Miller")
    hold = BeginHold(monkeypatch, clean_db.backend)
    # Also bounds the server's shutdown, which waits for requests that wait for ever.
    async with asyncio.timeout(6 * SECONDS), serving(settings) as live:
        api = live.api(acme.api.token)
        for round_ in range(ROUNDS):
            async with socket(live.url, acme.api.token) as sock:

                async def rename(sock: Any = sock, round_: int = round_) -> None:
                    variables = {"id": anna["id"], "input": {"firstName": f"Cancelled {round_}"}}
                    await sock.subscribe("1", UPDATE_CONTACT, variables)
                    await asyncio.Event().wait()  # the server's side is what is cancelled

                client_side = await hold.until_begun(rename)
                client_side.cancel()
            # The socket is closed: its operation was cancelled while it held BEGIN.
            async with asyncio.timeout(SECONDS):
                renamed = await api.ok(
                    UPDATE_CONTACT, {"id": anna["id"], "input": {"firstName": f"Anna {round_}"}}
                )
            assert renamed["contact"]["firstName"] == f"Anna {round_}"
        contact = (await api.data(CONTACT, {"id": anna["id"]}))["contact"]
    assert contact == {"firstName": f"Anna {ROUNDS - 1}", "lastName": "Miller"}


FIRST_STATEMENT = """
import asyncio, sys
from tortoise import Tortoise
from models import Firm
from portico import db

async def main(url):
    await db.migrate(url)
    for turns in (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128):
        await db.init_db(url)
        first = asyncio.ensure_future(Firm.all().count())
        for _ in range(turns):
            await asyncio.sleep(0)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        async with asyncio.timeout(5):
            await Firm.all().count()
            connection = Tortoise.get_connection("default")
            [row] = await connection.execute_query_dict("PRAGMA foreign_keys")
        print(turns, row["foreign_keys"], flush=True)
        await db.close_db()

asyncio.run(main(sys.argv[1]))
"""


def test_a_process_whose_first_statement_is_cancelled_keeps_a_whole_sqlite_connection(
    tmp_path: Path,
) -> None:
    """SQLite's connection is opened when the database is set up, not by the process's first
    statement (a WebSocket operation, a pass): cancelled while it opened the connection,
    that statement kept its lock, or a connection whose foreign keys were never turned on."""
    url = f"sqlite://{tmp_path / 'first.sqlite3'}"
    ran = subprocess.run(
        [sys.executable, "-c", FIRST_STATEMENT, url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    lines = ran.stdout.split()
    assert len(lines) == 2 * 13 and set(lines[1::2]) == {"1"}, ran.stdout
