"""Multiplexed messageSynced (resolvers/fanout.py): subscribers with the same document,
variables and visibility share one execution per event, and get exactly what the stock
per-subscriber execution sends them, byte for byte, on both protocols, errors included.

Real uvicorn in this process (tests/support/websocket.py), both databases. Mail is stored
as the sync engine stores it and announced with the sync engine's own call
(services/mail/events.announce_message) on the app's bus.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket as stdlib_socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
import websockets

from models import Message, MessageAccount, StaffMember
from resolvers import fanout
from schema import ids
from services.mail.events import announce_message
from services.shared import sessions
from services.shared.pubsub import firm_channel
from tests.support.api import add_staff, eventually
from tests.support.crm_ops import new_account
from tests.support.websocket import (
    LEGACY_WS,
    SYNCED,
    TIMEOUT,
    TRANSPORT_WS,
    Served,
    Socket,
    refusal,
    serving,
    socket,
)

# A field error in every event's result: a malformed cursor on a nested page.
WITH_ERRORS = """subscription { messageSynced { id subject
  accounts { name messages(first: 1, after: "not-a-cursor") { totalCount } } } }"""


@pytest.fixture
async def live(settings) -> AsyncIterator[Served]:
    async with serving(settings) as served:
        yield served


async def token_for(member: StaffMember) -> str:
    token, _ = await sessions.start_staff_session(member, timedelta(hours=1))
    return token


async def store_mail(firm_id: int, account_id: str, subject: str) -> int:
    """A synced message of the account (committed), as the sync engine stores it."""
    pk = ids.decode(account_id, "Account")
    message = await Message.create(
        firm_id=firm_id,
        message_id=f"<{secrets.token_hex(8)}@fanout.example>",
        message_key=secrets.token_hex(32),
        thread_key=secrets.token_hex(32),
        subject=subject,
        from_address="client@fanout.example",
        sent_at=datetime.now(UTC),
        direction="INBOUND",
    )
    await MessageAccount.create(
        firm_id=firm_id, message_id=message.pk, account_id=pk, sent_at=message.sent_at
    )
    return message.pk


async def frames(sock: Socket, count: int) -> list[str]:
    """The next `count` messages exactly as the server wrote them (keep-alives skipped)."""
    found: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        while len(found) < count:
            raw = await sock.ws.recv()
            assert isinstance(raw, str)
            if json.loads(raw)["type"] not in ("ka", "ping"):
                found.append(raw)
    return found


def groups(live: Served) -> dict[fanout.GroupKey, fanout.Group]:
    return fanout.registry_for(live.app.state.bus).groups


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_multiplexed_subscribers_get_the_bytes_stock_execution_sends(acme, live, protocol):
    firm_id = acme.owner.firm_id
    family = await new_account(acme.api, "Miller Family")
    bakery = await new_account(acme.api, "Miller Bakery")
    employee = await token_for(await add_staff(acme, "inbox@acme.example", can_use_inbox=True))
    # (token, document, variables): two of them share a group, the others differ by
    # document, by variables (an account filter) and by visibility (role and rights).
    plan = [
        (acme.api.token, SYNCED, {}),
        (acme.api.token, SYNCED, {}),
        (acme.api.token, WITH_ERRORS, {}),
        (acme.api.token, SYNCED, {"account": bakery["id"]}),
        (employee, SYNCED, {}),
    ]
    bus = live.app.state.bus
    async with AsyncExitStack() as stack:
        sockets: dict[str, list[Socket]] = {"multiplexed": [], "stock": []}
        for mode in ("multiplexed", "stock"):
            fanout.registry_for(bus).enabled = mode == "multiplexed"
            for n, (token, document, variables) in enumerate(plan):
                sock = await stack.enter_async_context(socket(live.url, token, protocol))
                await sock.subscribe(str(n), document, variables)
                sockets[mode].append(sock)
            # Four groups (one bus subscription each) for five multiplexed subscribers.
            expected = 4 if mode == "multiplexed" else 4 + len(plan)
            await eventually(lambda n=expected: bus.subscriber_count(firm_channel(firm_id)) == n)
        fanout.registry_for(bus).enabled = True
        assert len(groups(live)) == 4

        received: list[list[str]] = [[] for _ in plan]

        async def compare(counts: list[int]) -> None:
            for n, count in enumerate(counts):
                multiplexed = await frames(sockets["multiplexed"][n], count)
                stock = await frames(sockets["stock"][n], count)
                assert multiplexed == stock, (n, plan[n][1:])
                received[n] += multiplexed

        family_mail = await store_mail(firm_id, family["id"], "For the family")
        await announce_message(bus, firm_id, family_mail, [ids.decode(family["id"], "Account")])
        await announce_message(bus, firm_id, 10**9, [1])  # gone (never stored): nothing
        bakery_mail = await store_mail(firm_id, bakery["id"], "For the bakery")
        await announce_message(bus, firm_id, bakery_mail, [ids.decode(bakery["id"], "Account")])
        await compare([2, 2, 2, 1, 2])
        # Signed out: the next event ends the employee's streams with the same error.
        await live.api(employee).data("mutation { signOut }")
        last = await store_mail(firm_id, family["id"], "After the sign-out")
        await announce_message(bus, firm_id, last, [ids.decode(family["id"], "Account")])
        await compare([1, 1, 1, 0, 2])  # the employee: the error, then `complete`
        for sock in (*sockets["multiplexed"], *sockets["stock"]):
            if protocol == TRANSPORT_WS:
                await sock.nothing_pending()

    # What they were: data; field errors beside data; the end of a signed-out stream.
    payloads = [[json.loads(raw).get("payload") for raw in got] for got in received]
    assert [p["data"]["messageSynced"]["subject"] for p in payloads[0]] == [
        "For the family",
        "For the bakery",
        "After the sign-out",
    ]
    assert payloads[3][0]["data"]["messageSynced"]["subject"] == "For the bakery"
    with_errors = payloads[2][0]
    assert with_errors["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert with_errors["data"] is None  # the page is non-null: the error reaches the root
    assert with_errors["errors"][0]["path"] == ["messageSynced", "accounts", 0, "messages"]
    ended = payloads[4][2]
    assert ended["data"] is None
    assert ended["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert json.loads(received[4][3]) == {"type": "complete", "id": "4"}


UPDATE_STAFF = """mutation($id: ID!, $input: UpdateStaffMemberInput!) {
  updateStaffMember(id: $id, input: $input) { errors { code } } }"""


async def test_one_document_never_crosses_firms_nor_rights(acme, globex, live):
    """Every subscriber sends the very same document and variables: the group key keeps the
    firms and the rights apart, and each member's own session decides what it gets."""
    family = await new_account(acme.api, "Miller Family")
    initech = await new_account(globex.api, "Initech")
    first = await add_staff(acme, "first@acme.example", can_use_inbox=True)
    second = await add_staff(acme, "second@acme.example", can_use_inbox=True)
    reader = await add_staff(acme, "reader@acme.example")  # no inbox right
    bus = live.app.state.bus
    acme_id, globex_id = acme.owner.firm_id, globex.owner.firm_id

    async def announce(firm_id: int, account: dict, subject: str) -> None:
        pk = await store_mail(firm_id, account["id"], subject)
        await announce_message(bus, firm_id, pk, [ids.decode(account["id"], "Account")])

    async with (
        socket(live.url, acme.api.token) as owner,
        socket(live.url, await token_for(first)) as one,
        socket(live.url, await token_for(second)) as two,
        socket(live.url, globex.api.token) as other_firm,
        socket(live.url, await token_for(reader)) as no_inbox,
    ):
        # The one without the inbox right is refused at once, joins no group.
        assert (await refusal(no_inbox))["extensions"]["code"] == "FORBIDDEN"
        for sock in (owner, one, two, other_firm):
            await sock.subscribe("1", SYNCED)
        await live.subscribed(acme_id, 2)  # the owner's group, the employees' group
        await live.subscribed(globex_id)
        await eventually(lambda: sum(len(g.members) for g in groups(live).values()) == 4)
        views = sorted((g.view[:2], len(g.members)) for g in groups(live).values())
        assert views == sorted(
            [((acme_id, "OWNER"), 1), ((acme_id, "EMPLOYEE"), 2), ((globex_id, "OWNER"), 1)]
        )

        await announce(acme_id, family, "Acme's")
        for sock in (owner, one, two):
            assert (await sock.event("1"))["subject"] == "Acme's"
        # Globex's own mail is the first thing Globex's owner gets: Acme's never reached it.
        await announce(globex_id, initech, "Globex's")
        assert (await other_firm.event("1"))["subject"] == "Globex's"

        # In one group: the one who loses the right ends; the other goes on.
        await acme.api.ok(
            UPDATE_STAFF,
            {"id": ids.encode("StaffMember", second.pk), "input": {"canUseInbox": False}},
        )
        await announce(acme_id, family, "After the change")
        assert await two.ended_by("1") == "FORBIDDEN"
        assert (await one.event("1"))["subject"] == "After the change"
        assert (await owner.event("1"))["subject"] == "After the change"

        # Rights changed but mail still allowed: what the group worked out is not for it;
        # it gets the event executed as stock, the same answer as its old colleagues'.
        await acme.api.ok(
            UPDATE_STAFF,
            {"id": ids.encode("StaffMember", first.pk), "input": {"canManageAccounts": True}},
        )
        await announce(acme_id, family, "New rights")
        assert await one.event("1") == await owner.event("1")
        for sock in (owner, one, two, other_firm, no_inbox):
            await sock.nothing_pending()


async def test_deactivating_a_member_ends_their_multiplexed_stream(acme, live):
    family = await new_account(acme.api, "Miller Family")
    member = await add_staff(acme, "leaving@acme.example", can_use_inbox=True)
    bus = live.app.state.bus
    async with socket(live.url, await token_for(member)) as sock:
        await sock.subscribe("1", SYNCED)
        await live.subscribed(acme.owner.firm_id)
        assert groups(live)  # multiplexed
        await acme.api.ok(
            UPDATE_STAFF,
            {"id": ids.encode("StaffMember", member.pk), "input": {"active": False}},
        )
        pk = await store_mail(acme.owner.firm_id, family["id"], "Too late")
        await announce_message(bus, acme.owner.firm_id, pk, [ids.decode(family["id"], "Account")])
        assert await sock.ended_by("1") == "UNAUTHENTICATED"
    await eventually(lambda: not groups(live))


# A socket held full: a real client that stops reading ----------------------------------------

BIG = 512 * 1024  # one event's frame is more than a socket's buffers take in


@asynccontextmanager
async def slow_socket(live: Served, token: str) -> AsyncIterator[Socket]:
    """An acknowledged graphql-transport-ws connection with a small receive buffer, whose
    client can stop reading from its socket (`stop_reading`): then what the server writes
    to it backs up as to a client on a slow network."""
    raw = stdlib_socket.socket()
    raw.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    host, port = live.url.removeprefix("http://").split(":")
    await asyncio.get_running_loop().sock_connect(raw, (host, int(port)))
    url = live.url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(
        url,
        sock=raw,
        subprotocols=[TRANSPORT_WS],  # type: ignore[list-item]
        max_size=None,
        compression=None,
    ) as ws:
        sock = Socket(ws, TRANSPORT_WS)
        await sock.send({"type": "connection_init", "payload": {"token": token}})
        assert (await sock.receive())["type"] == "connection_ack"
        yield sock


def stop_reading(sock: Socket) -> None:
    """The client reads nothing more from its socket until `read_on` (a real pause: the
    kernel's buffers fill, then the server's transport holds what it writes)."""
    sock.ws.transport.pause_reading()


def member_of(live: Served, token: str) -> fanout.Member:
    (member,) = [m for g in groups(live).values() for m in g.members if m.token == token]
    return member


async def back_up(
    live: Served, firm_id: int, account: dict, fast: Socket, slow: fanout.Member
) -> list[str]:
    """Announces big mail until the group's write to `slow` is held back by its full socket
    (the first event's frame fills it, the second's waits); `fast`, in the same group,
    reads each event (then the group has handed it to every member). The events' short
    names, in order."""
    names: list[str] = []
    for n in range(100):
        names.append(f"{n:03d}")
        await announce(live, firm_id, account, names[-1] + secrets.token_hex(BIG // 2))
        assert (await fast.event("1"))["subject"][:3] == names[-1]
        if slow.held_back:
            return names
    raise AssertionError("the slow socket never backed up")


async def announce(live: Served, firm_id: int, account: dict, subject: str) -> None:
    pk = await store_mail(firm_id, account["id"], subject)
    await announce_message(live.app.state.bus, firm_id, pk, [ids.decode(account["id"], "Account")])


async def read_on(sock: Socket, until: Callable[[dict], bool]) -> list[dict]:
    """Reads again: the messages (keep-alives skipped) up to the first one `until` accepts,
    that one included."""
    sock.ws.transport.resume_reading()
    found: list[dict] = []
    while not found or not until(found[-1]):
        found.append(await sock.receive())
    return found


def subject_of(message: dict) -> str | None:
    data = (message.get("payload") or {}).get("data") or {}
    return data["messageSynced"]["subject"][:3] if data else None


async def test_an_event_that_waited_for_a_full_socket_checks_the_session_then(acme, live):
    """Events queued behind a write the socket held back are checked when the member takes
    them up, as a stock subscriber checks an event once its previous send is done: a
    sign-out while the socket was full ends the stream, not the group's earlier verdict."""
    firm_id = acme.owner.firm_id
    family = await new_account(acme.api, "Miller Family")
    slow_token = await token_for(await add_staff(acme, "slow@acme.example", can_use_inbox=True))
    fast_token = await token_for(await add_staff(acme, "fast@acme.example", can_use_inbox=True))
    async with socket(live.url, fast_token) as fast, slow_socket(live, slow_token) as slow:
        await fast.subscribe("1", SYNCED)
        await slow.subscribe("1", SYNCED)
        await eventually(lambda: sum(len(g.members) for g in groups(live).values()) == 2)
        assert len(groups(live)) == 1  # one group: `fast` has each event once `slow` has
        stop_reading(slow)
        member = member_of(live, slow_token)
        names = await back_up(live, firm_id, family, fast, member)
        # Two more, seen by the group with the session still live: they wait in the queue.
        for name in ("late", "last"):
            await announce(live, firm_id, family, name)
            assert (await fast.event("1"))["subject"] == name
        await live.api(slow_token).data("mutation { signOut }")

        # (Had the group's verdict been kept, "late" and "last" would come.)
        got = await read_on(slow, lambda m: m["type"] == "complete" or subject_of(m) == "las")
        assert [subject_of(m) for m in got] == [*names, None, None]
        assert got[-2]["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert got[-1] == {"type": "complete", "id": "1"}
        await slow.nothing_pending()


async def test_a_held_back_write_is_dropped_when_the_operation_ends(acme, live):
    """The client completes its operation while the group's write waits for its full socket:
    that write never goes out, so the id, reused at once, carries only the new operation's."""
    firm_id = acme.owner.firm_id
    family = await new_account(acme.api, "Miller Family")
    slow_token = await token_for(await add_staff(acme, "slow@acme.example", can_use_inbox=True))
    fast_token = await token_for(await add_staff(acme, "fast@acme.example", can_use_inbox=True))
    async with socket(live.url, fast_token) as fast, slow_socket(live, slow_token) as slow:
        await fast.subscribe("1", SYNCED)
        await slow.subscribe("1", SYNCED)
        await eventually(lambda: sum(len(g.members) for g in groups(live).values()) == 2)
        assert len(groups(live)) == 1  # one group: `fast` has each event once `slow` has
        member = member_of(live, slow_token)
        stop_reading(slow)
        names = await back_up(live, firm_id, family, fast, member)

        await slow.send({"id": "1", "type": "complete"})
        await eventually(lambda: all(member not in g.members for g in groups(live).values()))
        await slow.subscribe("1", SYNCED)  # the id reused
        await eventually(lambda: sum(len(g.members) for g in groups(live).values()) == 2)
        await announce(live, firm_id, family, "new")
        assert (await fast.event("1"))["subject"] == "new"

        got = await read_on(slow, lambda message: subject_of(message) == "new")
        assert [subject_of(m) for m in got] == [*names[:-1], "new"]
        await slow.nothing_pending()


async def test_a_failed_event_ends_each_member_with_an_error_of_its_own(acme, live, caplog):
    """An event the group cannot work out (its id is beyond what the database can look up)
    ends every member's stream as it ends a stock subscriber's; each member's error is its
    own, so the traceback logged for one holds no other member's frames."""
    firm_id = acme.owner.firm_id
    family = await new_account(acme.api, "Miller Family")
    bus = live.app.state.bus
    async with AsyncExitStack() as stack:
        sockets = []
        for mode in ("stock", "multiplexed", "multiplexed", "multiplexed"):
            fanout.registry_for(bus).enabled = mode == "multiplexed"
            sock = await stack.enter_async_context(socket(live.url, acme.api.token))
            await sock.subscribe("1", SYNCED)
            sockets.append(sock)
            # The stock subscriber's bus subscription, then the group's.
            listening = min(len(sockets), 2)
            await eventually(lambda n=listening: bus.subscriber_count(firm_channel(firm_id)) == n)
        fanout.registry_for(bus).enabled = True
        await eventually(lambda: sum(len(g.members) for g in groups(live).values()) == 3)
        caplog.clear()
        await announce_message(bus, firm_id, 2**63, [ids.decode(family["id"], "Account")])
        stock, *multiplexed = [await frames(sock, 2) for sock in sockets]
        assert all(got == stock for got in multiplexed)
        assert json.loads(stock[0])["payload"]["errors"][0]["extensions"]["code"] == "INTERNAL"
        assert json.loads(stock[1]) == {"type": "complete", "id": "1"}

    logged = [r for r in caplog.records if r.getMessage().startswith("Unexpected error")]
    assert len(logged) == 4
    assert len({id(r.exc_info[1]) for r in logged if r.exc_info}) == 4  # one error each
    # As logged then (the text is made when the record is emitted): the members' tracebacks
    # are alike, none grown by the frames of those that raised before it.
    members = [r.exc_text or "" for r in logged if "_multiplexed" in (r.exc_text or "")]
    assert len(members) == 3
    assert len({text.count("\n") for text in members}) == 1
