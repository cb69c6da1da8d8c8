"""Outgoing-mail throughput: `portico worker` processes against a plain aiosmtplib loop.

    python -m bench.deliveries [MESSAGES [ROUNDS]]

Queues MESSAGES (default 2,000) in a throwaway PostgreSQL database and lets 1, then 2 worker
processes deliver them to a local aiosmtpd server (a thread of this process), counted from
the commit of the queue to the last row marked SENT. In the same run, the very messages
Portico sent (the same bytes: built from the rows as the worker builds them, services/
outbound/wire) are sent again to the same server by a plain aiosmtplib loop in its own
process, as bytes with their envelope (`aiosmtplib.send(data, sender=…, recipients=…)`: no
parsing or flattening in the loop), with a new connection per message, in 1 and then 2
processes; for reference also one process reusing a single connection (`sendmail`). Every
run checks that each message arrived exactly once.

ROUNDS (default 1) runs the whole sequence again and reports medians, each round's figures
below them: on a shared machine a single round can be off by a factor of two.

Until issue 14 the baseline sent parsed EmailMessages (`send_message`, which flattens each
message again, about 1 ms): the byte loop is faster, so the ratios are stricter than before.

The ratio is Portico's messages per second divided by the baseline's (which is the same as
baseline time / Portico time): 1.0 is as fast as the plain loop, 0.5 half as fast. Portico's
N workers are compared with N baseline processes.

Needs PostgreSQL (PORTICO_BENCH_POSTGRES, default as in the tests) and the test extras
(aiosmtpd). Never part of `make test`.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg
from tortoise import Tortoise
from tortoise.transactions import in_transaction

from models import DeliveryStatus, Firm, OutboundEmail
from portico import db
from portico.settings import Settings
from services.outbound import outbox
from services.outbound.wire import build_wire

POSTGRES_URL = os.environ.get("PORTICO_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"
CLIENT_FLAG = "--baseline-client"


class Server:
    """aiosmtpd handler: counts the Message-IDs it accepts (headers only: cheap, and the same
    work whoever the client is)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: Counter[str] = Counter()
        self._parser = BytesHeaderParser(policy=policy.compat32)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message_id = str(self._parser.parsebytes(envelope.content)["Message-ID"])
        with self._lock:
            self._ids[message_id] += 1
        return "250 OK"

    def take(self) -> Counter[str]:
        with self._lock:
            ids, self._ids = self._ids, Counter()
        return ids


def check_once(received: Counter[str], expected: set[str], what: str) -> None:
    if set(received) != expected or any(n != 1 for n in received.values()):
        twice = sum(1 for n in received.values() if n > 1)
        raise SystemExit(
            f"{what}: {sum(received.values())} received, {len(received)} distinct, "
            f"{len(expected - set(received))} missing, {twice} more than once"
        )


# Portico: worker processes draining the outbox.


async def queue(settings: Settings, firm: Firm, count: int) -> None:
    mails = [
        outbox.Mail(
            to=f"client{i}@example.com",
            template="staff_password",
            context={
                "firm_name": firm.name,
                "member_name": f"Member {i}",
                "link": f"https://portal.example/p?token={i}",
                "expires_at": datetime(2030, 1, 1, tzinfo=UTC),
            },
            kind="STAFF_ONBOARDING",  # as services.firm queues a password link
        )
        for i in range(count)
    ]
    async with in_transaction():
        await outbox.enqueue_many(firm.pk, firm.name, mails, settings)


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


async def run_portico(
    settings: Settings, smtp_url: str, server: Server, count: int, workers: int
) -> float:
    conn = Tortoise.get_connection("default")
    await conn.execute_script('TRUNCATE "outbound_email", "firm" RESTART IDENTITY CASCADE')
    server.take()
    firm = await Firm.create(name="Bench LLP", slug="bench")
    url = settings.resolved_database_url
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
    rows = set(await OutboundEmail.all().values_list("message_id", flat=True))
    check_once(server.take(), rows, f"portico, {workers} workers")
    return elapsed


async def messages_of_rows(settings: Settings) -> list[tuple[str, str, bytes]]:
    """The messages as the worker sends them (decrypted bodies, build_wire): envelope and
    bytes."""
    rows = await OutboundEmail.all().order_by("id")
    wires = [build_wire(row, outbox.decrypt_bodies(settings, row), settings) for row in rows]
    return [(wire.sender, wire.recipient, wire.data) for wire in wires]


# Baseline: a plain aiosmtplib loop in its own process (as a worker is).


def client_main(path: str, host: str, port: str, part: str, parts: str, reuse: str) -> None:
    """The baseline process: load its share of the messages, say ready, send on 'go'."""
    messages = pickle.loads(Path(path).read_bytes())[int(part) :: int(parts)]
    print("ready", flush=True)
    sys.stdin.readline()
    asyncio.run(send_all(messages, host, int(port), reuse == "1"))
    print("done", flush=True)


async def send_all(
    messages: list[tuple[str, str, bytes]], host: str, port: int, reuse: bool
) -> None:
    if reuse:
        async with aiosmtplib.SMTP(hostname=host, port=port) as smtp:
            for sender, recipient, data in messages:
                await smtp.sendmail(sender, [recipient], data)
    else:
        for sender, recipient, data in messages:
            await aiosmtplib.send(
                data, sender=sender, recipients=[recipient], hostname=host, port=port
            )


async def run_baseline(
    path: Path, port: int, server: Server, expected: set[str], processes: int, reuse: bool
) -> float:
    server.take()
    args = [str(path), "127.0.0.1", str(port), "", str(processes), "1" if reuse else "0"]
    clients = []
    for part in range(processes):
        args[3] = str(part)
        clients.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.deliveries",
                CLIENT_FLAG,
                *args,
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        )
    for client in clients:
        assert (await client.stdout.readline()).strip() == b"ready"  # type: ignore[union-attr]
    started = time.perf_counter()
    for client in clients:
        client.stdin.write(b"go\n")  # type: ignore[union-attr]
        await client.stdin.drain()  # type: ignore[union-attr]
    for client in clients:
        assert (await client.stdout.readline()).strip() == b"done"  # type: ignore[union-attr]
    elapsed = time.perf_counter() - started
    for client in clients:
        if await client.wait():
            raise SystemExit(f"baseline client exited with {client.returncode}")
    what = f"baseline, {processes} process{'es' if processes > 1 else ''}"
    check_once(server.take(), expected, what)
    return elapsed


async def one_round(
    settings: Settings, smtp_url: str, port: int, server: Server, count: int
) -> dict[str, float]:
    """Each Portico run followed at once by its baselines on the same messages (so a change
    in the machine's load between them weighs less); msg/s by name."""
    rates: dict[str, float] = {}
    for workers in (1, 2):
        rates[f"portico{workers}"] = count / await run_portico(
            settings, smtp_url, server, count, workers
        )
        expected = set(await OutboundEmail.all().values_list("message_id", flat=True))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "messages.pickle"
            path.write_bytes(pickle.dumps(await messages_of_rows(settings)))
            rates[f"baseline{workers}"] = count / await run_baseline(
                path, port, server, expected, workers, reuse=False
            )
            if workers == 1:
                rates["reused"] = count / await run_baseline(
                    path, port, server, expected, 1, reuse=True
                )
    return rates


async def main(count: int, rounds: int) -> None:
    from aiosmtpd.controller import Controller

    server = Server()
    with socket.socket() as sock:  # a free port (aiosmtpd cannot start on port 0)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(server, hostname="127.0.0.1", port=port)
    controller.start()
    smtp_url = f"smtp://127.0.0.1:{port}"
    name = f"portico_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(POSTGRES_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    settings = Settings(database_url=url, secret_key=SECRET, _env_file=None)
    runs = []
    try:
        await db.migrate(url)
        await db.init_db(url)
        for _ in range(rounds):
            runs.append(await one_round(settings, smtp_url, port, server, count))
        await db.close_db()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        controller.stop()

    def median(values: list[float]) -> float:
        return statistics.median(values)

    rate = {key: median([run[key] for run in runs]) for key in runs[0]}
    ratio = {n: median([run[f"portico{n}"] / run[f"baseline{n}"] for run in runs]) for n in (1, 2)}
    lines = [
        ("baseline: aiosmtplib.send loop, 1 process, a connection per message", "baseline1", 0),
        ("baseline: the same, 2 processes", "baseline2", 0),
        ("baseline: 1 process, one connection for all (reference only)", "reused", 0),
        ("portico:  1 worker", "portico1", ratio[1]),
        ("portico:  2 workers", "portico2", ratio[2]),
    ]
    print(
        f"outgoing mail, {count} messages to a local SMTP server (aiosmtpd), PostgreSQL; "
        f"median of {rounds} round{'s' if rounds > 1 else ''}"
    )
    for label, key, value in lines:
        print(f"  {label:<70}{rate[key]:6.0f} msg/s" + (f"   ratio {value:.2f}" if value else ""))
    reuse = median([run["portico1"] / run["reused"] for run in runs])
    scaling = median([run["portico2"] / run["portico1"] for run in runs])
    print(f"  portico 1 worker / the reused connection: {reuse:.2f}")
    print(f"  portico 2 workers / 1 worker: {scaling:.2f}")
    for index, run in enumerate(runs, 1):
        print(f"  round {index}: " + ", ".join(f"{key} {value:.0f}" for key, value in run.items()))
    print("  ratio: Portico msg/s / baseline msg/s, N workers against N baseline processes")
    print("         (the same as baseline time / Portico time; 1.00 = as fast as the plain loop)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CLIENT_FLAG:
        client_main(*sys.argv[2:8])
    else:
        count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
        asyncio.run(main(count, int(sys.argv[2]) if len(sys.argv) > 2 else 1))
