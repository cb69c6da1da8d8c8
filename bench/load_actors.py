"""The load test's simulated people: staff at their screens, clients in the portal, and mail
arriving at the firms' mailboxes. Each is a closed loop (a request, a short pause, the next)
timing every operation into one Recorder; any failed answer is an error, kept verbatim.

Requests go to the API processes in turn, as a load balancer would spread them.
"""

from __future__ import annotations

import asyncio
import imaplib
import itertools
import random
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import httpx

from bench.load_world import CLIENT_PASSWORD, Firm, World
from schema import ids
from tests.support.imap import PASSWORD as IMAP_PASSWORD
from tests.support.imap import ImapServer

THINK = (0.05, 0.3)  # seconds between one person's requests
ERRORS_KEPT = 50


FAST = 5.0  # seconds: a refusal while the database is down must come at least this fast
OUTAGE_SHOWN = 3  # errors during the database restart printed in full (all are counted)


class HttpError(RuntimeError):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:300]}")
        self.status = status


@dataclass
class Recorder:
    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    # While the database restarts (CLOCK_MONOTONIC from, until; None: still down), requests
    # may fail: fast with 503 is what is asked; what else happens is counted in `outage`.
    outages: list[list[float | None]] = field(default_factory=list)
    outage: Counter[str] = field(default_factory=Counter)
    outage_seconds: list[float] = field(default_factory=list)

    def error(self, op: str, detail: str) -> None:
        self.error_count += 1
        if len(self.errors) < ERRORS_KEPT:
            self.errors.append(f"{op}: {detail[:600]}")

    def in_outage(self, at: float, after: float = 0.0) -> bool:
        return any(
            start is not None and start <= at and (end is None or at <= end + after)
            for start, end in self.outages
        )

    async def timed(self, op: str, action: Callable[[], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        began = time.monotonic()
        try:
            result = await action()
        except Exception as exc:
            seconds = time.perf_counter() - started
            if self.in_outage(began) or self.in_outage(time.monotonic()):
                status = exc.status if isinstance(exc, HttpError) else None
                kind = f"HTTP {status}" if status else type(exc).__name__
                self.outage[f"{op}: {kind}"] += 1
                self.outage_seconds.append(seconds)
                # A download whose body was streaming when the database went is cut: its 200
                # was sent, so no 503 can follow (docs/operations.md); the client retries.
                cut = op == "client download" and isinstance(exc, httpx.RemoteProtocolError)
                if (status == 503 or cut) and seconds <= FAST:
                    return None
                # Counted in `outage` by kind; only the first few are printed in full.
                self.error_count += 1
                if sum(self.outage.values()) <= OUTAGE_SHOWN:
                    self.errors.append(
                        f"{op}: during the database restart, after {seconds:.2f} s: {exc!r}"[:600]
                    )
                return None
            self.error(op, repr(exc))
            return None
        self.times[op].append(time.perf_counter() - started)
        return result


class Api:
    """The API processes behind one round-robin, as a load balancer."""

    def __init__(self, urls: list[str], recorder: Recorder) -> None:
        self.urls = urls
        self._next = itertools.cycle(range(len(urls)))
        self.recorder = recorder
        self.out: set[str] = set()  # taken out of the rotation (stopping)
        self.in_flight: dict[str, int] = dict.fromkeys(urls, 0)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
        self.http = httpx.AsyncClient(timeout=60, limits=limits)

    def url(self) -> str:
        for _ in range(len(self.urls)):
            url = self.urls[next(self._next)]
            if url not in self.out:
                return url
        raise RuntimeError("no API process in the rotation")

    def take_out(self, url: str) -> None:
        self.out.add(url)

    def put_back(self, url: str) -> None:
        self.out.discard(url)

    async def _send(
        self, method: str, path: str, to: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        url = to or self.url()
        self.in_flight[url] += 1
        try:
            return await self.http.request(method, url + path, **kwargs)
        finally:
            self.in_flight[url] -= 1

    async def graphql(
        self,
        op: str,
        token: str | None,
        query: str,
        variables: dict | None = None,
        to: str | None = None,
    ) -> dict | None:
        """The operation's payload (its one root field), or None after recording an error:
        a non-200, GraphQL errors, or the payload's own `errors`. `to`: this API process,
        not the next in the rotation."""

        async def call() -> dict:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            answer = await self._send(
                "POST",
                "/graphql",
                to,
                json={"query": query, "variables": variables or {}},
                headers=headers,
            )
            if answer.status_code != 200:
                raise HttpError(answer.status_code, answer.text)
            body = answer.json()
            if body.get("errors"):
                raise RuntimeError(f"errors: {body['errors']}")
            if len(body["data"]) > 1:  # several root fields: all of them
                return body["data"]
            [payload] = body["data"].values()
            if isinstance(payload, dict) and payload.get("errors"):
                raise RuntimeError(f"payload errors: {payload['errors']}")
            return payload

        return await self.recorder.timed(op, call)

    async def get(self, op: str, token: str, path: str) -> bytes | None:
        async def call() -> bytes:
            answer = await self._send("GET", path, headers={"Authorization": f"Bearer {token}"})
            if answer.status_code != 200:
                raise HttpError(answer.status_code, answer.text)
            return answer.content

        return await self.recorder.timed(op, call)

    async def close(self) -> None:
        await self.http.aclose()


async def think(rng: random.Random) -> None:
    await asyncio.sleep(rng.uniform(*THINK))


# Staff -------------------------------------------------------------------------------------

ACCOUNTS = """query Accounts { accounts(first: 20) { totalCount edges { node { id name type
  emails { id login notify emailSync portalStatus emailAddress { address } } } } } }"""
ACCOUNT = """query Account($id: ID!) { account(id: $id) { id name
  emails { login notify emailSync portalStatus latestInvitation { status sentAt }
    emailAddress { address } }
  deliveries(first: 20) { totalCount edges { node { to subject kind status } } }
  documents(first: 20) { edges { node { id filename size } } } } }"""
CONTACTS = """query Contacts($s: String) { contacts(first: 20, search: $s) { totalCount
  edges { node { firstName lastName emailAddresses { address } } } } }"""
INBOX = """query Inbox { inbox(first: 20) { totalCount edges { node { id subject from sentAt
  accounts { name } } } } }"""
FLAGS = """mutation Flags($input: SetEmailFlagsInput!) { setEmailFlags(input: $input) {
  errors { code message } accountEmail { login notify portalStatus } } }"""
SEND = """mutation Send($input: SendFirmEmailInput!) { sendFirmEmail(input: $input) {
  errors { code message } queued } }"""


async def staff_member(
    api: Api, firm: Firm, token: str, toggles: list[int], stop: asyncio.Event, seed: int
) -> None:
    """Reads lists and accounts; flips LOGIN and NOTIFY on its own `toggles` (AccountEmail
    pks no one else flips: LOGIN on mails an invitation, off withdraws it); sends the firm's
    mail to NOTIFY accounts."""
    rng = random.Random(seed)
    login = dict.fromkeys(toggles, False)
    notify_accounts = [ids.encode("Account", a) for a, _, _ in firm.group("notify")]
    readable = [ids.encode("Account", a) for group in firm.accounts.values() for a, _, _ in group]
    while not stop.is_set():
        roll = rng.random()
        if roll < 0.25:
            await api.graphql("staff accounts", token, ACCOUNTS)
        elif roll < 0.5:
            await api.graphql("staff account", token, ACCOUNT, {"id": rng.choice(readable)})
        elif roll < 0.6:
            await api.graphql("staff contacts", token, CONTACTS, {"s": f"c{rng.randrange(9)}"})
        elif roll < 0.7:
            await api.graphql("staff inbox", token, INBOX)
        elif roll < 0.9 and toggles:
            email = rng.choice(toggles)
            login[email] = not login[email]
            flags = {
                "accountEmailId": ids.encode("AccountEmail", email),
                "login": login[email],
                "notify": login[email],
            }
            if await api.graphql("staff setEmailFlags", token, FLAGS, {"input": flags}) is None:
                login[email] = not login[email]  # failed: nothing changed
        else:
            chosen = rng.sample(notify_accounts, min(3, len(notify_accounts)))
            mail = {
                "accountIds": chosen,
                "subject": f"Reminder {secrets.token_hex(3)}",
                "body": "Please send us your receipts for the quarter.",
            }
            await api.graphql("staff sendFirmEmail", token, SEND, {"input": mail})
        await think(rng)


# Clients -----------------------------------------------------------------------------------

SIGN_IN = """mutation SignIn($f: String!, $e: String!, $p: String!) {
  signIn(firm: $f, email: $e, password: $p) { errors { code message } token } }"""
PORTAL = """query Portal { portalAccounts { id name } currentAccount { id name
  documents(first: 20) { edges { node { id filename size } } } } }"""
SIGN_OUT = "mutation SignOut { signOut }"
READS_PER_VISIT = 4


async def client(
    api: Api, firm: Firm, addresses: list[str], stop: asyncio.Event, seed: int
) -> None:
    """Visits of the portal: signs in as one of `addresses`, reads the account and
    downloads its documents a few times, signs out."""
    rng = random.Random(seed)
    while not stop.is_set():
        address = rng.choice(addresses)
        variables = {"f": firm.slug, "e": address, "p": CLIENT_PASSWORD}
        signed = await api.graphql("client signIn", None, SIGN_IN, variables)
        await think(rng)
        if signed is None:
            continue
        token = signed["token"]
        for _ in range(READS_PER_VISIT):
            portal = await api.graphql("client portal", token, PORTAL)
            await think(rng)
            if portal is None:
                continue
            edges = (portal.get("currentAccount") or {}).get("documents", {}).get("edges", [])
            if not edges:
                api.recorder.error("client portal", f"{address}: no documents in {portal}")
                continue
            document = rng.choice(edges)["node"]
            body = await api.get("client download", token, f"/documents/{document['id']}")
            if body is not None and len(body) != document["size"]:
                api.recorder.error("client download", f"{len(body)} bytes, not {document['size']}")
            await think(rng)
        await api.graphql("client signOut", token, SIGN_OUT)


# Mail arriving -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Appended:
    firm: int  # index
    account: int  # pk of the account whose address sent it
    message_id: str
    subject: str
    at: float  # CLOCK_MONOTONIC when the APPEND was sent


class Mail:
    """Mail from the firms' EMAIL SYNC addresses arriving at the firms' mailboxes (IMAP
    APPEND, as a delivery agent), at `rate` messages a second over all firms."""

    def __init__(self, imap: ImapServer, world: World, rate: float, recorder: Recorder) -> None:
        self.imap, self.world, self.rate, self.recorder = imap, world, rate, recorder
        self.appended: list[Appended] = []
        self._count = 0

    async def run(self, stop: asyncio.Event, seed: int) -> None:
        rng = random.Random(seed)
        clients: dict[int, imaplib.IMAP4] = {}
        try:
            next_at = time.monotonic()
            while not stop.is_set():
                firm = rng.choice(self.world.firms)
                account, _, sender = rng.choice(firm.group("sync"))
                if firm.index not in clients:
                    clients[firm.index] = await asyncio.to_thread(self._login, firm)
                client = clients[firm.index]
                await self.recorder.timed(
                    "mail append",
                    lambda c=client, f=firm, a=account, s=sender: self.append(c, f, a, s),
                )
                next_at += rng.expovariate(self.rate)
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            for imap in clients.values():
                await asyncio.to_thread(imap.logout)

    def _login(self, firm: Firm) -> imaplib.IMAP4:
        client = imaplib.IMAP4(self.imap.host, self.imap.port)
        client.login(firm.mailbox, IMAP_PASSWORD)
        return client

    async def append(self, client: imaplib.IMAP4, firm: Firm, account: int, sender: str) -> None:
        self._count += 1
        subject = f"load {self._count}"
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = firm.mailbox
        msg["Subject"] = subject
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = make_msgid("load", domain=firm.domain)
        msg.set_content(f"Message {self._count} for the firm.\n")
        raw = msg.as_bytes()
        sent = time.monotonic()
        status, _ = await asyncio.to_thread(
            client.append, "INBOX", "", imaplib.Time2Internaldate(time.time()), raw
        )
        if status != "OK":
            raise RuntimeError(f"APPEND answered {status}")
        self.appended.append(Appended(firm.index, account, msg["Message-ID"], subject, sent))
