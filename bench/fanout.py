"""Live mail fan-out: 1,000 WebSocket subscribers of `messageSynced`, one stored message.

    python -m bench.fanout [SUBSCRIBERS] [EVENTS]

Starts `portico serve` (one uvicorn process, a fresh SQLite database with the demo firm,
events through Redis at PORTICO_BENCH_REDIS, default redis://127.0.0.1:6379/0), opens
SUBSCRIBERS (default 1,000) graphql-transport-ws connections signed in as the demo owner,
each subscribed to `messageSynced { id subject }`. Then, EVENTS (default 20) times: stores a
message linked to a demo account (committed) and publishes its event exactly as the sync
engine does, and records when each subscriber receives it. Reported: the time from the
publish after the commit to the LAST subscriber's delivery (p50/p99 over the events), and
the same for every single delivery, and the server's memory (resident size, over
SUBSCRIBERS): per open, acknowledged WebSocket connection, then per idle subscription on it
(after the warm-up events). Never part of `make test`.

Subscribers with the same document and visibility share one execution per event
(resolvers/fanout.py): each one's cost is writing the encoded message to its socket.
PORTICO_BENCH_DEFLATE=0 makes the clients decline permessage-deflate (browsers offer it; the
server then compresses every message for every socket), to see what compression costs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
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
CONNECT_BATCH = 100  # connections opened at once
DEFLATE = os.environ.get("PORTICO_BENCH_DEFLATE", "1") != "0"


def rss_bytes(pid: int) -> int:
    """The resident size of a process (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def start(folder: Path, database_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTICO_")}
    env.update(
        PORTICO_VAR_DIR=str(folder / "var"),
        PORTICO_DATABASE_URL=database_url,
        PORTICO_REDIS_URL=REDIS_URL,
        PORTICO_ENV="development",
    )
    log = (folder / "portico.log").open("wb")
    process = subprocess.Popen(
        [*portico_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=log,
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
    raise RuntimeError((folder / "portico.log").read_text())


async def subscriber(
    url: str, token: str, go: asyncio.Event, ready: asyncio.Event, arrivals: dict[int, float]
):
    """One client: connects, subscribes once `go` is set, then notes when each message id
    arrives."""
    compression = "deflate" if DEFLATE else None
    async with websockets.connect(
        url, subprotocols=["graphql-transport-ws"], max_queue=None, compression=compression
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        ready.set()
        await go.wait()
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE}}))
        async for raw in ws:
            now = time.perf_counter()
            message = json.loads(raw)
            if message["type"] == "next":
                arrivals[int(message["payload"]["data"]["messageSynced"]["subject"])] = now
            elif message["type"] in ("error", "complete"):
                raise RuntimeError(message)


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
    published = time.perf_counter()
    event = {"kind": "message.synced", "messageId": message.pk, "accountIds": [account.pk]}
    await bus.publish(firm_channel(account.firm_id), event)
    return published


async def main(count: int, events: int) -> None:
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        database_url = f"sqlite://{folder / 'portico.sqlite3'}"
        process, url = start(folder, database_url)
        bus = RedisBus(REDIS_URL)
        try:
            async with httpx.AsyncClient(base_url=url) as http:
                variables = {"f": DEMO_FIRM, "e": DEMO_OWNER_EMAIL, "p": DEMO_PASSWORD}
                answer = await http.post(
                    "/graphql", json={"query": SIGN_IN, "variables": variables}
                )
                token = answer.json()["data"]["staffSignIn"]["token"]
            await db.init_db(database_url)
            account = await Account.all().order_by("id").first()
            assert account is not None
            ws_url = url.replace("http://", "ws://") + "/graphql"
            arrivals: list[dict[int, float]] = [{} for _ in range(count)]
            readies = [asyncio.Event() for _ in range(count)]
            go = asyncio.Event()
            tasks = []
            rss_before = rss_bytes(process.pid)
            for start_at in range(0, count, CONNECT_BATCH):
                for i in range(start_at, min(count, start_at + CONNECT_BATCH)):
                    tasks.append(
                        asyncio.create_task(subscriber(ws_url, token, go, readies[i], arrivals[i]))
                    )
                await asyncio.gather(
                    *(r.wait() for r in readies[start_at : start_at + CONNECT_BATCH])
                )
            await asyncio.sleep(1.0)
            rss_connected = rss_bytes(process.pid)
            go.set()
            # A subscription is live on the server only some time after its `subscribe`:
            # warm-up events (negative numbers) until every subscriber has had one.
            warm = 0
            while not all(any(k < 0 for k in a) for a in arrivals):
                warm -= 1
                await announce(account, str(warm), bus)
                await asyncio.sleep(1.0)

            await asyncio.sleep(1.0)
            rss_subscribed = rss_bytes(process.pid)
            per_connection = (rss_connected - rss_before) / count
            per_subscription = (rss_subscribed - rss_connected) / count
            last: list[float] = []
            each: list[float] = []
            for n in range(events):
                published = await announce(account, str(n), bus)
                deadline = time.monotonic() + 60
                while sum(n in a for a in arrivals) < count:
                    if time.monotonic() > deadline:
                        missing = count - sum(n in a for a in arrivals)
                        raise RuntimeError(f"event {n}: {missing} subscribers got nothing")
                    await asyncio.sleep(0.005)
                times = [a[n] - published for a in arrivals]
                last.append(max(times))
                each.extend(times)
                await asyncio.sleep(0.2)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await bus.close()
            await db.close_db()
            process.terminate()
            process.wait(10)

    def pct(values: list[float], p: float) -> float:
        return statistics.quantiles(values, n=100)[int(p) - 1] * 1000

    print(f"fan-out: {count} WebSocket subscribers of messageSynced, {events} events")
    print("(one uvicorn process, SQLite, events through Redis; from publish to delivery)")
    print(f"  last subscriber   p50 {pct(last, 50):7.1f} ms   p99 {pct(last, 99):7.1f} ms")
    print(f"  every delivery    p50 {pct(each, 50):7.1f} ms   p99 {pct(each, 99):7.1f} ms")
    deflate = "permessage-deflate" if DEFLATE else "no compression"
    print(
        f"  server memory ({deflate}): {per_connection / 1024:.1f} KB per connection, "
        f"{per_subscription / 1024:.1f} KB per idle subscription on it"
    )


if __name__ == "__main__":
    subscribers = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    events = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    asyncio.run(main(subscribers, events))
