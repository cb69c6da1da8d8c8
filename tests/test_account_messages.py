"""The Email tab (Account.messages) through the API: an account's synced mail newest first,
keyset cursors that stay stable while mail arrives, the inbox right only, and one cost for a
list of accounts however long it is."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise

from models import AccountEmail
from schema import ids
from services.mail import store as message_store
from services.mail.parse import parse_message
from services.shared.scope import FirmScope
from tests.support.api import Api, add_staff, api_for
from tests.support.crm_ops import new_account
from tests.support.imap import imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.login import invitee, portal_token
from tests.support.mail import OFFICE, add_mailbox, mail, numbered
from tests.support.sqlcount import count_sql

SYNC = "mutation($id: ID!) { syncMailbox(id: $id) { errors { code } } }"
TAB = """query($id: ID!, $first: Int, $after: String) { account(id: $id) {
  messages(first: $first, after: $after) {
    totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { id subject from accounts { name } } } } } }"""
NESTED = """{ accounts(first: 50) { edges { node { name
  messages(first: 5) { totalCount edges { node { subject accounts { name } } } } } } } }"""


def subjects(tab: dict) -> list[str]:
    return [edge["node"]["subject"] for edge in tab["edges"]]


async def tab(api: Api, account_id: str, first: int | None = None, after: str | None = None):
    variables = {"id": account_id, "first": first, "after": after}
    return (await api.data(TAB, variables))["account"]["messages"]


async def synced_family(acme, settings, imap, user: str) -> tuple[str, str, str]:
    """Two accounts with EMAIL SYNC on (the family: Anna; the bakery: Ben) and a mailbox
    holding mail of both; (family id, bakery id, mailbox id) after one sync."""
    family = await invitee(acme.api, "Miller Family", "anna@miller.example")
    bakery = await invitee(acme.api, "Miller Bakery", "ben@miller.example", first="Ben")
    await AccountEmail.all().update(email_sync=True)
    for n in (1, 2, 3):
        imap.append(user, numbered(n))
    imap.append(user, numbered(4, sender="ben@miller.example"))
    imap.append(user, numbered(5, sender="stranger@else.example"))  # nobody's: never stored
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings, user)
    mailbox_id = ids.encode("Mailbox", mailbox.pk)
    await acme.api.ok(SYNC, {"id": mailbox_id})
    return family.account_id, bakery.account_id, mailbox_id


async def test_each_account_shows_its_own_mail_newest_first_with_stable_cursors(
    acme, settings, imap
):
    user = "office-tab@acme.example"
    family, bakery, mailbox_id = await synced_family(acme, settings, imap, user)

    first = await tab(acme.api, family, first=2)
    assert subjects(first) == ["Message 3", "Message 2"]
    assert first["totalCount"] == 3
    assert first["pageInfo"]["hasNextPage"] and not first["pageInfo"]["hasPreviousPage"]
    assert first["pageInfo"]["endCursor"] == first["edges"][-1]["cursor"]
    assert first["edges"][0]["node"]["accounts"] == [{"name": "Miller Family"}]
    assert subjects(await tab(acme.api, bakery)) == ["Message 4"]

    # Newer mail arrives between pages: the next page neither repeats nor skips.
    imap.append(user, numbered(9))
    await acme.api.ok(SYNC, {"id": mailbox_id})
    rest = await tab(acme.api, family, first=2, after=first["pageInfo"]["endCursor"])
    assert subjects(rest) == ["Message 1"]
    assert rest["totalCount"] == 4
    assert not rest["pageInfo"]["hasNextPage"] and rest["pageInfo"]["hasPreviousPage"]
    assert subjects(await tab(acme.api, family)) == [f"Message {n}" for n in (9, 3, 2, 1)]
    # The end of the list: an empty page, still with the total.
    end = await tab(acme.api, family, after=rest["pageInfo"]["endCursor"])
    assert end["edges"] == [] and end["totalCount"] == 4 and not end["pageInfo"]["hasNextPage"]


async def test_bad_arguments_get_a_clear_error(acme):
    account = (await new_account(acme.api, "Miller Family"))["id"]
    for args, argument in (
        ({"after": "garbage"}, "after"),
        ({"after": "bWVzc2FnZTpub3QtYS1kYXRlfDc="}, "after"),  # "message:not-a-date|7"
        ({"first": -1}, "first"),
        ({"first": 101}, "first"),
    ):
        body = await acme.api.post(TAB, {"id": account, **args})
        [error] = body["errors"]
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": argument}, args
        assert "cursor" in error["message"] or "first" in error["message"]


async def test_staff_with_the_inbox_right_only(acme, globex, client, settings, imap):
    family, _, _ = await synced_family(acme, settings, imap, "office-rights@acme.example")

    inbox_user = await api_for(
        client, await add_staff(acme, "inbox@acme.example", can_use_inbox=True)
    )
    assert (await tab(inbox_user, family))["totalCount"] == 3

    reader = await api_for(client, await add_staff(acme, "reader@acme.example"))
    body = await reader.post(TAB, {"id": family})
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert body["data"]["account"] is None  # the non-null connection takes its account along

    # A client who may enter the account sees its documents, never its synced mail.
    portal = await client_of(acme, client, family)
    allowed = await portal.data(
        "query($id: ID!) { account(id: $id) { name documents { totalCount } } }", {"id": family}
    )
    assert allowed["account"] == {"name": "Miller Family", "documents": {"totalCount": 0}}
    body = await portal.post(TAB, {"id": family})
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    # Another firm's account is simply not found.
    assert (await globex.api.data(TAB, {"id": family}))["account"] is None
    node = "query($id: ID!) { node(id: $id) { ... on Account { messages { totalCount } } } }"
    assert (await globex.api.data(node, {"id": family}))["node"] is None


async def client_of(acme, client, account_id: str) -> Api:
    """A signed-in portal user with access to the account."""
    return Api(client, await portal_token(acme, account_id))


async def populate(acme, start: int, count: int) -> None:
    """`count` accounts with mail of their own (3 messages) and one message shared with the
    next account, stored by the sync engine's own storing step."""
    scope = FirmScope(acme.owner.firm_id)
    made = [
        (await new_account(acme.api, f"Account {i:03}"))["id"] for i in range(start, start + count)
    ]
    pks = [ids.decode(gid, "Account") for gid in made]
    for i, pk in enumerate(pks, start=start):
        for n in range(3):
            raw = mail(
                f"c{i}@client.example",
                OFFICE,
                f"Account {i} mail {n}",
                body="Hello",
                message_id=f"<a{i}-{n}@test>",
                date=datetime(2026, 11, 2, 10 + n, i % 60, tzinfo=UTC),
            )
            await message_store.store_message(scope, parse_message(raw), [pk])
    for i, (left, right) in enumerate(pairwise(pks), start=start):
        raw = mail(
            OFFICE,
            f"c{i}@client.example",
            f"Shared {i}",
            body="Hi",
            message_id=f"<s{i}@test>",
            date=datetime(2026, 11, 3, 9, i % 60, tzinfo=UTC),
        )
        await message_store.store_message(scope, parse_message(raw), [left, right])


async def statements(api: Api, query: str) -> tuple[int, dict]:
    with count_sql() as seen:
        data = await api.data(query)
    return len(seen), data


async def test_a_list_of_accounts_with_their_mail_costs_the_same_for_5_and_20(acme):
    await populate(acme, 0, 5)
    small, data = await statements(acme.api, NESTED)
    edges = data["accounts"]["edges"]
    assert len(edges) == 5
    first = edges[0]["node"]["messages"]
    assert first["totalCount"] == 4  # its own three and the one shared with the next account
    assert [e["node"]["subject"] for e in first["edges"]] == [
        "Shared 0",
        "Account 0 mail 2",
        "Account 0 mail 1",
        "Account 0 mail 0",
    ]
    assert first["edges"][0]["node"]["accounts"] == [
        {"name": "Account 000"},
        {"name": "Account 001"},
    ]

    await populate(acme, 5, 15)
    large, data = await statements(acme.api, NESTED)
    edges = data["accounts"]["edges"]
    assert len(edges) == 20
    # The middle ones: three of their own and two shared, a full page of five.
    assert all(len(e["node"]["messages"]["edges"]) == 5 for e in edges[1:4])
    assert small == large
    # session, page (no COUNT: the accounts' totalCount is not asked), ranked links,
    # messages, the messages' accounts
    assert large == 5, large
