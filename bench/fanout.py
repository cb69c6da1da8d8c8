"""Live mail fan-out: WebSocket subscribers of `messageSynced`, one stored message at a time.

    python -m bench.fanout [SUBSCRIBERS] [EVENTS] [--processes N] [--clients M]

Starts N (default 1) `portico serve` processes (each one uvicorn process, all on one fresh
SQLite database with the demo firm, events through Redis at PORTICO_BENCH_REDIS, default
redis://127.0.0.1:6379/0), and M (default 1) client processes that open SUBSCRIBERS
(default 1,000) graphql-transport-ws connections between them, spread evenly over the
servers, signed in as the demo owner, each subscribed to `messageSynced { id subject }`.
Then, EVENTS (default 20) times: stores a message linked to a demo account (committed) and
publishes its event exactly as the sync engine does, and records when each subscriber
receives it (CLOCK_MONOTONIC, which every process reads alike). Reported: the time from
the publish after the commit to the LAST subscriber's delivery (p50/p99 over the events),
the same for every single delivery, and the servers' memory (resident size, summed over
the servers, over SUBSCRIBERS): per open, acknowledged WebSocket connection, then per idle
subscription on it (after the warm-up events). Never part of `make test`.

Subscribers with the same document and visibility share one execution per event in each
server (resolvers/fanout.py): each one's cost is writing the encoded message to its socket.
Client processes of their own keep the clients' work (10,000 sockets' frames to read and
parse) out of the servers' way as far as the cores allow: on a machine with few cores, the
clients compete with the servers for them, and the figures say so ("cores").
PORTICO_BENCH_DEFLATE=0 makes the clients decline permessage-deflate (browsers offer it; the
server then compresses every message for every socket), to see what compression costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import resource
import secrets
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
import websockets

from models import Account, Message, MessageAccount
from portico import db
from services.shared.pubsub import RedisBus, firm_channel
from tests.support.server import (
    DEMO_FIRM,
    DEMO_OWNER_EMAIL,
    DEMO_PASSWORD,
    free_port,
    portico_command,
)

REDIS_URL = os.environ.get("PORTICO_BENCH_REDIS", "redis://127.0.0.1:6379/0")
SIGN_IN = """mutation($f: String!, $e: String!, $p: String!) {
  staffSignIn(firm: $f, email: $e, password: $p) { token } }"""
SUBSCRIBE = "subscription { messageSynced { id subject } }"
CONNECT_BATCH = 100  # connections a client process opens at once
DEFLATE = os.environ.get("PORTICO_BENCH_DEFLATE", "1") != "0"
EVENT_TIMEOUT = 60.0


def rss_bytes(pid: int) -> int:
    """The resident size of a process (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (Linux): what a run costs, however
    busy the machine was."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def more_files() -> None:
    """As many open files as allowed: 10,000 sockets are over the usual soft limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start(folder: Path, database_url: str, n: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTICO_")}
    env.update(
        PORTICO_VAR_DIR=str(folder / "var"),
        PORTICO_DATABASE_URL=database_url,
        PORTICO_REDIS_URL=REDIS_URL,
        PORTICO_ENV="development",
    )
    log_path = folder / f"portico-{n}.log"
    process = subprocess.Popen(
        [*portico_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(log_path.read_text())


# A client process --------------------------------------------------------------------------


def client_process(urls: list[str], token: str, count: int, pipe: Connection) -> None:
    """Opens `count` subscribers spread over `urls`; says "connected", waits for "go",
    subscribes them, then sends ("done", n, arrival times) once every one of them has
    received event n; ends at "stop"."""
    more_files()
    logging.disable(logging.INFO)
    asyncio.run(_clients(urls, token, count, pipe))


async def _clients(urls: list[str], token: str, count: int, pipe: Connection) -> None:
    arrivals: list[dict[int, float]] = [{} for _ in range(count)]
    received: dict[int, int] = {}
    readies = [asyncio.Event() for _ in range(count)]
    go = asyncio.Event()
    failures: list[BaseException] = []

    def arrived(i: int, n: int, now: float) -> None:
        arrivals[i][n] = now
        received[n] = received.get(n, 0) + 1
        if received[n] == count:
            pipe.send(("done", n, [a[n] for a in arrivals]))

    async def one(i: int) -> None:
        try:
            await subscriber(urls[i % len(urls)], token, go, readies[i], i, arrived)
        except Exception as exc:
            failures.append(exc)
            readies[i].set()

    tasks = []
    for start_at in range(0, count, CONNECT_BATCH):
        batch = range(start_at, min(count, start_at + CONNECT_BATCH))
        tasks += [asyncio.create_task(one(i)) for i in batch]
        await asyncio.gather(*(readies[i].wait() for i in batch))
    pipe.send(("connected", [repr(f) for f in failures[:3]]))
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, pipe.recv) != "go":
        pass
    go.set()
    while await loop.run_in_executor(None, pipe.recv) != "stop":
        pass
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send(("stopped", [repr(f) for f in failures[:3]]))


async def subscriber(
    url: str,
    token: str,
    go: asyncio.Event,
    ready: asyncio.Event,
    i: int,
    arrived: Callable[[int, int, float], None],
) -> None:
    """One client: connects, subscribes once `go` is set, then notes when each message
    arrives (its subject is the event's number)."""
    compression = "deflate" if DEFLATE else None
    ws_url = url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(
        ws_url,
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        max_queue=None,
        compression=compression,
        open_timeout=60,
        ping_interval=None,  # 10,000 clients' pings would be load of their own
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        ready.set()
        await go.wait()
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE}}))
        async for raw in ws:
            now = time.monotonic()
            message = json.loads(raw)
            if message["type"] == "next":
                arrived(i, int(message["payload"]["data"]["messageSynced"]["subject"]), now)
            elif message["type"] in ("error", "complete"):
                raise RuntimeError(message)


# The run -------------------------------------------------------------------------------------


async def announce(account: Account, subject: str, bus: RedisBus) -> float:
    """Stores a message of `account` (committed), then publishes its event as the sync engine
    does; the moment of publishing."""
    message = await Message.create(
        firm_id=account.firm_id,
        message_id=f"<fanout.{secrets.token_hex(8)}@bench.example>",
        message_key=secrets.token_hex(32),
        thread_key=secrets.token_hex(32),
        subject=subject,
        from_address="client@bench.example",
        sent_at=datetime.now(UTC),
        direction="INBOUND",
    )
    await MessageAccount.create(
        firm_id=account.firm_id,
        message_id=message.pk,
        account_id=account.pk,
        sent_at=message.sent_at,
    )
    published = time.monotonic()
    event = {"kind": "message.synced", "messageId": message.pk, "accountIds": [account.pk]}
    await bus.publish(firm_channel(account.firm_id), event)
    return published


class Clients:
    """The client processes, and what they report."""

    def __init__(self, urls: list[str], token: str, count: int, processes: int) -> None:
        spawn = multiprocessing.get_context("spawn")  # no copy of this process's event loop
        shares = [count // processes + (k < count % processes) for k in range(processes)]
        self.pipes: list[Connection] = []
        self.processes = []
        for share in shares:
            ours, theirs = spawn.Pipe()
            process = spawn.Process(target=client_process, args=(urls, token, share, theirs))
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)
        self.done: dict[int, list[list[float]]] = {}

    async def expect(self, kind: str, within: float) -> list[object]:
        """Each process's next message of `kind` (what each said with it)."""
        said = []
        for pipe in self.pipes:
            message = await self._receive(pipe, kind, time.monotonic() + within)
            said.append(message[1])
        return said

    async def _receive(self, pipe: Connection, kind: str, deadline: float) -> tuple:
        while time.monotonic() < deadline:
            while pipe.poll():
                message = pipe.recv()
                if message[0] == "done":
                    self.done.setdefault(message[1], []).append(message[2])
                elif message[0] == kind:
                    return message
            await asyncio.sleep(0.002)
        raise RuntimeError(f"the clients said no {kind!r} in time")

    def poll(self) -> None:
        for pipe in self.pipes:
            while pipe.poll():
                message = pipe.recv()
                if message[0] == "done":
                    self.done.setdefault(message[1], []).append(message[2])

    def everyone_has(self, n: int) -> bool:
        self.poll()
        return len(self.done.get(n, ())) == len(self.pipes)

    def send(self, word: str) -> None:
        for pipe in self.pipes:
            pipe.send(word)

    def stop(self) -> None:
        for process in self.processes:
            process.join(30)
            if process.is_alive():
                process.kill()


async def main(count: int, events: int, servers: int, client_processes: int) -> None:
    logging.disable(logging.INFO)
    more_files()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        database_url = f"sqlite://{folder / 'portico.sqlite3'}"
        started = [start(folder, database_url, 0)]  # the first one makes the database
        started += [start(folder, database_url, n) for n in range(1, servers)]
        pids = [process.pid for process, _ in started]
        urls = [url for _, url in started]
        bus = RedisBus(REDIS_URL)
        clients: Clients | None = None
        try:
            async with httpx.AsyncClient(base_url=urls[0]) as http:
                variables = {"f": DEMO_FIRM, "e": DEMO_OWNER_EMAIL, "p": DEMO_PASSWORD}
                answer = await http.post(
                    "/graphql", json={"query": SIGN_IN, "variables": variables}
                )
                token = answer.json()["data"]["staffSignIn"]["token"]
            await db.init_db(database_url)
            account = await Account.all().order_by("id").first()
            assert account is not None

            def rss() -> int:
                return sum(rss_bytes(pid) for pid in pids)

            rss_before = rss()
            clients = Clients(urls, token, count, client_processes)
            failed = await clients.expect("connected", 600)
            if any(failed):
                raise RuntimeError(f"some clients could not connect: {failed}")
            await asyncio.sleep(1.0)
            rss_connected = rss()
            clients.send("go")
            # A subscription is live on the server only some time after its `subscribe`:
            # warm-up events (negative numbers) until every subscriber has had one.
            warm = 0
            while not any(clients.everyone_has(k) for k in range(warm, 0)):
                warm -= 1
                await announce(account, str(warm), bus)
                await asyncio.sleep(1.0 + count / 5000)
            await asyncio.sleep(1.0)
            rss_subscribed = rss()
            per_connection = (rss_connected - rss_before) / count
            per_subscription = (rss_subscribed - rss_connected) / count
            last: list[float] = []
            each: list[float] = []
            client_pids = [process.pid for process in clients.processes]
            server_cpu = sum(cpu_seconds(pid) for pid in pids)
            client_cpu = sum(cpu_seconds(pid) for pid in client_pids)
            for n in range(events):
                published = await announce(account, str(n), bus)
                deadline = time.monotonic() + EVENT_TIMEOUT
                while not clients.everyone_has(n):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"event {n}: not every subscriber got it")
                    await asyncio.sleep(0.002)
                times = [t - published for share in clients.done[n] for t in share]
                last.append(max(times))
                each.extend(times)
                await asyncio.sleep(0.2 + count / 20000)
            # Idle between events costs next to nothing: this is the events' work.
            server_cpu = (sum(cpu_seconds(pid) for pid in pids) - server_cpu) / events
            client_cpu = (sum(cpu_seconds(pid) for pid in client_pids) - client_cpu) / events
        finally:
            if clients is not None:
                clients.send("stop")
                clients.stop()
            await bus.close()
            await db.close_db()
            for process, _ in started:
                process.terminate()
                process.wait(10)

    def pct(values: list[float], p: float) -> float:
        return statistics.quantiles(values, n=100)[int(p) - 1] * 1000

    print(
        f"fan-out: {count} WebSocket subscribers of messageSynced, {events} events, "
        f"{servers} server process(es), {client_processes} client process(es), "
        f"{os.cpu_count()} cores"
    )
    print("(uvicorn, SQLite, events through Redis; from publish to delivery)")
    print(f"  last subscriber   p50 {pct(last, 50):7.1f} ms   p99 {pct(last, 99):7.1f} ms")
    print(f"  every delivery    p50 {pct(each, 50):7.1f} ms   p99 {pct(each, 99):7.1f} ms")
    print(
        f"  CPU per event     servers {server_cpu * 1000:7.1f} ms   "
        f"clients {client_cpu * 1000:7.1f} ms   (summed over the processes)"
    )
    deflate = "permessage-deflate" if DEFLATE else "no compression"
    print(
        f"  server memory ({deflate}): {per_connection / 1024:.1f} KB per connection, "
        f"{per_subscription / 1024:.1f} KB per idle subscription on it"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("subscribers", type=int, nargs="?", default=1000)
    parser.add_argument("events", type=int, nargs="?", default=20)
    parser.add_argument("--processes", type=int, default=1, help="portico serve processes")
    parser.add_argument("--clients", type=int, default=1, help="client processes")
    args = parser.parse_args()
    asyncio.run(main(args.subscribers, args.events, args.processes, args.clients))
