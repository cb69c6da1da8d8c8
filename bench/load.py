"""The load test (issue 15 item 6): Portico at work on several processes, with an exact account.

    python -m bench.load [--duration S] [--firms N] [--subscribers N] [--smoke] ...

Starts, all of its own: a throwaway PostgreSQL database (PORTICO_BENCH_POSTGRES, default as
the tests' server; created and dropped), a redis-server on a free port (pub/sub channels
are global to a Redis server, so the shared one would mix other runs' events in), a Dovecot
(tests/support/imap) and an aiosmtpd server keeping every message (bench/load_sink). Seeds
the firms (bench/load_world) through the services, then runs two `portico serve` and two
`portico worker` processes (development env, PORTICO_RATE_LIMIT=false, in-process worker
off, files in the database). Through the API: clients accept their mailed invitations,
documents are uploaded. Then SUBSCRIBERS `messageSynced` subscribers (graphql-transport-ws,
in a process of their own, spread over the firms' inbox staff and the two servers; a third
of them filtered to one account) and, for DURATION seconds (bench/load_actors): staff
reading lists, accounts, contacts and the inbox, flipping LOGIN/NOTIFY (invitations go out
and are withdrawn) and sending the firm's mail; clients signing in, reading their account
and downloading documents; mail APPENDed to the firms' mailboxes from EMAIL SYNC addresses.

Reported: each operation's count, rate, p50 and p99 (and the time from an APPEND to each
subscriber's event), every error (there must be none), and the account (bench/load_account):
every outbox row SENT and received by the SMTP server exactly once (by Message-ID; rows
withdrawn before a worker took them never arrive), every appended message stored exactly
once, and each subscriber received exactly the events of the mail it may see (its firm's,
or its account's). Any error or discrepancy is printed and the exit status is 1.

--restarts (issue 15 item 7; bench/load_restarts): under the same load, an API process
SIGTERM'd with requests in flight, a worker SIGKILL'd, Redis restarted, and PostgreSQL
restarted (then the bench runs a cluster of its own: bench/load_postgres), each counted.
The account then excuses only what a restart may cost by design: an event of mail arriving
around a restart (or while a subscriber connects again) may be missed but never doubled; a
message a worker sent but could not mark before a kill or the database's restart may be
sent twice (at least once, docs/decisions). While the database is down, requests must fail
fast with 503: any other answer is an error, and the outcomes are counted by kind.

The defaults take about 2-3 minutes on 2 shared cores; --smoke is a tiny run (under a
minute; with --restarts about a minute). Figures on a shared machine say little; the
account is the point. Never part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

from bench import (
    load_account,
    load_actors,
    load_procs,
    load_restarts,
    load_subscribers,
    load_world,
)
from bench.load_postgres import Cluster
from bench.load_sink import CaptureSink
from portico import db
from portico.settings import Settings
from schema import ids
from tests.support.imap import ImapServer, running_dovecot
from tests.support.services import POSTGRES_URL as TEST_POSTGRES
from tests.support.services import need_dovecot

POSTGRES_URL = os.environ.get("PORTICO_BENCH_POSTGRES", TEST_POSTGRES)
DRAIN_TIMEOUT = 120.0  # after the load: the outbox empty, every appended message stored
SETTLE = 3.0  # then, for the last events to reach the subscribers
STAFF_SIGN_IN = """mutation StaffSignIn($f: String!, $e: String!, $p: String!) {
  staffSignIn(firm: $f, email: $e, password: $p) { errors { code message } token } }"""


@dataclass
class Options:
    duration: float
    firms: int
    per_group: int
    subscribers: int
    staff: int
    clients: int
    mail_rate: float
    keep: bool
    restarts: bool


def arguments() -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=90, help="seconds of load (90)")
    parser.add_argument("--firms", type=int, default=3)
    parser.add_argument(
        "--per-group",
        type=int,
        default=6,
        help="accounts per group (sync, notify, clients, toggle) per firm (6)",
    )
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--staff", type=int, default=2, help="staff at work per firm (2)")
    parser.add_argument("--clients", type=int, default=2, help="clients at once per firm (2)")
    parser.add_argument(
        "--mail-rate",
        type=float,
        default=1.5,
        help="messages a second arriving, all firms together (1.5)",
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny run: well under a minute")
    parser.add_argument("--keep", action="store_true", help="keep the processes' logs folder")
    parser.add_argument(
        "--restarts",
        action="store_true",
        help="under the load: an API process SIGTERM'd, a worker SIGKILL'd, Redis restarted",
    )
    args = parser.parse_args()
    if args.smoke:
        return Options(10, 2, 2, 20, 1, 1, 2.0, args.keep, args.restarts)
    return Options(
        args.duration,
        args.firms,
        args.per_group,
        args.subscribers,
        args.staff,
        args.clients,
        args.mail_rate,
        args.keep,
        args.restarts,
    )


def main() -> None:
    options = arguments()
    logging.disable(logging.WARNING)
    folder = Path(tempfile.mkdtemp(prefix="portico-load-"))
    try:
        ok = asyncio.run(run(options, folder))
    finally:
        if not options.keep:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"logs kept in {folder}")
    sys.exit(0 if ok else 1)


async def run(options: Options, folder: Path) -> bool:
    # With restarts, a cluster of the bench's own (it is restarted); else the shared server.
    cluster = Cluster(folder) if options.restarts else None
    server = cluster.url if cluster is not None else POSTGRES_URL
    name = f"portico_load_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = server.rsplit("/", 1)[0] + f"/{name}"
    redis = load_procs.Redis(folder)
    sink = CaptureSink()
    try:
        with running_dovecot(need_dovecot()) as imap:
            return await _with_services(options, folder, url, redis, cluster, sink, imap)
    finally:
        sink.stop()
        redis.stop()
        if cluster is not None:
            await admin.close()
            cluster.stop("immediate")
        else:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


async def _with_services(
    options: Options,
    folder: Path,
    url: str,
    redis: load_procs.Redis,
    cluster: Cluster | None,
    sink: CaptureSink,
    imap: ImapServer,
) -> bool:
    secret = secrets.token_hex(32)
    settings = Settings(database_url=url, secret_key=secret, _env_file=None)
    await db.migrate(url)
    await db.init_db(url)
    started = time.monotonic()
    world = await load_world.seed(
        settings, imap, options.firms, options.per_group, options.subscribers
    )
    env = load_procs.portico_env(
        {
            "PORTICO_ENV": "development",
            "PORTICO_DATABASE_URL": url,
            "PORTICO_REDIS_URL": redis.url,
            "PORTICO_SECRET_KEY": secret,
            "PORTICO_SMTP_URL": sink.url,
            "PORTICO_INPROCESS_WORKER": "false",
            "PORTICO_RATE_LIMIT": "false",
            "PORTICO_FILE_STORE": "database",
            "PORTICO_WORKER_POLL_SECONDS": "0.5",
            "PORTICO_SYNC_INTERVAL_SECONDS": "10",
            "PORTICO_MAIL_RETRY_BASE_SECONDS": "2",
            # A killed worker's rows wait out this lease before another worker retries them.
            "PORTICO_MAIL_LEASE_SECONDS": "20",
        }
    )
    procs: list[load_procs.Proc] = []
    subscribers: Subscribers | None = None
    recorder = load_actors.Recorder()
    api = None
    try:
        for n in range(2):
            var = folder / f"var-worker-{n}"
            var.mkdir()
            procs.append(load_procs.worker(folder, n, {**env, "PORTICO_VAR_DIR": str(var)}))
        for n in range(2):
            var = folder / f"var-api-{n}"
            var.mkdir()
            procs.append(load_procs.api(folder, n, {**env, "PORTICO_VAR_DIR": str(var)}))
        for proc in procs:
            (load_procs.wait_worker if proc.name.startswith("worker") else load_procs.wait_ready)(
                proc
            )
        apis = [p for p in procs if p.url]
        async with httpx.AsyncClient(base_url=apis[0].url, timeout=60) as http:
            await load_world.open_portals(http, world, sink.invitation_tokens, DRAIN_TIMEOUT)
            await load_world.upload_documents(http, world)
        subscribers = Subscribers(world, [p.url for p in apis])
        await subscribers.started(options.subscribers, apis)
        setup = time.monotonic() - started
        print(f"setup {setup:.1f} s: {options.firms} firms, {options.subscribers} subscribers live")

        api = load_actors.Api([p.url for p in apis], recorder)
        mail = load_actors.Mail(imap, world, options.mail_rate, recorder)
        stop = asyncio.Event()
        tasks = await _people(api, world, options, stop) + [asyncio.create_task(mail.run(stop, 7))]
        load_started = time.monotonic()
        restarts = load_restarts.Restarts()
        if options.restarts:
            workers = [p for p in procs if not p.url]
            clients = [
                {"f": firm.slug, "e": address, "p": load_world.CLIENT_PASSWORD}
                for firm in world.firms
                for _, _, address in firm.group("clients")
            ]
            assert cluster is not None
            await load_restarts.run(
                restarts, api, apis, workers, redis, cluster, options.duration, clients
            )
            await asyncio.sleep(2 * load_restarts.AFTER)  # load goes on past the last restart
        await asyncio.sleep(max(0.0, load_started + options.duration - time.monotonic()))
        stop.set()
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - load_started
        # This process's own connections may predate a database restart: new ones.
        await db.close_db()
        await db.init_db(url)
        drained = await _drain(mail.appended)
        await _leases_left(recorder)
        await asyncio.sleep(SETTLE)
        received, arrivals, sub_errors, gaps, closes, refusals = await subscribers.result()
        for error in sub_errors:
            recorder.error("subscriber", error)
        ended: Counter[str] = Counter()  # how the server ended connections or subscriptions
        for at, key, message in refusals:  # the server ended a subscription
            what = restarts.during(at)
            if what is None:
                recorder.error("subscriber", f"{key}: {message}")
            else:
                ended[f"during {what}: subscription ended: {_shape(message)}"] += 1
        for at, how in closes:  # the server ended a connection
            what = restarts.during(at)
            if what is None:
                recorder.error("subscriber", f"connection closed outside any restart: {how}")
            else:
                ended[f"during {what}: connection closed: {how}"] += 1
        if gaps and not options.restarts:  # nothing should close a connection
            recorder.error("subscriber", f"{len(gaps)} lost their connection: {closes[:5]}")
        for proc in procs:
            if not proc.alive():
                recorder.error(proc.name, f"exited with {proc.process.returncode}:\n{proc.tail()}")
        tallies = await _account(subscribers.filters, sink, mail.appended, received, gaps, restarts)
        for proc in procs:
            proc.stop()
        expected_lines = 0
        for proc in procs:
            for stamp, line in _log_problems(proc):
                if any(start <= stamp <= end for start, end in restarts.wall_outages):
                    expected_lines += 1
                else:
                    recorder.error(f"{proc.name} log", line)
        if expected_lines:
            recorder.outage["log lines at ERROR or above"] += expected_lines
        latency = [t - a.at for a in mail.appended for t in arrivals.get(a.subject, [])]
        ok = report(options, recorder, elapsed, drained, latency, tallies)
        if options.restarts:
            _report_restarts(restarts, gaps, ended, recorder)
        return ok
    finally:
        if api is not None:
            await api.close()
        if subscribers is not None:
            subscribers.kill()
        for proc in procs:
            proc.stop()
        await db.close_db()


async def _people(
    api: load_actors.Api, world: load_world.World, options: Options, stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    """Staff (each signed in as the firm's owner or admin) and clients, per firm."""
    tasks = []
    for firm in world.firms:
        toggles = [email for _, email, _ in firm.group("toggle")]
        for s in range(options.staff):
            email = firm.staff_emails[s % len(firm.staff_emails)]
            variables = {"f": firm.slug, "e": email, "p": load_world.STAFF_PASSWORD}
            signed = await api.graphql("staff signIn", None, STAFF_SIGN_IN, variables)
            if signed is None:
                continue
            mine = toggles[s :: options.staff]
            seed = firm.index * 100 + s
            tasks.append(
                asyncio.create_task(
                    load_actors.staff_member(api, firm, signed["token"], mine, stop, seed)
                )
            )
        addresses = [address for _, _, address in firm.group("clients")]
        for c in range(options.clients):
            mine = addresses[c :: options.clients] or addresses
            seed = firm.index * 100 + 50 + c
            tasks.append(asyncio.create_task(load_actors.client(api, firm, mine, stop, seed)))
    return tasks


class Subscribers:
    """The subscriber process (bench/load_subscribers) and what it says."""

    def __init__(self, world: load_world.World, urls: list[str]) -> None:
        self.specs: list[load_subscribers.Spec] = []
        self.filters: dict[str, tuple[int, int | None]] = {}  # key: (firm index, account pk)
        for n, (firm_index, token) in enumerate(world.subscriber_tokens):
            firm = world.firms[firm_index]
            account = None
            if n % 3 == 2:  # a third follow one account
                sync = firm.group("sync")
                account = sync[(n // 3) % len(sync)][0]
            key = f"s{n}"
            ws = [url.replace("http://", "ws://") + "/graphql" for url in urls]
            ws = ws[n % len(ws) :] + ws[: n % len(ws)]  # spread: each starts on another
            gid = ids.encode("Account", account) if account is not None else None
            self.specs.append(load_subscribers.Spec(key, tuple(ws), token, gid))
            self.filters[key] = (firm_index, account)
        spawn = multiprocessing.get_context("spawn")
        self.pipe, theirs = spawn.Pipe()
        self.process = spawn.Process(target=load_subscribers.run, args=(self.specs, theirs))

    async def started(self, count: int, apis: list[load_procs.Proc]) -> None:
        """Until every subscription is live in the servers (their /metrics say so)."""
        self.process.start()
        kind, errors = await self._receive(600)
        if kind != "subscribed" or errors:
            raise SystemExit(f"error: subscribers: {kind} {errors[:5]}")
        deadline = time.monotonic() + 120
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                live = 0
                for proc in apis:
                    text = (await http.get(proc.url + "/metrics")).text
                    found = re.search(
                        r"^portico_live_subscriptions(?:\{[^}]*\})? (\S+)$", text, re.M
                    )
                    live += int(float(found.group(1))) if found else 0
                if live >= count:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"error: only {live} of {count} subscriptions live")
                await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # the groups' bus subscriptions

    async def result(self) -> tuple[dict, dict, list[str], dict, list, list]:
        """What each subscriber received, when each subject arrived, errors, each
        subscriber's gaps (lost, subscribed again), how its connections were closed, and the
        subscriptions the server ended (when, whose, its message)."""
        self.pipe.send("stop")
        _, received, arrivals, errors, gaps, closes, refusals = await self._receive(120)
        self.process.join(30)
        return received, arrivals, errors, gaps, closes, refusals

    async def _receive(self, within: float) -> tuple:
        deadline = time.monotonic() + within
        while not self.pipe.poll():
            if time.monotonic() > deadline or not self.process.is_alive():
                raise SystemExit("error: the subscriber process said nothing")
            await asyncio.sleep(0.05)
        return self.pipe.recv()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()


async def _drain(appended: list[load_actors.Appended]) -> float:
    """Seconds until no outbox row waits and every appended message is stored (or the
    timeout: the account then names what is missing)."""
    from models import DeliveryStatus, Message, OutboundEmail

    started = time.monotonic()
    wanted = {a.message_id for a in appended}
    while time.monotonic() - started < DRAIN_TIMEOUT:
        waiting = await OutboundEmail.filter(status=DeliveryStatus.QUEUED).count()
        stored = await Message.filter(message_id__in=list(wanted)).count() if wanted else 0
        if not waiting and stored >= len(wanted):
            break
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def _leases_left(recorder: load_actors.Recorder) -> None:
    """A mailbox lease held all along 3 s once everything should be synced (a live pass
    renews or returns its lease): a dead pass's lease (services/mail/sync_engine's
    LEASE_SECONDS) keeps its mailbox from every other worker until it runs out."""
    from models import Mailbox

    async def held() -> set[tuple[str, datetime]]:
        rows = await Mailbox.filter(lease_until__gt=datetime.now(UTC)).values_list(
            "address", "lease_until"
        )
        return set(rows)

    first = await held()
    await asyncio.sleep(3)
    for address, until in first & await held():
        left = (until - datetime.now(UTC)).total_seconds()
        recorder.error("mailbox lease", f"{address} still leased for {left:.0f} s, no pass alive")


async def _account(
    filters: dict[str, tuple[int, int | None]],
    sink: CaptureSink,
    appended: list[load_actors.Appended],
    received: dict[str, list[str]],
    gaps: dict[str, list[tuple[float, float]]],
    restarts: load_restarts.Restarts,
) -> list[load_account.Tally]:
    from models import Message, MessageAccount, OutboundEmail

    rows = {
        m: str(s.value if hasattr(s, "value") else s)
        for m, s in await OutboundEmail.all().values_list("message_id", "status")
    }
    outbox = load_account.deliveries(rows, sink.message_ids(), sink.sent_across(restarts.kills))
    for moment, what in zip(restarts.kills, restarts.kill_names, strict=True):
        if doubled := sink.sent_across([moment]):
            restarts.lines.append(f"sent twice across {what} (at least once): {len(doubled)}")
    stored_rows = await Message.all().values_list("id", "message_id", "firm_id")
    synced = load_account.synced(
        [a.message_id for a in appended], Counter(m for _, m, _ in stored_rows)
    )
    # What each subscriber may see: its firm's stored messages of this run (or those linked
    # to its account), by global id. Mail appended around a restart, or while this
    # subscriber was connecting again, is owed to no one but may arrive (once).
    by_header = {m: pk for pk, m, _ in stored_rows}
    links: dict[int, set[int]] = {}
    for message_pk, account_pk in await MessageAccount.all().values_list(
        "message_id", "account_id"
    ):
        links.setdefault(message_pk, set()).add(account_pk)
    expected: dict[str, set[str]] = {}
    optional: dict[str, set[str]] = {}
    for spec_key, (firm_index, account) in filters.items():
        owed, maybe = set(), set()
        away = gaps.get(spec_key, [])
        for a in appended:
            pk = by_header.get(a.message_id)
            if a.firm != firm_index or pk is None:
                continue
            if account is None or account in links.get(pk, set()):
                gid = ids.encode("Message", pk)
                missed = restarts.excused(a.at) or any(
                    lost - load_restarts.BEFORE <= a.at <= back + load_restarts.AFTER
                    for lost, back in away
                )
                (maybe if missed else owed).add(gid)
        expected[spec_key], optional[spec_key] = owed, maybe
    events = load_account.events(expected, received, optional)
    return [outbox, synced, events]


def _shape(message: str) -> str:
    """A server's message without what differs between subscribers (ids, paths)."""
    codes = re.findall(r"'code': '([A-Z_]+)'", message)
    kind = re.search(r"'type': '(\w+)'", message)
    return f"{kind.group(1) if kind else 'next with errors'} {'/'.join(sorted(set(codes)))}"


def _report_restarts(
    restarts: load_restarts.Restarts,
    gaps: dict[str, list[tuple[float, float]]],
    ended: Counter[str],
    recorder: load_actors.Recorder,
) -> None:
    print(
        f"restarts: {restarts.api_stops} API SIGTERM, {restarts.worker_kills} worker SIGKILL, "
        f"{restarts.redis_restarts} Redis, {restarts.postgres_restarts} PostgreSQL"
    )
    for line in restarts.lines:
        print(f"  {line}")
    away = [back - lost for spans in gaps.values() for lost, back in spans]
    if away:
        print(
            f"  subscribers connected again: {len(gaps)} ({len(away)} times), away "
            f"p50 {statistics.median(away):.2f} s, max {max(away):.2f} s; what they were told:"
        )
    for what, n in sorted(ended.items()):
        print(f"    {what}: {n}")
    if recorder.outage:
        seconds = recorder.outage_seconds
        timing = (
            f" (requests failed after p50 {statistics.median(seconds):.2f} s, max "
            f"{max(seconds):.2f} s)"
            if seconds
            else ""
        )
        print(f"  while the database restarted{timing}:")
        for what, n in recorder.outage.most_common():
            print(f"    {what}: {n}")


# A log line at ERROR or above (Python's logging or uvicorn's), or a traceback.
PROBLEM = re.compile(r"Traceback|^(\d{4}-\d\d-\d\d \S+ )?(ERROR|CRITICAL)\b")
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def _log_problems(proc: load_procs.Proc) -> list[tuple[float, str]]:
    """Lines at ERROR or above, or of a traceback, each with the time of the latest stamped
    line (time.time(); 0 when none came before)."""
    found, stamp = [], 0.0
    for line in proc.log.read_text(errors="replace").splitlines():
        if STAMP.match(line):
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if PROBLEM.search(line):
            found.append((stamp, line))
    return found


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def report(
    options: Options,
    recorder: load_actors.Recorder,
    elapsed: float,
    drained: float,
    latency: list[float],
    tallies: list[load_account.Tally],
) -> bool:
    print(
        f"\nload: {elapsed:.0f} s, {options.firms} firms, {options.subscribers} subscribers, "
        f"{options.staff} staff and {options.clients} clients at once per firm, mail "
        f"{options.mail_rate}/s; 2 API processes, 2 workers, PostgreSQL, Redis"
    )
    print(f"  {'operation':<22}{'count':>8}{'per s':>9}{'p50 ms':>10}{'p99 ms':>10}")
    total = 0
    for op in sorted(recorder.times):
        times = recorder.times[op]
        total += len(times)
        print(
            f"  {op:<22}{len(times):>8}{len(times) / elapsed:>9.1f}"
            f"{1000 * statistics.median(times):>10.1f}{1000 * _pct(times, 99):>10.1f}"
        )
    print(f"  {'all requests':<22}{total:>8}{total / elapsed:>9.1f}")
    if latency:
        print(
            f"  {'event (append->sub)':<22}{len(latency):>8}{len(latency) / elapsed:>9.1f}"
            f"{1000 * statistics.median(latency):>10.1f}{1000 * _pct(latency, 99):>10.1f}"
        )
    if drained >= DRAIN_TIMEOUT:
        print(f"  NOT drained {drained:.0f} s after the load (see the account)")
    else:
        print(f"  drained {drained:.1f} s after the load (outbox empty, mail stored)")
    print(f"errors: {recorder.error_count}")
    for error in recorder.errors:
        print(f"  {error}")
    print("account:")
    for tally in tallies:
        print(f"  {tally.line()}")
        for problem in tally.problems:
            print(f"    {problem}")
    ok = recorder.error_count == 0 and all(t.exact for t in tallies)
    print("PASS" if ok else "FAIL")
    return ok


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
