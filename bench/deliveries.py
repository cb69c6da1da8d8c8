"""Outgoing-mail throughput: one `portico worker` process against two, on PostgreSQL.

    python -m bench.deliveries [MESSAGES]

Queues MESSAGES (default 2,000) in a throwaway PostgreSQL database, lets 1 then 2 worker
processes deliver them to a local aiosmtpd server, and prints messages per second, counted
from the commit of the queue to the last row marked SENT. It also checks that every message
arrived exactly once. Needs PostgreSQL (PORTICO_BENCH_POSTGRES, default as in the tests)
and the test extras (aiosmtpd).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from tortoise import Tortoise
from tortoise.transactions import in_transaction

from models import DeliveryStatus, Firm, OutboundEmail
from portico import db
from portico.settings import Settings
from services import outbox

POSTGRES_URL = os.environ.get("PORTICO_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"


async def queue(settings: Settings, firm: Firm, count: int) -> None:
    async with in_transaction():
        for i in range(count):
            await outbox.enqueue(
                firm_id=firm.pk,
                firm_name=firm.name,
                to=f"client{i}@example.com",
                template="staff_password",
                context={
                    "firm_name": firm.name,
                    "member_name": f"Member {i}",
                    "link": f"https://portal.example/p?token={i}",
                    "expires_at": datetime(2030, 1, 1, tzinfo=UTC),
                },
                kind="staff_password",
                settings=settings,
            )


def start_worker(url: str, smtp_url: str, folder: Path, index: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PORTICO_DATABASE_URL": url,
        "PORTICO_SMTP_URL": smtp_url,
        "PORTICO_SECRET_KEY": SECRET,
        "PORTICO_VAR_DIR": str(folder),
        "PORTICO_WORKER_POLL_SECONDS": "0.1",
    }
    log = (folder / f"worker-{index}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "portico", "worker"], cwd=ROOT, env=env, stderr=log
    )


async def wait_started(folder: Path, index: int) -> None:
    log = folder / f"worker-{index}.log"
    for _ in range(600):
        if "mail delivery started" in log.read_text(errors="replace"):
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"worker {index} did not start:\n{log.read_text(errors='replace')}")


async def run(url: str, smtp_url: str, received: list, count: int, workers: int) -> float:
    conn = Tortoise.get_connection("default")
    await conn.execute_script('TRUNCATE "outbound_email", "firm" RESTART IDENTITY CASCADE')
    received.clear()
    settings = Settings(database_url=url, secret_key=SECRET, _env_file=None)
    firm = await Firm.create(name="Bench LLP", slug="bench")
    with tempfile.TemporaryDirectory() as folder:
        processes = [start_worker(url, smtp_url, Path(folder), i) for i in range(workers)]
        try:
            for i in range(workers):
                await wait_started(Path(folder), i)
            await queue(settings, firm, count)
            started = time.perf_counter()
            while True:
                if await OutboundEmail.filter(status=DeliveryStatus.SENT).count() >= count:
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(30)
    ids = {message["Message-ID"] for message in received}
    if len(received) != count or len(ids) != count:
        raise SystemExit(f"{workers} workers: {len(received)} received, {len(ids)} distinct")
    return elapsed


async def main(count: int) -> None:
    from aiosmtpd.controller import Controller

    received: list = []

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            from email import message_from_bytes, policy

            received.append(message_from_bytes(envelope.content, policy=policy.default))  # type: ignore[attr-defined]
            return "250 OK"

    with socket.socket() as sock:  # a free port (aiosmtpd cannot start on port 0)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    smtp_url = f"smtp://127.0.0.1:{port}"
    name = f"portico_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(POSTGRES_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        await db.migrate(url)
        await db.init_db(url)
        print(f"outgoing mail, {count} messages to a local SMTP server (aiosmtpd)")
        for workers in (1, 2):
            elapsed = await run(url, smtp_url, received, count, workers)
            print(f"  {workers} worker{'s' if workers > 1 else ' '}  {count / elapsed:8.0f} msg/s")
        await db.close_db()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        controller.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
