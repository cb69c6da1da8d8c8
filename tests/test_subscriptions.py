"""messageSynced over WebSockets: new synced mail pushed to staff as a sync stores it.

Three kinds of server, all real uvicorn:
- in this process (`serving`): the test's own database, so these run on SQLite and on
  PostgreSQL, with the acme/globex fixtures; the bus is the app's own InProcessBus;
- `portico serve` as a child process (tests/support/server.py), on its demo firm;
- two `portico serve` processes on one PostgreSQL database and Redis, an event raised in one
  reaching a subscriber of the other.
Mail comes in through a real Dovecot (tests/support/imap.py) and the syncMailbox mutation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
import websockets
from redis.asyncio import Redis

from models import AccountEmail, StaffMember
from portico.settings import Settings
from schema import ids
from services.shared import sessions
from services.shared.pubsub import firm_channel
from tests.support import server
from tests.support.api import Api, add_staff, eventually
from tests.support.crm_ops import new_account
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.imap import ImapServer, imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.login import invitee, portal_token
from tests.support.mail import CONNECT, add_mailbox, imap_user, mail, mailbox_input
from tests.support.server import DEMO_FIRM, DEMO_OWNER_EMAIL, DEMO_PASSWORD, LiveServer
from tests.support.services import need_postgres, need_redis
from tests.support.smtp import SmtpServer, smtp_fixture  # noqa: F401  (the `smtp` fixture)
from tests.support.websocket import (
    LEGACY_WS,
    SIGN_IN,
    SYNC,
    SYNCED,
    Served,
    Socket,
    refusal,
    serving,
    socket,
)

live_server = server.live_server
live_server_process = server.live_server_process


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[Served]:
    async with serving(settings) as served:
        yield served


@dataclass
class Office:
    """A firm with an account whose address has EMAIL SYNC on and a mailbox to sync."""

    firm_id: int
    account_id: str  # global id
    contact_id: str  # global id, the contact with the synced address
    mailbox_id: str  # global id
    user: str  # the mailbox's IMAP user
    api: Api  # the owner, on the served app

    async def receive_mail(self, imap: ImapServer, subject: str, sender: str) -> None:
        imap.append(self.user, mail(sender, subject=subject))
        await self.api.ok(SYNC, {"id": self.mailbox_id})


async def office(
    firm, live: Served, imap: ImapServer, settings: Settings, account: str, address: str
) -> Office:
    made = await invitee(firm.api, account, address)
    await AccountEmail.filter(firm_id=firm.owner.firm_id).update(email_sync=True)
    user = imap_user(domain=f"{firm.slug}.example")
    mailbox = await add_mailbox(firm.owner.firm_id, imap, settings, user)
    return Office(
        firm.owner.firm_id,
        made.account_id,
        made.contact_id,
        ids.encode("Mailbox", mailbox.pk),
        user,
        live.api(firm.api.token),
    )


# In this process: both backends ---------------------------------------------------------------


async def test_staff_receive_new_mail_as_it_syncs(acme, live, imap, settings):
    miller = await office(acme, live, imap, settings, "Miller Family", "anna@miller.example")
    async with socket(live.url, acme.api.token) as sock:
        await sock.subscribe("1", SYNCED)
        await live.subscribed(miller.firm_id)
        # A stranger's mail is not stored, so it announces nothing: Anna's comes first.
        imap.append(miller.user, mail("stranger@else.example", subject="Not ours"))
        tax_return = mail("Anna@Miller.example", subject="Tax return 2026")
        imap.append(miller.user, tax_return)
        await miller.api.ok(SYNC, {"id": miller.mailbox_id})
        message = await sock.event("1")
        assert message["subject"] == "Tax return 2026"
        assert message["from"] == "anna@miller.example" and message["direction"] == "INBOUND"
        assert message["accounts"] == [{"name": "Miller Family"}]
        assert ids.parse(message["id"])[0] == "Message"

        # The same message reaches another account (Anna's address synced there too, the
        # message seen again through a second mailbox): announced again, loaded afresh.
        bakery = await new_account(acme.api, "Miller Bakery")
        link = "mutation($a: ID!, $c: ID!) { linkContact(accountId: $a, contactId: $c) { errors { code } } }"
        await acme.api.ok(link, {"a": bakery["id"], "c": miller.contact_id})
        await AccountEmail.filter(firm_id=miller.firm_id).update(email_sync=True)
        second = await add_mailbox(miller.firm_id, imap, settings, imap_user("second"))
        imap.append(second.username, tax_return)
        await miller.api.ok(SYNC, {"id": ids.encode("Mailbox", second.pk)})
        again = await sock.event("1")
        assert again["id"] == message["id"]
        assert again["accounts"] == [{"name": "Miller Family"}, {"name": "Miller Bakery"}]
        await sock.nothing_pending()


async def test_the_legacy_graphql_ws_protocol_works_too(acme, live, imap, settings):
    miller = await office(acme, live, imap, settings, "Miller Family", "anna@miller.example")
    async with socket(live.url, acme.api.token, protocol=LEGACY_WS) as sock:
        await sock.subscribe("7", SYNCED)
        await live.subscribed(miller.firm_id)
        await miller.receive_mail(imap, "Over the old protocol", "anna@miller.example")
        message = await sock.event("7")
        assert message["subject"] == "Over the old protocol"
        assert message["accounts"] == [{"name": "Miller Family"}]
        await sock.send({"id": "7", "type": "stop"})
        assert await sock.receive() == {"type": "complete", "id": "7"}
    assert live.app.state.bus.subscriber_count(firm_channel(miller.firm_id)) == 0


async def test_the_session_cookie_authenticates_a_same_origin_socket(acme, live, imap, settings):
    miller = await office(acme, live, imap, settings, "Miller Family", "anna@miller.example")
    cookie = {"Cookie": f"portico_session={acme.api.token}", "Origin": live.url}
    async with socket(live.url, headers=cookie) as sock:
        await sock.subscribe("1", SYNCED)
        await live.subscribed(miller.firm_id)
        await miller.receive_mail(imap, "By cookie", "anna@miller.example")
        assert (await sock.event("1"))["subject"] == "By cookie"
    # A page of another site may not ride on that cookie: the handshake is refused.
    evil = {**cookie, "Origin": "https://evil.example"}
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with socket(live.url, headers=evil):
            pass
    assert refused.value.response.status_code == 403


async def test_who_may_not_subscribe_gets_one_error_and_nothing_else(
    acme, globex, client, live, imap, settings
):
    miller = await office(acme, live, imap, settings, "Miller Family", "anna@miller.example")
    other = await invitee(globex.api, "Globex Client", "gus@globex-client.example")
    reader = await add_staff(acme, "reader@acme.example")
    reader_api = await _token_for(reader)
    client_token = await portal_token(acme, miller.account_id)
    cases = [
        (None, None, "UNAUTHENTICATED"),  # an invalid token is refused at connect (4403)
        (client_token, None, "FORBIDDEN"),
        (reader_api, None, "FORBIDDEN"),
        (acme.api.token, {"account": other.account_id}, "NOT_FOUND"),  # another firm's
        (acme.api.token, {"account": "bm9wZQ=="}, "NOT_FOUND"),  # not an id at all
        (globex.api.token, {"account": miller.account_id}, "NOT_FOUND"),
    ]
    for token, variables, code in cases:
        async with socket(live.url, token) as sock:
            error = await refusal(sock, variables)
            assert error["extensions"]["code"] == code, (token, variables, error)
            await sock.nothing_pending()
    async with socket(live.url, client_token, protocol=LEGACY_WS) as sock:
        assert (await refusal(sock))["extensions"]["code"] == "FORBIDDEN"
    # None of them is still listening when mail arrives.
    assert live.app.state.bus.subscriber_count(firm_channel(miller.firm_id)) == 0


async def test_subscribers_see_their_firm_only_and_one_account_when_asked(
    acme, globex, live, imap, settings
):
    miller = await office(acme, live, imap, settings, "Miller Family", "anna@miller.example")
    bakery = await invitee(acme.api, "Miller Bakery", "ben@miller.example", first="Ben")
    await AccountEmail.filter(firm_id=acme.owner.firm_id).update(email_sync=True)
    initech = await office(globex, live, imap, settings, "Initech", "peter@initech.example")
    inbox_user = await _token_for(await add_staff(acme, "inbox@acme.example", can_use_inbox=True))
    async with (
        socket(live.url, acme.api.token) as everything,
        socket(live.url, inbox_user) as bakery_only,
        socket(live.url, globex.api.token) as other_firm,
    ):
        await everything.subscribe("all", SYNCED)
        await bakery_only.subscribe("bakery", SYNCED, {"account": bakery.account_id})
        await other_firm.subscribe("globex", SYNCED)
        await live.subscribed(miller.firm_id, 2)
        await live.subscribed(initech.firm_id)

        await miller.receive_mail(imap, "For the family", "anna@miller.example")
        assert (await everything.event("all"))["subject"] == "For the family"
        await miller.receive_mail(imap, "For the bakery", "ben@miller.example")
        assert (await everything.event("all"))["subject"] == "For the bakery"
        # The filtered subscriber skipped the family's mail: the bakery's comes first.
        bakery_mail = await bakery_only.event("bakery")
        assert bakery_mail["subject"] == "For the bakery"
        assert bakery_mail["accounts"] == [{"name": "Miller Bakery"}]

        # Acme's mail never reached Globex: Globex's own mail is the first it gets.
        await initech.receive_mail(imap, "Globex business", "peter@initech.example")
        assert (await other_firm.event("globex"))["subject"] == "Globex business"
        for sock in (everything, bakery_only, other_firm):
            await sock.nothing_pending()


async def test_signing_out_ends_the_stream_at_the_next_event(acme, live, imap, settings):
    miller = await office(acme, live, imap, settings, "Miller Family", "anna@miller.example")
    member = await add_staff(acme, "leaving@acme.example", can_use_inbox=True)
    token = await _token_for(member)
    async with socket(live.url, token) as sock:
        await sock.subscribe("1", SYNCED)
        await live.subscribed(miller.firm_id)
        await miller.receive_mail(imap, "Before", "anna@miller.example")
        assert (await sock.event("1"))["subject"] == "Before"

        await live.api(token).data("mutation { signOut }")
        await miller.receive_mail(imap, "After", "anna@miller.example")
        assert await sock.ended_by("1") == "UNAUTHENTICATED"
    await eventually(lambda: not live.app.state.bus.subscriber_count(firm_channel(miller.firm_id)))


async def test_losing_the_inbox_right_ends_the_stream(acme, live, imap, settings):
    miller = await office(acme, live, imap, settings, "Miller Family", "anna@miller.example")
    member = await add_staff(acme, "moved@acme.example", can_use_inbox=True)
    async with socket(live.url, await _token_for(member)) as sock:
        await sock.subscribe("1", SYNCED)
        await live.subscribed(miller.firm_id)
        update = """mutation($id: ID!) { updateStaffMember(id: $id, input: {canUseInbox: false})
          { errors { code } } }"""
        await miller.api.ok(update, {"id": ids.encode("StaffMember", member.pk)})
        await miller.receive_mail(imap, "Not for you", "anna@miller.example")
        assert await sock.ended_by("1") == "FORBIDDEN"


async def test_without_the_apps_event_bus_a_subscription_says_so(acme, settings):
    async with serving(settings, lifespan="off") as bare, socket(bare.url, acme.api.token) as sock:
        error = await refusal(sock)
        assert error["extensions"]["code"] == "SUBSCRIPTIONS_UNAVAILABLE"
        assert error["message"] == "Live updates are not available on this server."


async def _token_for(member: StaffMember) -> str:
    token, _ = await sessions.start_staff_session(member, timedelta(hours=1))
    return token


# `portico serve` as a child process ----------------------------------------------------------


async def sign_in_demo_owner(http: httpx.AsyncClient) -> str:
    variables = {"f": DEMO_FIRM, "e": DEMO_OWNER_EMAIL, "p": DEMO_PASSWORD}
    response = await http.post("/graphql", json={"query": SIGN_IN, "variables": variables})
    return response.json()["data"]["staffSignIn"]["token"]


async def connect_demo_mailbox(api: Api, imap: ImapServer, smtp: SmtpServer) -> tuple[str, str]:
    """A mailbox of the demo firm connected through the API; (IMAP user, mailbox id)."""
    user = imap_user(domain="demo.example")
    payload = await api.ok(CONNECT, {"input": mailbox_input(imap, smtp, user)})
    return user, payload["mailbox"]["id"]


async def first_event(sock: Socket, op_id: str, trigger: Callable[[int], Awaitable[None]]) -> dict:
    """The first event a new subscription receives. The server says nothing when a
    subscription goes live (within moments of subscribing), and this process cannot look
    inside a child's bus: trigger again until one arrives."""
    for attempt in range(10):
        await trigger(attempt)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                return await sock.event(op_id)
    pytest.fail("no event arrived")


async def test_a_portico_serve_process_pushes_synced_mail(live_server, imap, smtp):
    async with httpx.AsyncClient(base_url=live_server) as http:
        token = await sign_in_demo_owner(http)
        api = Api(http, token)
        user, mailbox_id = await connect_demo_mailbox(api, imap, smtp)

        async def mail_arrives(n: int) -> None:
            imap.append(user, mail(subject=f"Live {n}"))
            await api.data(SYNC, {"id": mailbox_id})

        async with socket(live_server, token) as sock:
            await sock.subscribe("1", SYNCED)
            message = await first_event(sock, "1", mail_arrives)
            assert message["subject"].startswith("Live ")
            assert message["accounts"] == [{"name": "Miller Family"}]  # the demo's EMAIL SYNC


# Two processes on Redis ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database of its own (URL), dropped afterwards."""
    need_postgres()
    name, url = await create_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(name)


async def migrate(folder: Path, env: dict[str, str]) -> None:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("PORTICO_")}
    process = await asyncio.create_subprocess_exec(
        *server.portico_command(), "migrate", env={**environ, **env}, cwd=folder
    )
    assert await process.wait() == 0


async def unique_firm_ids(url: str) -> None:
    """Redis channels are global to the Redis server, and channels are per firm id: start
    the ids somewhere no parallel test run is, so no run hears another's events."""
    conn = await asyncpg.connect(url)
    try:
        start = secrets.randbelow(2**30) + 1_000_000
        await conn.execute("SELECT setval(pg_get_serial_sequence('firm', 'id'), $1)", start)
    finally:
        await conn.close()


async def test_an_event_raised_in_one_process_reaches_a_subscriber_of_another(tmp_path, imap, smtp):
    redis_url = need_redis()
    async with postgres_database() as url:
        env = {
            "PORTICO_ENV": "development",
            "PORTICO_DATABASE_URL": url,
            "PORTICO_REDIS_URL": redis_url,
            "PORTICO_SECRET_KEY": secrets.token_urlsafe(32),
            # Only syncMailbox through A syncs: B must hear of it through Redis.
            "PORTICO_INPROCESS_WORKER": "0",
        }
        await migrate(tmp_path, env)
        await unique_firm_ids(url)
        # A seeds the demo firm into the empty database; B starts once it has.
        a = await asyncio.to_thread(server.start_server, tmp_path / "a", env)
        try:
            b = await asyncio.to_thread(server.start_server, tmp_path / "b", env)
            try:
                await _across(a, b, redis_url, imap, smtp)
            finally:
                b.stop()
        finally:
            a.stop()


async def _across(
    a: LiveServer, b: LiveServer, redis_url: str, imap: ImapServer, smtp: SmtpServer
) -> None:
    async with httpx.AsyncClient(base_url=a.url) as http:
        token = await sign_in_demo_owner(http)
        api = Api(http, token)
        firm = ids.parse((await api.data("{ firm { id } }"))["firm"]["id"])
        assert firm is not None
        channel = firm_channel(firm[1])
        user, mailbox_id = await connect_demo_mailbox(api, imap, smtp)
        async with socket(b.url, token) as sock:
            await sock.subscribe("1", SYNCED)
            redis = Redis.from_url(redis_url)
            try:
                # B's subscription is live once Redis counts its subscriber on the channel.
                await eventually(lambda: _numsub(redis, channel))
            finally:
                await redis.aclose()
            imap.append(user, mail(subject="Raised in A"))
            await api.ok(SYNC, {"id": mailbox_id})
            message = await sock.event("1")
            assert message["subject"] == "Raised in A"
            assert message["accounts"] == [{"name": "Miller Family"}]
            await sock.nothing_pending()


async def _numsub(redis: Redis, channel: str) -> bool:
    [(_, count)] = await redis.pubsub_numsub(channel)
    return count > 0
