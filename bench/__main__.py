"""The nested accounts query through the whole stack, against a hand-written baseline.

Both run in this process on the same SQLite data: the baseline fetches the same rows with
three plain SQL statements and serialises them with orjson, the least work any server could
do for this answer. The ratio (Portico time / baseline time) is what to watch over time.
Portico is measured twice: through httpx's ASGI transport (a whole HTTP client's request
building and response reading counted as Portico's), and called as uvicorn calls the ASGI
app (one scope, the body received once, the response collected), which leaves out the
client's work that the baseline has no counterpart for. Both answers are checked equal.
They take turns, round after round, and each reports the median of its wall time and of its
CPU time: on a shared machine other processes stretch wall time, hardly CPU time.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
from starlette.types import ASGIApp
from tortoise import Tortoise

from portico import db, heap
from portico.app import create_app
from portico.settings import Settings
from services.crm import records
from services.firm import firms
from services.shared import sessions
from services.shared.scope import FirmScope

ACCOUNTS = 50
ROUNDS = 60
QUERY = """{ accounts(first: 50) { edges { node {
  contacts { emailAddresses { address } } emails { login emailAddress { address } } } } } }"""


async def seed(scope: FirmScope) -> None:
    for i in range(ACCOUNTS):
        account = await records.create_account(scope, f"Account {i:03}", "FAMILY")
        for j in range(2):
            await records.create_contact(
                scope,
                f"First{i}",
                f"Last{j}",
                emails=[
                    records.NewAddress(f"a{i}-{j}@x.example"),
                    records.NewAddress(f"b{i}-{j}@x.example", "Work"),
                ],
                account_ids=[account.pk],
            )


async def baseline(firm_id: int) -> bytes:
    conn = Tortoise.get_connection("default")
    _, accounts = await conn.execute_query(
        "SELECT id FROM account WHERE firm_id = ? ORDER BY lower(name), id LIMIT 50", [firm_id]
    )
    ids = [row["id"] for row in accounts]
    marks = ",".join("?" * len(ids))
    _, links = await conn.execute_query(
        f"SELECT ac.account_id, e.address FROM account_contact ac JOIN email_address e "
        f"ON e.contact_id = ac.contact_id WHERE ac.account_id IN ({marks})",
        ids,
    )
    _, emails = await conn.execute_query(
        f"SELECT ae.account_id, ae.login, e.address FROM account_email ae JOIN email_address e "
        f"ON e.id = ae.email_address_id WHERE ae.account_id IN ({marks})",
        ids,
    )
    by_account: dict[int, dict[str, list]] = defaultdict(lambda: {"contacts": [], "emails": []})
    for row in links:
        by_account[row["account_id"]]["contacts"].append({"address": row["address"]})
    for row in emails:
        by_account[row["account_id"]]["emails"].append(
            {"login": bool(row["login"]), "emailAddress": {"address": row["address"]}}
        )
    return orjson.dumps({"data": [by_account[i] for i in ids]})


Sample = tuple[float, float]  # (wall seconds, CPU seconds) of one call


async def sample(action: Callable[[], Awaitable[object]]) -> Sample:
    wall, cpu = time.perf_counter(), time.process_time()
    await action()
    return time.perf_counter() - wall, time.process_time() - cpu


async def in_turns(*actions: Callable[[], Awaitable[object]]) -> list[Sample]:
    """The median (wall, CPU) of each action, measured in turns after a warm-up."""
    for _ in range(3):
        for action in actions:
            await action()
    samples: list[list[Sample]] = [[] for _ in actions]
    for _ in range(ROUNDS):
        for action, taken in zip(actions, samples, strict=True):
            taken.append(await sample(action))
    return [_median(taken) for taken in samples]


def asgi_post(
    app: ASGIApp, path: str, body: bytes, headers: dict[str, str]
) -> Callable[[], Awaitable[bytes]]:
    """A POST made as uvicorn makes it: the app called with one scope, the body received in
    one message, the response's body collected."""
    raw = [(b"host", b"bench"), (b"content-type", b"application/json")]
    raw += [(b"content-length", str(len(body)).encode())]
    raw += [(name.lower().encode(), value.encode()) for name, value in headers.items()]

    async def post() -> bytes:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": raw,
            "client": ("127.0.0.1", 50000),
            "server": ("bench", 80),
            "state": {},
        }
        chunks: list[bytes] = []

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))  # type: ignore[arg-type]

        await app(scope, receive, send)
        return b"".join(chunks)

    return post


def _median(samples: list[Sample]) -> Sample:
    return (
        statistics.median(wall for wall, _ in samples),
        statistics.median(cpu for _, cpu in samples),
    )


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite://{Path(folder) / 'bench.sqlite3'}"
        await db.migrate(url)
        await db.init_db(url)
        firm, owner = await firms.create_firm(
            "Bench", "bench", "o@bench.example", "O", "bench-password-1"
        )
        await seed(FirmScope(firm.id))
        token, _ = await sessions.start_staff_session(owner, timedelta(hours=1))
        app = create_app(Settings(database_url=url, _env_file=None), manage_db=False)
        heap.settle()  # as `portico serve` does once started (portico/heap.py)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            headers = {"Authorization": f"Bearer {token}"}

            async def portico() -> None:
                response = await http.post("/graphql", json={"query": QUERY}, headers=headers)
                assert "errors" not in response.json()

            direct = asgi_post(app, "/graphql", orjson.dumps({"query": QUERY}), headers)
            answer = (await http.post("/graphql", json={"query": QUERY}, headers=headers)).json()
            assert "errors" not in answer and orjson.loads(await direct()) == answer
            ours, bare, theirs = await in_turns(portico, direct, lambda: baseline(firm.id))
        await db.close_db()
    print(f"nested accounts query, {ACCOUNTS} accounts x 2 contacts x 2 addresses")
    print(f"medians of {ROUNDS} rounds in turns      wall ms    CPU ms   ratio wall   CPU")
    for name, (wall, cpu) in (
        ("portico, through httpx", ours),
        ("portico, ASGI call", bare),
        ("baseline (3 SQL + orjson)", theirs),
    ):
        print(
            f"  {name:<30} {wall * 1000:9.2f} {cpu * 1000:9.2f}"
            f" {wall / theirs[0]:10.1f}x {cpu / theirs[1]:5.1f}x"
        )


if __name__ == "__main__":
    asyncio.run(main())
