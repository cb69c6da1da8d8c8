"""Outgoing-mail throughput: `portico worker` processes against a plain aiosmtplib loop.

    python -m bench.deliveries [MESSAGES [ROUNDS]] [--sink smtp-sink|aiosmtpd] [--profile DIR]

Queues MESSAGES (default 2,000) in a throwaway PostgreSQL database and lets 1, then 2 worker
processes deliver them to a local SMTP server, counted from the commit of the queue to the
last row marked SENT. In the same run, the very messages Portico sent (the same bytes: built
from the rows as the worker builds them, services/outbound/wire) are sent again to the same
server by a plain aiosmtplib loop in its own process, as bytes with their envelope
(`aiosmtplib.send(data, sender=…, recipients=…)`: no parsing or flattening in the loop),
with a new connection per message, in 1 and then 2 processes; for reference also one
process reusing a single connection (`sendmail`). Every run checks that each message
arrived exactly once.

The server (bench/sinks), by --sink:
- smtp-sink (the default): Postfix's SMTP test server, C, in its own process; it takes far
  more messages per second than any of the clients here sends, so it is not what is
  measured. Install: `DEBIAN_FRONTEND=noninteractive apt-get install -y postfix` (only
  /usr/sbin/smtp-sink is used; Postfix's own daemon need not run). Each message is dumped
  to a file of its own in tmpfs, from which the bench reads the Message-IDs.
- aiosmtpd (the test extras): a thread of this process. It accepts about 650 msg/s even
  from one reused connection, less than Portico's workers send: with it, the figures show
  the server's ceiling more than the clients (the bench's figures until issue 14's goals).

ROUNDS (default 1) runs the whole sequence again and reports medians, each round's figures
below them: on a shared machine a single round can be off by a factor of two.

Below the rates, the CPU time of each run per message (from /proc): the clients (workers or
baseline processes), PostgreSQL (the bench database's backends, and the server's own
processes, which also serve other work), the server's process, this process (its polling;
and aiosmtpd when that is the server), the clients' CPU time over the wall time (1.00: a
core's worth all the time), and how busy the whole machine was. Last, the ceiling these
CPU figures allow on the machine's cores when idle: 1 worker at most a core, and all the
CPU of a run within all the cores. On a loaded machine every runnable process gets a like
share of the cores, so 2 processes get about twice the share of 1: the rates' 2 / 1 then
measures the scheduler more than the workers, and the ceiling says more. --profile DIR runs
each worker under cProfile in CPU time (bench/profiled_worker: slower) and writes its
profile there when it stops.

Until issue 14 the baseline sent parsed EmailMessages (`send_message`, which flattens each
message again, about 1 ms): the byte loop is faster, so the ratios are stricter than before.

The ratio is Portico's messages per second divided by the baseline's (which is the same as
baseline time / Portico time): 1.0 is as fast as the plain loop, 0.5 half as fast. Portico's
N workers are compared with N baseline processes.

Needs PostgreSQL (PORTICO_BENCH_POSTGRES, default as in the tests), Linux (/proc), and
smtp-sink or the test extras (aiosmtpd). Never part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import aiosmtplib
import asyncpg
from tortoise import Tortoise
from tortoise.transactions import in_transaction

from bench import sinks
from bench.sinks import Sink
from models import DeliveryStatus, Firm, OutboundEmail
from portico import db
from portico.settings import Settings
from services.outbound import outbox
from services.outbound.wire import build_wire

POSTGRES_URL = os.environ.get("PORTICO_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"
CLIENT_FLAG = "--baseline-client"


def check_once(received: Counter[str], expected: set[str], what: str) -> None:
    if set(received) != expected or any(n != 1 for n in received.values()):
        twice = sum(1 for n in received.values() if n > 1)
        raise SystemExit(
            f"{what}: {sum(received.values())} received, {len(received)} distinct, "
            f"{len(expected - set(received))} missing, {twice} more than once"
        )


class Meter:
    """CPU time spent during one run, by whom: the clients (workers or baseline processes),
    PostgreSQL, the SMTP server's process, this process (its polling, and aiosmtpd when that
    is the server); and how busy the whole machine was."""

    PARTS = ("clients", "postgres", "sink", "bench")

    def __init__(self, sink: Sink, pids: list[int], database: str) -> None:
        self._sink, self._pids, self._database = sink, pids, database
        self._start = self._read()
        self._started = time.perf_counter()

    def _read(self) -> tuple[float, dict[int, float], float, float, tuple[float, float]]:
        return (
            sum(sinks.process_cpu(pid) for pid in self._pids),
            sinks.postgres_cpu(self._database),
            sinks.process_cpu(self._sink.pid) if self._sink.pid else 0.0,
            sum(os.times()[:2]),
            sinks.machine_cpu(),
        )

    def stop(self, count: int) -> dict[str, float]:
        """CPU milliseconds per message of each part; `cores`: the clients' CPU time over the
        wall time (1.0: one core's worth, all the time); `busy`: % of all cores in use. Read
        while the clients still live (a dead process's time is gone from /proc)."""
        wall = time.perf_counter() - self._started
        clients, postgres, sink, bench, (busy, total) = self._read()
        clients0, postgres0, sink0, bench0, (busy0, total0) = self._start
        # Backends that ended during the run are missed; the workers' stay connected.
        postgres_used = sum(t - postgres0.get(pid, 0.0) for pid, t in postgres.items())
        used = (clients - clients0, postgres_used, sink - sink0, bench - bench0)
        figures = {part: 1000 * value / count for part, value in zip(self.PARTS, used, strict=True)}
        figures["cores"] = (clients - clients0) / wall
        figures["busy"] = 100 * (busy - busy0) / (total - total0)
        return figures


def database(settings: Settings) -> str:
    return settings.resolved_database_url.rsplit("/", 1)[1]


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


def start_worker(
    url: str, smtp_url: str, folder: Path, index: int, profile: Path | None
) -> subprocess.Popen:
    """A worker process; under cProfile, writing to `profile`, if given."""
    env = {
        **os.environ,
        "PORTICO_DATABASE_URL": url,
        "PORTICO_SMTP_URL": smtp_url,
        "PORTICO_SECRET_KEY": SECRET,
        "PORTICO_VAR_DIR": str(folder),
        "PORTICO_WORKER_POLL_SECONDS": "0.1",
    }
    log = (folder / f"worker-{index}.log").open("wb")
    command = [sys.executable, "-m", "portico", "worker"]
    if profile is not None:  # written when the worker ends on SIGTERM (an orderly stop)
        command = [sys.executable, "-m", "bench.profiled_worker", str(profile)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stderr=log)


async def wait_started(folder: Path, index: int) -> None:
    log = folder / f"worker-{index}.log"
    for _ in range(600):
        if "mail delivery started" in log.read_text(errors="replace"):
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"worker {index} did not start:\n{log.read_text(errors='replace')}")


async def run_portico(
    settings: Settings, sink: Sink, count: int, workers: int, profile: Path | None
) -> tuple[float, dict[str, float]]:
    conn = Tortoise.get_connection("default")
    await conn.execute_script('TRUNCATE "outbound_email", "firm" RESTART IDENTITY CASCADE')
    sink.take()
    firm = await Firm.create(name="Bench LLP", slug="bench")
    url = settings.resolved_database_url
    smtp_url = f"smtp://127.0.0.1:{sink.port}"
    with tempfile.TemporaryDirectory() as folder:
        stamp = time.strftime("%H%M%S")
        processes = [
            start_worker(
                url,
                smtp_url,
                Path(folder),
                i,
                profile / f"{stamp}-{workers}-workers-{i}.prof" if profile else None,
            )
            for i in range(workers)
        ]
        try:
            for i in range(workers):
                await wait_started(Path(folder), i)
            await queue(settings, firm, count)
            meter = Meter(sink, [process.pid for process in processes], database(settings))
            started = time.perf_counter()
            while True:
                # The server's count first: polling PostgreSQL all along cost it about 2 ms
                # a poll (3,000 rows), CPU the workers need.
                if sink.started() >= count and (
                    await OutboundEmail.filter(status=DeliveryStatus.SENT).count() >= count
                ):
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            cpu = meter.stop(count)
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(30)
    rows = set(await OutboundEmail.all().values_list("message_id", flat=True))
    check_once(sink.take(), rows, f"portico, {workers} workers")
    return elapsed, cpu


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
    sys.stdin.readline()  # alive until measured: an exited process's CPU time is gone


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
    path: Path, sink: Sink, db_name: str, expected: set[str], processes: int, reuse: bool
) -> tuple[float, dict[str, float]]:
    sink.take()
    args = [str(path), "127.0.0.1", str(sink.port), "", str(processes), "1" if reuse else "0"]
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
    meter = Meter(sink, [client.pid for client in clients], db_name)
    started = time.perf_counter()
    for client in clients:
        client.stdin.write(b"go\n")  # type: ignore[union-attr]
        await client.stdin.drain()  # type: ignore[union-attr]
    for client in clients:
        assert (await client.stdout.readline()).strip() == b"done"  # type: ignore[union-attr]
    elapsed = time.perf_counter() - started
    cpu = meter.stop(len(expected))
    for client in clients:
        client.stdin.write(b"exit\n")  # type: ignore[union-attr]
        await client.stdin.drain()  # type: ignore[union-attr]
    for client in clients:
        if await client.wait():
            raise SystemExit(f"baseline client exited with {client.returncode}")
    what = f"baseline, {processes} process{'es' if processes > 1 else ''}"
    check_once(sink.take(), expected, what)
    return elapsed, cpu


Round = dict[str, tuple[float, dict[str, float]]]  # run name: (msg/s, CPU figures)


async def one_round(settings: Settings, sink: Sink, count: int, profile: Path | None) -> Round:
    """Each Portico run followed at once by its baselines on the same messages (so a change
    in the machine's load between them weighs less)."""
    runs: Round = {}
    for workers in (1, 2):
        elapsed, cpu = await run_portico(settings, sink, count, workers, profile)
        runs[f"portico{workers}"] = (count / elapsed, cpu)
        expected = set(await OutboundEmail.all().values_list("message_id", flat=True))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "messages.pickle"
            path.write_bytes(pickle.dumps(await messages_of_rows(settings)))
            elapsed, cpu = await run_baseline(
                path, sink, database(settings), expected, workers, reuse=False
            )
            runs[f"baseline{workers}"] = (count / elapsed, cpu)
            if workers == 1:
                elapsed, cpu = await run_baseline(
                    path, sink, database(settings), expected, 1, reuse=True
                )
                runs["reused"] = (count / elapsed, cpu)
    return runs


async def main(count: int, rounds: int, kind: str, profile: Path | None) -> None:
    sink = sinks.start(kind)
    name = f"portico_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(POSTGRES_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    settings = Settings(database_url=url, secret_key=SECRET, _env_file=None)
    runs: list[Round] = []
    try:
        await db.migrate(url)
        await db.init_db(url)
        for _ in range(rounds):
            runs.append(await one_round(settings, sink, count, profile))
        await db.close_db()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        sink.stop()
    report(runs, count, sink.label)


def report(runs: list[Round], count: int, sink: str) -> None:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    def rate(run: Round, key: str) -> float:
        return run[key][0]

    rates = {key: median([rate(run, key) for run in runs]) for key in runs[0]}
    ratio = {
        n: median([rate(run, f"portico{n}") / rate(run, f"baseline{n}") for run in runs])
        for n in (1, 2)
    }
    lines = [
        ("baseline: aiosmtplib.send loop, 1 process, a connection per message", "baseline1", 0),
        ("baseline: the same, 2 processes", "baseline2", 0),
        ("baseline: 1 process, one connection for all (reference only)", "reused", 0),
        ("portico:  1 worker", "portico1", ratio[1]),
        ("portico:  2 workers", "portico2", ratio[2]),
    ]
    rounds = f"median of {len(runs)} round{'s' if len(runs) > 1 else ''}"
    print(f"outgoing mail, {count} messages to a local SMTP server ({sink}), PostgreSQL; {rounds}")
    for label, key, value in lines:
        print(f"  {label:<70}{rates[key]:6.0f} msg/s" + (f"   ratio {value:.2f}" if value else ""))
    for label, top, bottom in (
        ("portico 1 worker / the reused connection", "portico1", "reused"),
        ("portico 2 workers / 1 worker", "portico2", "portico1"),
        ("baseline 2 processes / 1 process", "baseline2", "baseline1"),
    ):
        print(f"  {label}: {median([rate(run, top) / rate(run, bottom) for run in runs]):.2f}")
    for index, run in enumerate(runs, 1):
        figures = ", ".join(f"{key} {value:.0f}" for key, (value, _) in run.items())
        print(f"  round {index}: {figures}")
    print("  ratio: Portico msg/s / baseline msg/s, N workers against N baseline processes")
    print("         (the same as baseline time / Portico time; 1.00 = as fast as the plain loop)")
    print(
        f"CPU ms per message (medians; clients = the workers or baseline processes); the "
        f"clients' cores (CPU time / wall time); how busy the machine was (% of "
        f"{os.cpu_count()} cores, other work included):"
    )
    columns = (*Meter.PARTS, "cores", "busy")
    print(f"  {'':<12}" + "".join(f"{part:>10}" for part in columns[:-1]) + f"{'busy %':>10}")
    for key in runs[0]:
        parts = [median([run[key][1][part] for run in runs]) for part in columns]
        print(
            f"  {key:<12}"
            + "".join(f"{value:10.2f}" for value in parts[:-1])
            + f"{parts[-1]:10.0f}"
        )
    cores = os.cpu_count() or 1
    bounds = {key: ceiling(runs, key, cores) for key in ("portico1", "portico2")}
    print(
        f"  ceiling from these CPU figures on {cores} idle cores: 1 worker "
        f"{bounds['portico1']:.0f} msg/s, 2 workers {bounds['portico2']:.0f} msg/s, "
        f"2 / 1 at most {bounds['portico2'] / bounds['portico1']:.2f}"
    )


def ceiling(runs: list[Round], key: str, cores: int) -> float:
    """The most msg/s the run's CPU per message allows: each client busy on a core of its
    own at most, and all of the run's CPU time (clients, PostgreSQL, the server, this
    process) within the machine's cores."""
    clients = int(key[-1])

    def ms(part: str) -> float:
        return statistics.median([run[key][1][part] for run in runs])

    total = sum(ms(part) for part in Meter.PARTS)
    return min(clients * 1000 / ms("clients"), cores * 1000 / total)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.deliveries")
    parser.add_argument("messages", nargs="?", type=int, default=2000)
    parser.add_argument("rounds", nargs="?", type=int, default=1)
    parser.add_argument(
        "--sink", choices=(sinks.SMTP_SINK, sinks.AIOSMTPD), default=sinks.SMTP_SINK
    )
    parser.add_argument(
        "--profile", type=Path, help="a folder: each worker runs under cProfile and writes here"
    )
    return parser.parse_args()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CLIENT_FLAG:
        client_main(*sys.argv[2:8])
    else:
        args = arguments()
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
        asyncio.run(main(args.messages, args.rounds, args.sink, args.profile))
