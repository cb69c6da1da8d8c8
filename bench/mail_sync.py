"""EMAIL SYNC throughput: a first sync of 5,000 messages next to a plain IMAP fetch of them.

    python -m bench.mail_sync [MESSAGES] [--fetch-batch N] [--only postgres|sqlite]

Starts a throwaway Dovecot (tests/support/imap.py, Debian's dovecot-imapd), puts MESSAGES (default
5,000) messages into one INBOX, each from one of 50 client addresses with EMAIL SYNC on in an
account of their own, then times, on a throwaway PostgreSQL database
(PORTICO_BENCH_POSTGRES, default as in the tests) and on a temporary SQLite file:
- portico:  `services.mail.sync_engine.sync_mailbox` from an empty database: log in, list, select,
  search, read participants, download the bodies, parse, thread, store and link each message;
- baseline: a plain aioimaplib session of the same process fetching the same messages,
  BASELINE_BATCH a UID FETCH (log in, select, UID SEARCH, UID FETCH BODY.PEEK[]): the least
  any sync must do. Its batch is its own, its fastest measured (50; stock aioimaplib gets
  slower with bigger ones: 100, 200, 500 and 1,000 took 1.1-1.9x as long on 2026-12-01),
  not the engine's FETCH_BATCH (1,000 UIDs a batch, HEADER_BATCH a header FETCH, bodies in
  round trips of up to BODY_BATCH_BYTES).
Each is the median of ROUNDS runs, Portico's and the baseline's in turns; Portico's runs each
start from an empty message table. The ratio is the median of each round's Portico time /
baseline time (both ran under the same load). `--fetch-batch` sets the engine's FETCH_BATCH
(the baseline keeps its own) to try another batch size; `--only` times one database. Never
part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import logging
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import aioimaplib
import asyncpg

from bench.data import bulk_accounts
from models import (
    Mailbox,
    MailboxFolder,
    Message,
    MessageAccount,
)
from portico import db, heap
from portico.settings import Settings
from services.firm import firms
from services.mail import sync_engine
from services.mail.mailboxes import encrypt_password
from services.shared.scope import FirmScope
from tests.support.imap import PASSWORD, ImapServer, running_dovecot

POSTGRES_URL = os.environ.get("PORTICO_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
SECRET = "bench-secret"
ROUNDS = 3
BASELINE_BATCH = 50  # UIDs a FETCH for the plain fetch: its fastest
CLIENTS = 50
USER = "inbox@bench.example"
PARAGRAPH = (
    "Please find the figures for the last quarter below. The VAT return is due on the tenth, "
    "and we still need the receipts for the office equipment bought in March.\n"
)


def message(n: int) -> bytes:
    """A plausible client mail of a few KB: text and HTML, one in four a reply."""
    msg = EmailMessage()
    msg["From"] = f"Client {n % CLIENTS} <c{n % CLIENTS}@clients.example>"
    msg["To"] = USER
    msg["Subject"] = f"Quarterly figures {n // 4}" if n % 4 else f"Re: Quarterly figures {n // 4}"
    msg["Date"] = format_datetime(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n))
    msg["Message-ID"] = make_msgid(f"m{n}", "clients.example")
    body = PARAGRAPH * 12
    msg.set_content(body)
    msg.add_alternative("<html><body>" + "<p>" + PARAGRAPH * 12 + "</p></body></html>", "html")
    return bytes(msg)


def fill(server: ImapServer, count: int) -> None:
    """The messages delivered into the Maildir as a local delivery agent does (an APPEND per
    message took minutes); one login first makes the Maildir."""
    with imaplib.IMAP4(server.host, server.port) as client:
        client.login(USER, PASSWORD)
        client.select("INBOX")
        client.logout()
    for n in range(count):
        server.deliver_to_maildir(USER, message(n))


async def plain_fetch(server: ImapServer, count: int) -> None:
    """The baseline: the same messages downloaded by a bare aioimaplib session."""
    client = aioimaplib.IMAP4(host=server.host, port=server.port, timeout=60)
    await client.wait_hello_from_server()
    await client.login(USER, PASSWORD)
    await client.select("INBOX")
    response = await client.uid_search("UID", "1:*", charset=None)
    uids = [int(u) for line in response.lines[:-1] for u in bytes(line).split() if u.isdigit()]
    fetched = 0
    for start in range(0, len(uids), BASELINE_BATCH):
        batch = ",".join(str(u) for u in uids[start : start + BASELINE_BATCH])
        answer = await client.uid("fetch", batch, "(UID BODY.PEEK[])")
        fetched += sum(1 for line in answer.lines if isinstance(line, bytearray))
    await client.logout()
    assert fetched == count, fetched


async def measure(url: str, server: ImapServer, count: int, folder: Path) -> dict[str, float]:
    await db.migrate(url)
    await db.init_db(url)
    try:
        settings = Settings(
            database_url=url, secret_key=SECRET, var_dir=folder / "var", _env_file=None
        )
        firm, _ = await firms.create_firm(
            "Bench LLP", "bench", "owner@bench.example", "Owner", "bench-password-1"
        )
        scope = FirmScope(firm.pk)
        await bulk_accounts(firm.pk, CLIENTS, "clients.example", email_sync=True)
        mailbox = await Mailbox.create(
            firm_id=firm.pk,
            address=USER,
            address_normalized=USER,
            imap_host=server.host,
            imap_port=server.port,
            imap_tls=False,
            smtp_host=server.host,
            smtp_port=25,
            smtp_tls=False,
            username=USER,
            password_encrypted=encrypt_password(settings, PASSWORD),
        )

        async def empty() -> None:
            await MessageAccount.all().delete()
            await Message.all().delete()
            await MailboxFolder.all().delete()

        async def portico() -> None:
            result = await sync_engine.sync_mailbox(scope, mailbox, settings)
            assert result.error is None and result.stored == count, result

        async def baseline() -> None:
            await plain_fetch(server, count)

        # In turns, so both sides of a ratio ran under the same load (the machine is shared).
        times: dict[str, list[float]] = {"portico": [], "baseline": []}
        cpu: dict[str, list[float]] = {"portico": [], "baseline": []}
        for _ in range(ROUNDS):
            await empty()
            for name, action in (("portico", portico), ("baseline", baseline)):
                started, cpu_started = time.perf_counter(), time.process_time()
                await action()
                times[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - cpu_started)
        ratios = [p / b for p, b in zip(times["portico"], times["baseline"], strict=True)]
        return {
            "portico": statistics.median(times["portico"]),
            "baseline": statistics.median(times["baseline"]),
            "ratio": statistics.median(ratios),
            "portico_cpu": statistics.median(cpu["portico"]),
            "baseline_cpu": statistics.median(cpu["baseline"]),
        }
    finally:
        await db.close_db()


async def main(count: int, only: str | None = None) -> None:
    logging.disable(logging.INFO)
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    results: dict[str, dict[str, float]] = {}
    with running_dovecot(binary) as server:
        started = time.perf_counter()
        fill(server, count)
        print(f"(put {count} messages into Dovecot in {time.perf_counter() - started:.1f} s)")
        await plain_fetch(server, count)  # warm Dovecot's index and cache before timing
        heap.settle()  # as `portico worker` does once started (portico/heap.py), for both
        if only in (None, "postgres"):
            name = f"portico_bench_{secrets.token_hex(4)}"
            admin = await asyncpg.connect(POSTGRES_URL)
            await admin.execute(f'CREATE DATABASE "{name}"')
            try:
                with tempfile.TemporaryDirectory() as folder:
                    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
                    results["PostgreSQL"] = await measure(url, server, count, Path(folder))
            finally:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await admin.close()
        if only in (None, "sqlite"):
            with tempfile.TemporaryDirectory() as folder:
                url = f"sqlite://{Path(folder) / 'bench.sqlite3'}"
                results["SQLite"] = await measure(url, server, count, Path(folder))

    print(f"mail sync: first sync of {count} messages from {CLIENTS} clients with EMAIL SYNC on")
    print(
        f"(median of {ROUNDS} runs; Dovecot on loopback; Portico's batches of up to "
        f"{sync_engine.FETCH_BATCH} UIDs, the baseline's {BASELINE_BATCH} UIDs a FETCH)"
    )
    for backend, r in results.items():
        print(f"  {backend}")
        print(
            f"    portico   {r['portico']:7.2f} s  {count / r['portico']:7.0f} msg/s  "
            "sync_mailbox: fetch, parse, thread, store, link"
        )
        print(
            f"    baseline  {r['baseline']:7.2f} s  {count / r['baseline']:7.0f} msg/s  "
            "plain aioimaplib UID FETCH of the same messages"
        )
        print(f"    ratio     {r['ratio']:7.1f}x  (median of each round's Portico / baseline)")
        print(
            f"    CPU of this process: portico {r['portico_cpu']:.2f} s, baseline "
            f"{r['baseline_cpu']:.2f} s (Dovecot's and the database's not counted)"
        )


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.mail_sync", description=__doc__)
    parser.add_argument("messages", nargs="?", type=int, default=5000)
    parser.add_argument("--fetch-batch", type=int, default=None, help="FETCH_BATCH to use")
    parser.add_argument("--only", choices=("postgres", "sqlite"), default=None)
    arguments = parser.parse_args(argv)
    if arguments.messages < 1 or (arguments.fetch_batch is not None and arguments.fetch_batch < 1):
        parser.error("MESSAGES and --fetch-batch must be at least 1")
    return arguments


if __name__ == "__main__":
    chosen = _arguments(sys.argv[1:])
    if chosen.fetch_batch is not None:
        sync_engine.FETCH_BATCH = chosen.fetch_batch
    asyncio.run(main(chosen.messages, chosen.only))
