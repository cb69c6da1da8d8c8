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
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

import pytest

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
