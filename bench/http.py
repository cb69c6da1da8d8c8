"""Portico over HTTP against hand-written endpoints serving the same JSON, with wrk.

    python -m bench.http [--postgres] [--rounds N] [--duration S]
                         [--reads nested,search,inbox,account] [--loops] [--limits]

Seeds one database (a temporary SQLite file, or with --postgres a throwaway PostgreSQL
database at PORTICO_BENCH_POSTGRES, default as in the tests) with 50 accounts x 2 contacts
x 2 addresses (bench/__main__.py's seed) plus the portal screens' data (bench/data.py:
120 synced messages over the accounts with 0-2 attachments each, and on the first account
toggles, invitations, a portal user, 30 deliveries and 30 documents), then starts one
uvicorn process each:
- portico:  `portico serve` in production mode, in-process worker off, a staff token;
- tortoise: a hand-written Starlette endpoint on the same Tortoise models with
  prefetch_related (bench/baselines.py);
- sql:      a hand-written Starlette endpoint: the plain SQL statements, rows into orjson;
- with --loops also portico-asyncio: `portico serve --loop asyncio --http h11`, the same
  server without uvloop and httptools;
- with --limits also portico-limits and portico-limits-redis: the same server with its rate
  limits on (buckets so large that nothing is refused), in memory and in Redis
  (PORTICO_BENCH_REDIS, default redis://127.0.0.1:6379/0): what a bucket costs a request.
Each read (nested: the issue's `accounts(first: 50)` query; search: `contacts(first: 50,
search:)`; inbox: `inbox(first: 50)` with each message's accounts and attachments; account:
one `account(id:)` with its emails' portal status and latest invitation, `deliveries(first:
20)` and `documents(first: 20)`) is fetched once from every endpoint first, and the bench
stops if any answer differs from Portico's. Then, after a warm-up, wrk (Debian's package)
loads one endpoint at a time (`-t1 -c8`, DURATION seconds), in turns, ROUNDS rounds; any
non-2xx answer or socket error stops the bench. Reported: the median requests/s of each
endpoint, and Portico's ratio (Portico's requests/s / the endpoint's in the same round, the
median over the rounds), as issue 13's table shows it: 0.25 means Portico serves a quarter
as many requests; on the portico-asyncio row it is what uvloop and httptools gain. Never part of
`make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import orjson

from bench import data
from bench.__main__ import ACCOUNTS, seed
from bench.__main__ import QUERY as NESTED
from portico import db
from services.firm import firms
from services.shared import sessions
from services.shared.scope import FirmScope

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "PORTICO_BENCH_POSTGRES",
    os.environ.get("PORTICO_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test"),
)
SEARCH = """{ contacts(first: 50, search: "b1") { edges { node {
  firstName lastName emailAddresses { address } } } } }"""
INBOX = """{ inbox(first: 50) { totalCount pageInfo { hasNextPage endCursor } edges { node {
  id subject from to cc sentAt direction
  accounts { id name }
  attachments { id filename contentType size skippedReason } } } } }"""
# {account} is the seeded account's global id (bench/data.py:screens).
ACCOUNT = """{ account(id: "{account}") { id name
  emails { login notify emailSync portalStatus latestInvitation { status sentAt }
    emailAddress { address } }
  deliveries(first: 20) { totalCount pageInfo { hasNextPage } edges { node {
    id to subject kind category status attempts lastError createdAt sentAt } } }
  documents(first: 20) { totalCount pageInfo { hasNextPage } edges { node {
    id filename contentType size createdAt } } } } }"""
# Each read: Portico's document, and the baselines' path for the same answer ({pk}: the
# seeded account's primary key, {account}: its global id).
READS = {
    "nested": (NESTED, "/accounts"),
    "search": (SEARCH, "/contacts?search=b1"),
    "inbox": (INBOX, "/inbox"),
    "account": (ACCOUNT, "/account?id={pk}"),
}
READY_TIMEOUT = 60.0
WARMUP_SECONDS = 3


@dataclass
class Endpoint:
    name: str
    command: list[str]
    env: dict[str, str]
    graphql: bool  # POST /graphql with a token, else GET of the baseline path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    rates: dict[str, list[float]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def main() -> None:
    args = _arguments()
    if shutil.which("wrk") is None:
        sys.exit("error: wrk is missing (Debian: apt-get install -y wrk)")
    reads = [name.strip() for name in args.reads.split(",")]
    if unknown := set(reads) - READS.keys():
        sys.exit(f"error: unknown reads {sorted(unknown)}; known: {sorted(READS)}")
    with tempfile.TemporaryDirectory() as folder, _database(Path(folder), args.postgres) as url:
        firm_id, token, account_pk = asyncio.run(_prepare(url))
        _fill_in(account_pk)
        endpoints = _endpoints(url, firm_id, Path(folder), args.loops, args.limits)
        with _running(endpoints, Path(folder)):
            for read in reads:
                _check_same_answers(endpoints, read, token)
            scripts = {read: _wrk_script(Path(folder), read, token) for read in reads}
            for read in reads:
                for endpoint in endpoints:
                    _wrk(endpoint, read, scripts[read], WARMUP_SECONDS, args.connections)
            for round_ in range(args.rounds):
                for read in reads:
                    for endpoint in endpoints:
                        rate = _wrk(endpoint, read, scripts[read], args.duration, args.connections)
                        endpoint.rates.setdefault(read, []).append(rate)
                        print(f"  round {round_ + 1} {read:6} {endpoint.name:15} {rate:9.1f} req/s")
    _report(endpoints, reads, args)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__)
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL database")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per turn")
    parser.add_argument("--connections", type=int, default=8, help="wrk -c")
    parser.add_argument(
        "--reads",
        default="nested,search,inbox,account",
        help="comma-separated: nested,search,inbox,account",
    )
    parser.add_argument(
        "--loops", action="store_true", help="also Portico with --loop asyncio --http h11"
    )
    parser.add_argument(
        "--limits", action="store_true", help="also Portico with rate limits on (none refused)"
    )
    return parser.parse_args()


@contextlib.contextmanager
def _database(folder: Path, postgres: bool) -> Iterator[str]:
    if not postgres:
        yield f"sqlite://{folder / 'bench.sqlite3'}"
        return
    name = f"portico_bench_{secrets.token_hex(4)}"
    asyncio.run(_postgres(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _postgres(statement: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _prepare(url: str) -> tuple[int, str, int]:
    """Migrates and seeds; the firm's id, a staff token for Portico (the owner's: the inbox
    right too) and the account the account read opens."""
    await db.migrate(url)
    await db.init_db(url)
    try:
        firm, owner = await firms.create_firm(
            "Bench", "bench", "o@bench.example", "O", "bench-password-1"
        )
        await seed(FirmScope(firm.id))
        account_pk = await data.screens(firm.id)
        token, _ = await sessions.start_staff_session(owner, timedelta(hours=2))
    finally:
        await db.close_db()
    return firm.id, token, account_pk


def _fill_in(account_pk: int) -> None:
    """Puts the seeded account into the account read (its document and baseline path)."""
    document, path = READS["account"]
    gid = base64.b64encode(f"Account:{account_pk}".encode()).decode()
    READS["account"] = (document.replace("{account}", gid), path.format(pk=account_pk))


def _endpoints(
    url: str, firm_id: int, folder: Path, loops: bool, limits: bool = False
) -> list[Endpoint]:
    # Only our settings: a developer's PORTICO_* must not leak in.
    base = {k: v for k, v in os.environ.items() if not k.startswith("PORTICO_")}
    base.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    portico = {
        **base,
        "PORTICO_ENV": "production",
        # wrk's connections share one address and one token: measured, not refused.
        "PORTICO_RATE_LIMIT": "false",
        "PORTICO_SECRET_KEY": secrets.token_hex(32),
        "PORTICO_DATABASE_URL": url,
        "PORTICO_VAR_DIR": str(folder / "var"),
        "PORTICO_INPROCESS_WORKER": "false",
    }
    plain = {**base, "BENCH_DATABASE_URL": url, "BENCH_FIRM_ID": str(firm_id)}
    serve = [str(Path(sys.executable).with_name("portico")), "serve", "--host", "127.0.0.1"]
    # The baselines run under uvicorn as `portico serve` runs Portico (loop and HTTP "auto").
    uvicorn = [sys.executable, "-m", "uvicorn", "--factory", "--host", "127.0.0.1"]
    quiet = ["--no-access-log", "--log-level", "warning"]
    endpoints = [Endpoint("portico", serve, portico, graphql=True)]
    if loops:
        slow = [*serve, "--loop", "asyncio", "--http", "h11"]
        endpoints.append(Endpoint("portico-asyncio", slow, portico, graphql=True))
    if limits:
        limited = {
            **portico,
            "PORTICO_RATE_LIMIT": "true",
            "PORTICO_RATE_LIMIT_SESSION_BURST": str(10**9),
            "PORTICO_RATE_LIMIT_ANONYMOUS_BURST": str(10**9),
        }
        redis = os.environ.get("PORTICO_BENCH_REDIS", "redis://127.0.0.1:6379/0")
        endpoints += [
            Endpoint("portico-limits", serve, limited, graphql=True),
            Endpoint("portico-limits-redis", serve, {**limited, "PORTICO_REDIS_URL": redis}, True),
        ]
    endpoints += [
        Endpoint("tortoise", [*uvicorn, *quiet, "bench.baselines:tortoise_app"], plain, False),
        Endpoint("sql", [*uvicorn, *quiet, "bench.baselines:sql_app"], plain, False),
    ]
    return endpoints


@contextlib.contextmanager
def _running(endpoints: list[Endpoint], folder: Path) -> Iterator[None]:
    """Every endpoint in its own process (its log in `folder`); each idles while another is
    loaded."""
    try:
        for endpoint in endpoints:
            _start(endpoint, folder)
        yield
    finally:
        for endpoint in endpoints:
            if endpoint.process is not None and endpoint.process.poll() is None:
                endpoint.process.terminate()
                try:
                    endpoint.process.wait(10)
                except subprocess.TimeoutExpired:
                    endpoint.process.kill()
                    endpoint.process.wait()


def _start(endpoint: Endpoint, folder: Path) -> None:
    endpoint.port = _free_port()
    # Portico runs in its var dir, so no project .env is read; the baselines in the project.
    cwd = Path(endpoint.env.get("PORTICO_VAR_DIR", ROOT))
    cwd.mkdir(parents=True, exist_ok=True)
    endpoint.log = folder / f"{endpoint.name}.log"
    with endpoint.log.open("wb") as log:
        endpoint.process = subprocess.Popen(
            [*endpoint.command, "--port", str(endpoint.port)],
            cwd=cwd,
            env=endpoint.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    probe = "/readyz" if endpoint.graphql else "/accounts"
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if endpoint.process.poll() is not None:
            sys.exit(f"error: {endpoint.name} exited:\n{endpoint.log.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(endpoint.url + probe, timeout=5).status_code == 200:
                return
        time.sleep(0.2)
    sys.exit(f"error: {endpoint.name} not ready:\n{endpoint.log.read_text()}")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fetch(endpoint: Endpoint, read: str, token: str) -> bytes:
    document, path = READS[read]
    if endpoint.graphql:
        response = httpx.post(
            endpoint.url + "/graphql",
            json={"query": document},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    else:
        response = httpx.get(endpoint.url + path, timeout=30)
    if response.status_code != 200:
        sys.exit(f"error: {endpoint.name} {read}: HTTP {response.status_code}\n{response.text}")
    return response.content


def _check_same_answers(endpoints: list[Endpoint], read: str, token: str) -> None:
    """Fails loudly unless every endpoint answers exactly what Portico answers: the same
    JSON once whitespace is set aside (key order and types count: true is not 1)."""
    expected = orjson.loads(_fetch(endpoints[0], read, token))
    if "errors" in expected or not _rows_in(expected):
        sys.exit(f"error: Portico's {read} answer is not a full page: {expected}")
    # Compact re-encoded bytes, not Python equality, which takes True for 1 and ignores order.
    wanted = orjson.dumps(expected)
    for endpoint in endpoints[1:]:
        answer = orjson.dumps(orjson.loads(_fetch(endpoint, read, token)))
        if answer != wanted:
            sys.exit(
                f"error: {endpoint.name} answers {read} differently from Portico:\n"
                f"  portico: {wanted[:600]!r}\n  {endpoint.name}: {answer[:600]!r}"
            )
    print(f"{read}: every endpoint gives Portico's answer ({len(_rows_in(expected))} rows)")


def _rows_in(answer: dict[str, object]) -> list[object]:
    """The rows of the answer's lists: a connection's edges; for one account, its emails,
    deliveries and documents (each must be there for the check to mean anything)."""
    data = answer.get("data") or {}
    assert isinstance(data, dict)
    [top] = data.values()
    if top is None:
        return []
    if "edges" in top:
        return list(top["edges"])
    parts = [top["emails"], top["deliveries"]["edges"], top["documents"]["edges"]]
    return [row for part in parts for row in part] if all(parts) else []


def _wrk_script(folder: Path, read: str, token: str) -> Path:
    """The Lua script making wrk send Portico's request: a POST with the document and token."""
    body = orjson.dumps({"query": READS[read][0]}).decode()
    script = folder / f"{read}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {_lua_string(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
    )
    return script


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _wrk(endpoint: Endpoint, read: str, script: Path, seconds: int, connections: int) -> float:
    """Requests per second wrk reached; stops the bench on any failed request."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s"]
    if endpoint.graphql:
        command += ["-s", str(script), endpoint.url + "/graphql"]
    else:
        command.append(endpoint.url + READS[read][1])
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        sys.exit(f"error: {endpoint.name} {read} failed under load:\n{output}")
    found = re.search(r"Requests/sec:\s*([\d.]+)", output)
    if found is None:
        sys.exit(f"error: no Requests/sec in wrk's output:\n{output}")
    return float(found.group(1))


def _report(endpoints: list[Endpoint], reads: list[str], args: argparse.Namespace) -> None:
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"\nHTTP, {ACCOUNTS} accounts x 2 contacts x 2 addresses, {backend}, "
        f"wrk -t1 -c{args.connections} -d{args.duration}s, median of {args.rounds} rounds"
    )
    # The ratio pairs the turns of one round (closest in time), then takes the median: on a
    # shared machine the load drifts between rounds more than within one.
    for read in reads:
        portico = endpoints[0].rates[read]
        print(f"  {read}")
        for endpoint in endpoints:
            rates = endpoint.rates[read]
            ratio = statistics.median(p / r for p, r in zip(portico, rates, strict=True))
            print(
                f"    {endpoint.name:15} {statistics.median(rates):9.1f} req/s"
                f"   Portico's ratio {ratio:6.3f}x"
            )


if __name__ == "__main__":
    main()
