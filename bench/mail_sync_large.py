"""EMAIL SYNC of a large mailbox: peak memory and time of a first sync of 50,000 messages.

    python -m bench.mail_sync_large [MESSAGES] [--postgres] [--history]

Starts a throwaway Dovecot (tests/support/imap.py), writes MESSAGES (default 50,000) small
client messages straight into the user's Maildir (cur/, as a delivery agent would: seconds,
not the minutes APPEND takes), then runs one `sync_mailbox` from an empty database (a
temporary SQLite file; with --postgres a throwaway PostgreSQL database,
PORTICO_BENCH_POSTGRES) in a child process of its own, so its peak resident memory (VmHWM)
is the sync's alone. Reported: RSS before the pass, peak RSS, time, messages stored, and the
mailbox's progress (syncProgress) as sampled during the pass. Goal (issue 14): peak under
300 MB. Never part of `make test`.

--history times a history import of the same mail instead: EMAIL SYNC turned on for the
50 client addresses of a mailbox never synced, then one round of `run_due_imports` (the 50
imports share one login); progress is what the run found and what its imports imported.
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import asyncpg

from bench.data import bulk_accounts
from models import HistoryImport, HistoryStatus, Mailbox, Message
from portico import db
from portico.settings import Settings
from services.firm import firms
from services.mail import history, sync_engine
from services.mail.mailboxes import encrypt_password
from services.shared.scope import FirmScope
from tests.support.imap import PASSWORD, ImapServer, running_dovecot

POSTGRES_URL = os.environ.get("PORTICO_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
SECRET = "bench-secret"
CLIENTS = 50
USER = "large@bench.example"
GOAL_MB = 300


BODY = "Line of the receipt.\n" * 20
TEMPLATE = (
    "From: Client {c} <c{c}@clients.example>\nTo: " + USER + "\nSubject: Receipts {n}\n"
    "Date: {date}\nMessage-ID: <large.{n}@clients.example>\nMIME-Version: 1.0\n"
    'Content-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: 7bit\n\n'
    "Receipt {n} attached as text.\n" + BODY
)


def message(n: int) -> bytes:
    """A short client mail (about 1 KB), from a template (EmailMessage is too slow for 50,000)."""
    date = format_datetime(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n))
    return TEMPLATE.format(c=n % CLIENTS, n=n, date=date).encode()


def fill(server: ImapServer, count: int) -> None:
    """`count` messages in the user's INBOX, written as Maildir files (Dovecot gives them
    UIDs on the next SELECT)."""
    with imaplib.IMAP4(server.host, server.port) as client:  # creates the Maildir
        client.login(USER, PASSWORD)
        client.select("INBOX")
        client.logout()
    cur = server.folder / "home" / USER / "Maildir" / "cur"
    stamp = int(time.time())
    for n in range(count):
        raw = message(n)
        (cur / f"{stamp}.M{n}P{os.getpid()}.bench,S={len(raw)}:2,").write_bytes(raw)
    with imaplib.IMAP4(server.host, server.port) as client:  # indexes them
        client.login(USER, PASSWORD)
        status, data = client.select("INBOX")
        assert status == "OK" and int(data[0]) == count, data
        client.logout()


def memory_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


async def child(
    url: str, host: str, port: int, count: int, var_dir: str, history_import: bool
) -> dict[str, object]:
    """In the child process: the database, the firm, then one timed sync pass (or history
    import)."""
    logging.disable(logging.INFO)
    await db.migrate(url)
    await db.init_db(url)
    try:
        settings = Settings(database_url=url, secret_key=SECRET, var_dir=var_dir, _env_file=None)
        firm, _ = await firms.create_firm(
            "Bench LLP", "bench", "owner@bench.example", "Owner", "bench-password-1"
        )
        await bulk_accounts(firm.pk, CLIENTS, "clients.example", email_sync=True)
        mailbox = await Mailbox.create(
            firm_id=firm.pk,
            address=USER,
            address_normalized=USER,
            imap_host=host,
            imap_port=port,
            imap_tls=False,
            smtp_host=host,
            smtp_port=25,
            smtp_tls=False,
            username=USER,
            password_encrypted=encrypt_password(settings, PASSWORD),
        )
        before = memory_mb("VmRSS")
        samples: list[tuple[float, int, int | None]] = []
        started = time.perf_counter()

        scope = FirmScope(firm.pk)
        if history_import:
            addresses = [f"c{c}@clients.example" for c in range(CLIENTS)]
            assert await history.queue(scope, addresses) == CLIENTS

        async def progress() -> tuple[int | None, int | None]:
            if history_import:
                rows = await HistoryImport.all().values_list("found", "imported")
                # `found` is the whole run's on each row (one login for all 50 addresses).
                return max(found for found, _ in rows), sum(done for _, done in rows)
            row = await Mailbox.get(pk=mailbox.pk)
            return row.sync_done, row.sync_total

        async def sample() -> None:
            while True:
                await asyncio.sleep(5)
                samples.append((round(time.perf_counter() - started, 1), *await progress()))

        sampler = asyncio.create_task(sample())
        if history_import:
            assert await history.run_due_imports(settings) == CLIENTS
            error = await HistoryImport.exclude(status=HistoryStatus.DONE).first()
        else:
            error = (await sync_engine.sync_mailbox(scope, mailbox, settings)).error
        seconds = time.perf_counter() - started
        sampler.cancel()
        stored = await Message.all().count()
        assert error is None and stored == count, (error, stored)
        return {
            "rss_before_mb": round(before, 1),
            "peak_rss_mb": round(memory_mb("VmHWM"), 1),
            "seconds": round(seconds, 1),
            "stored": stored,
            "progress_samples": samples[:6],
            "final_progress": await progress(),
        }
    finally:
        await db.close_db()


def run_child(url: str, server: ImapServer, count: int, history_import: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as var_dir:
        args = [sys.executable, "-m", "bench.mail_sync_large", "--child", url]
        args += [server.host, str(server.port), str(count), var_dir, str(int(history_import))]
        out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


async def postgres_url() -> tuple[str, str]:
    name = f"portico_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(POSTGRES_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}", name


async def drop_postgres(name: str) -> None:
    admin = await asyncpg.connect(POSTGRES_URL)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


def main(count: int, postgres: bool, history_import: bool) -> None:
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    with running_dovecot(binary) as server:
        started = time.perf_counter()
        fill(server, count)
        print(f"(wrote {count} messages into Dovecot in {time.perf_counter() - started:.1f} s)")
        results: dict[str, dict[str, object]] = {}
        with tempfile.TemporaryDirectory() as folder:
            sqlite = f"sqlite://{Path(folder) / 'b.sqlite3'}"
            results["SQLite"] = run_child(sqlite, server, count, history_import)
        if postgres:
            url, name = asyncio.run(postgres_url())
            try:
                results["PostgreSQL"] = run_child(url, server, count, history_import)
            finally:
                asyncio.run(drop_postgres(name))
    what = f"history import of {CLIENTS} addresses" if history_import else "first sync"
    print(f"mail sync of a large mailbox: {what}, {count} messages, one pass")
    for backend, r in results.items():
        print(f"  {backend}")
        print(f"    time           {r['seconds']:8.1f} s  ({count / r['seconds']:.0f} msg/s)")
        print(f"    RSS before     {r['rss_before_mb']:8.1f} MB  (interpreter, app, database)")
        verdict = "under" if r["peak_rss_mb"] < GOAL_MB else "OVER"
        print(f"    peak RSS       {r['peak_rss_mb']:8.1f} MB  ({verdict} the {GOAL_MB} MB goal)")
        order = "found, imported" if history_import else "done, total"
        print(f"    progress       {r['progress_samples']}  (seconds, {order})")
        print(f"    at the end     {r['final_progress']}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        url, host, port, count, var_dir, history_import = sys.argv[2:8]
        outcome = asyncio.run(
            child(url, host, int(port), int(count), var_dir, history_import == "1")
        )
        print(json.dumps(outcome))
    else:
        numbers = [a for a in sys.argv[1:] if a.isdigit()]
        count = int(numbers[0]) if numbers else 50_000
        main(count, "--postgres" in sys.argv, "--history" in sys.argv)
