"""Keyset cursors on every connection: walking a list page by page gives each item exactly
once in the list's documented order (ties on the sort key included), rows added or removed
before a cursor do not shift the next page, bad cursors and sizes are refused, and nested
pages cost the same statements for few and many parents."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models import (
    Account,
    AccountContact,
    AuditEntry,
    Contact,
    Document,
    Invitation,
)
from schema import ids, pagination
from services.outbound import outbox
from tests.support.api import Api, add_staff
from tests.support.sqlcount import count_sql

PAGE = "totalCount pageInfo { hasNextPage hasPreviousPage endCursor } edges { cursor node { %s } }"


async def _walk(api: Api, query: str, path: list[str], size: int, **variables: Any) -> list[dict]:
    """Every node of the connection at `path`, `size` at a time, checking pageInfo."""
    nodes: list[dict] = []
    after = None
    totals = set()
    while True:
        data = await api.data(query, {**variables, "first": size, "after": after})
        for name in path:
            data = data[name]
        totals.add(data["totalCount"])
        info = data["pageInfo"]
        assert info["hasPreviousPage"] == (after is not None)
        assert len(data["edges"]) <= size
        nodes.extend(edge["node"] for edge in data["edges"])
        if data["edges"]:
            assert info["endCursor"] == data["edges"][-1]["cursor"]
        if not info["hasNextPage"]:
            assert len(totals) == 1 and totals.pop() == len(nodes)
            return nodes
        assert len(data["edges"]) == size  # a full page before the last
        after = info["endCursor"]


def _firm(api_firm) -> int:
    return api_firm.owner.firm_id


async def _accounts(firm_id: int, names: list[str]) -> list[Account]:
    return [await Account.create(firm_id=firm_id, name=n, type="FAMILY") for n in names]


ACCOUNTS = "query($first: Int, $after: String) { accounts(first: $first, after: $after) { %s } }"


@pytest.mark.parametrize("size", [1, 2, 3, 7])
async def test_accounts_walk_by_name_ties_included(acme, size):
    # Names equal but for case tie on LOWER(name): the id decides among them.
    names = ["beta", "Alpha", "alpha", "ALPHA", "Beta", "gamma", "Delta", "alpha"]
    rows = await _accounts(_firm(acme), names)
    nodes = await _walk(acme.api, ACCOUNTS % (PAGE % "id name"), ["accounts"], size)
    expected = sorted(rows, key=lambda r: (r.name.lower(), r.pk))
    assert [n["id"] for n in nodes] == [ids.encode("Account", r.pk) for r in expected]


async def test_contacts_walk_by_last_then_first_name_with_search(acme):
    firm_id = _firm(acme)
    people = [("Ann", "Smith"), ("ann", "smith"), ("Bob", "Smith"), ("Ann", "Jones"),
              ("Zed", "Adams"), ("ann", "Smith"), ("Cy", "Smithers")]  # fmt: skip
    rows = [await Contact.create(firm_id=firm_id, first_name=f, last_name=n) for f, n in people]
    query = (
        "query($first: Int, $after: String, $search: String) {"
        " contacts(first: $first, after: $after, search: $search) { %s } }"
    ) % (PAGE % "id")
    order = sorted(rows, key=lambda r: (r.last_name.lower(), r.first_name.lower(), r.pk))
    nodes = await _walk(acme.api, query, ["contacts"], 2)
    assert [n["id"] for n in nodes] == [ids.encode("Contact", r.pk) for r in order]
    found = await _walk(acme.api, query, ["contacts"], 2, search="smith")
    smiths = [r for r in order if "smith" in r.last_name.lower()]
    assert [n["id"] for n in found] == [ids.encode("Contact", r.pk) for r in smiths]


async def test_staff_members_page_walks_like_the_old_list(acme):
    for email in ["zoe@acme.example", "amy@acme.example", "amy@other.example", "Bo@acme.example"]:
        await add_staff(acme, email)
    query = (
        "query($first: Int, $after: String) { staffMembersPage(first: $first, after: $after)"
        " { %s } }"
    ) % (PAGE % "id name")
    nodes = await _walk(acme.api, query, ["staffMembersPage"], 2)
    old = (await acme.api.data("{ staffMembers { id name } }"))["staffMembers"]
    assert nodes == old and len(old) == 5  # the owner and four (two named Amy)


ACCOUNT_PAGE = (
    "query($id: ID!, $first: Int, $after: String) { account(id: $id) {"
    " %s(first: $first, after: $after) { %s } } }"
)


async def test_documents_walk_newest_first_with_equal_times(acme):
    [account] = await _accounts(_firm(acme), ["Docs"])
    docs = [
        await Document.create(
            firm_id=account.firm_id,
            account=account,
            filename=f"f{i}.txt",
            content_type="text/plain",
            size=1,
            sha256="0" * 64,
        )
        for i in range(7)
    ]
    # Four share one time to the microsecond (and a whole second: no fraction in the text).
    same = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await Document.filter(id__in=[d.pk for d in docs[1:5]]).update(created_at=same)
    for doc in docs:
        await doc.refresh_from_db()
    gid = ids.encode("Account", account.pk)
    query = ACCOUNT_PAGE % ("documents", PAGE % "id")
    for size in (1, 2, 3):
        nodes = await _walk(acme.api, query, ["account", "documents"], size, id=gid)
        order = sorted(docs, key=lambda d: (d.created_at, d.pk), reverse=True)
        assert [n["id"] for n in nodes] == [ids.encode("Document", d.pk) for d in order]


async def test_deliveries_walk_newest_first(acme, settings):
    [account] = await _accounts(_firm(acme), ["Mail"])
    rows = []
    for i in range(5):
        rows.append(
            await outbox.enqueue(
                firm_id=account.firm_id,
                firm_name="Acme LLP",
                to=f"p{i}@x.example",
                template="invitation",
                kind="INVITATION",
                settings=settings,
                context={
                    "firm_name": "Acme",
                    "account_name": "Mail",
                    "link": "http://x/",
                    "expires_at": datetime.now(UTC),
                },
                account_id=account.pk,
            )
        )
    same = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    await outbox.OutboundEmail.filter(id__in=[r.pk for r in rows[:3]]).update(created_at=same)
    gid = ids.encode("Account", account.pk)
    nodes = await _walk(
        acme.api, ACCOUNT_PAGE % ("deliveries", PAGE % "id"), ["account", "deliveries"], 2, id=gid
    )
    for row in rows:
        await row.refresh_from_db()
    order = sorted(rows, key=lambda r: (r.created_at, r.pk), reverse=True)
    assert [n["id"] for n in nodes] == [ids.encode("Delivery", r.pk) for r in order]


async def _audit(account: Account, count: int) -> list[AuditEntry]:
    return [
        await AuditEntry.create(
            firm_id=account.firm_id,
            account=account,
            action="FLAGS_CHANGED",
            email=f"a{i}@x.example",
        )
        for i in range(count)
    ]


async def test_audit_entries_page_walks_like_the_old_list(acme):
    [account] = await _accounts(_firm(acme), ["Audited"])
    await _audit(account, 5)
    gid = ids.encode("Account", account.pk)
    query = ACCOUNT_PAGE % ("auditEntriesPage", PAGE % "email action")
    nodes = await _walk(acme.api, query, ["account", "auditEntriesPage"], 2, id=gid)
    old = await acme.api.data(
        "query($id: ID!) { account(id: $id) { auditEntries { email action } } }", {"id": gid}
    )
    assert nodes == old["account"]["auditEntries"]
    assert [n["email"] for n in nodes] == [f"a{i}@x.example" for i in reversed(range(5))]


async def _invitations(account: Account) -> dict[str, list[Invitation]]:
    now = datetime.now(UTC)
    kinds = {
        "PENDING": {"expires_at": now + timedelta(days=1)},
        "EXPIRED": {"expires_at": now - timedelta(days=1)},
        "ACCEPTED": {"expires_at": now - timedelta(days=1), "accepted_at": now},
        "REVOKED": {"expires_at": now + timedelta(days=1), "revoked_at": now},
    }
    made: dict[str, list[Invitation]] = {k: [] for k in kinds}
    for i in range(3):
        for status, fields in kinds.items():
            row = await Invitation.create(
                firm_id=account.firm_id, account=account, email=f"{status}{i}@x.example",
                email_normalized=f"{status.lower()}{i}@x.example",
                token_hash=f"{account.pk}-{status}-{i}".ljust(64, "0"), **fields,
            )  # fmt: skip
            made[status].append(row)
    return made


@pytest.mark.parametrize("status", [None, "PENDING", "EXPIRED", "ACCEPTED", "REVOKED"])
async def test_invitations_page_filters_and_walks_like_the_old_list(acme, status):
    [account] = await _accounts(_firm(acme), ["Invited"])
    await _invitations(account)
    gid = ids.encode("Account", account.pk)
    query = (
        "query($id: ID!, $first: Int, $after: String, $status: InvitationStatus) {"
        " account(id: $id) { invitationsPage(status: $status, first: $first, after: $after)"
        " { %s } } }"
    ) % (PAGE % "email status")
    nodes = await _walk(acme.api, query, ["account", "invitationsPage"], 2, id=gid, status=status)
    old = await acme.api.data(
        "query($id: ID!, $status: InvitationStatus) { account(id: $id) {"
        " invitations(status: $status) { email status } } }",
        {"id": gid, "status": status},
    )
    assert nodes == old["account"]["invitations"]
    assert len(nodes) == (12 if status is None else 3)


async def test_contact_accounts_page_walks_by_name(acme):
    firm_id = _firm(acme)
    contact = await Contact.create(firm_id=firm_id, first_name="Ann", last_name="Lee")
    rows = await _accounts(firm_id, ["beta", "Alpha", "alpha", "Gamma", "delta"])
    for row in rows:
        await AccountContact.create(firm_id=firm_id, account=row, contact=contact)
    await _accounts(firm_id, ["Unlinked"])
    gid = ids.encode("Contact", contact.pk)
    query = (
        "query($id: ID!, $first: Int, $after: String) { contact(id: $id) {"
        " accountsPage(first: $first, after: $after) { %s } } }"
    ) % (PAGE % "id name")
    nodes = await _walk(acme.api, query, ["contact", "accountsPage"], 2, id=gid)
    old = await acme.api.data(
        "query($id: ID!) { contact(id: $id) { accounts { id name } } }", {"id": gid}
    )
    assert nodes == old["contact"]["accounts"]
    assert [n["name"] for n in nodes] == ["Alpha", "alpha", "beta", "delta", "Gamma"]


async def test_rows_added_or_removed_before_the_cursor_do_not_shift_pages(acme):
    firm_id = _firm(acme)
    await _accounts(firm_id, ["b", "c", "d", "e", "f", "g"])
    query = ACCOUNTS % (PAGE % "name")
    first = (await acme.api.data(query, {"first": 3}))["accounts"]
    assert [e["node"]["name"] for e in first["edges"]] == ["b", "c", "d"]
    await _accounts(firm_id, ["a", "cc"])  # both before the cursor
    await Account.filter(firm_id=firm_id, name="c").delete()
    after = first["pageInfo"]["endCursor"]
    second = (await acme.api.data(query, {"first": 3, "after": after}))["accounts"]
    assert [e["node"]["name"] for e in second["edges"]] == ["e", "f", "g"]
    assert second["totalCount"] == 7 and not second["pageInfo"]["hasNextPage"]

    # Newest first: a newer row lands before the cursor, the next page still follows on.
    [account] = await _accounts(firm_id, ["Audited"])
    await _audit(account, 4)  # a0..a3; the newest (a3) first
    gid = ids.encode("Account", account.pk)
    audit = ACCOUNT_PAGE % ("auditEntriesPage", PAGE % "email")
    page = (await acme.api.data(audit, {"id": gid, "first": 2}))["account"]["auditEntriesPage"]
    assert [e["node"]["email"] for e in page["edges"]] == ["a3@x.example", "a2@x.example"]
    await AuditEntry.create(firm_id=firm_id, account=account, action="FLAGS_CHANGED", email="new@x")
    await AuditEntry.filter(account_id=account.pk, email="a3@x.example").delete()
    cursor = page["pageInfo"]["endCursor"]
    page = (await acme.api.data(audit, {"id": gid, "first": 2, "after": cursor}))["account"]
    assert [e["node"]["email"] for e in page["auditEntriesPage"]["edges"]] == [
        "a1@x.example",
        "a0@x.example",
    ]


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


async def _codes(api: Api, query: str, variables: dict) -> list[tuple[str, str]]:
    body = await api.post(query, variables)
    return [(e["extensions"]["code"], e["extensions"].get("argument")) for e in body["errors"]]


async def test_bad_foreign_and_tampered_cursors_are_refused(acme):
    firm_id = _firm(acme)
    account, _ = await _accounts(firm_id, ["One", "Two"])
    await _audit(account, 2)
    gid = ids.encode("Account", account.pk)
    query = ACCOUNTS % (PAGE % "name")
    cursor = (await acme.api.data(query, {"first": 1}))["accounts"]["pageInfo"]["endCursor"]
    raw = base64.urlsafe_b64decode(cursor).decode()
    audit = ACCOUNT_PAGE % ("auditEntriesPage", PAGE % "email")
    audit_cursor = (await acme.api.data(audit, {"id": gid, "first": 1}))["account"][
        "auditEntriesPage"
    ]["pageInfo"]["endCursor"]
    bad = [
        "nonsense",
        _b64("arrayconnection:1"),  # the old offset cursors
        cursor[:-4],  # cut short
        _b64(raw.replace("v1:", "v2:")),  # another version
        _b64(raw.replace('"one"', '"one",5')),  # another shape
        _b64(raw.replace(f",{account.pk}]", ",0]")),  # no such id
        _b64(raw.replace(f",{account.pk}]", ",2147483648]")),  # beyond any id
        _b64(raw.replace(f",{account.pk}]", ',"1"]')),  # an id of the wrong type
        audit_cursor,  # another list's
        "x" * 5000,
        _b64(raw.replace('"one"', '"o\\u0000ne"')),  # text no column holds (NUL)
        _b64(raw.replace('"one"', '"\\ud800"')),  # a lone surrogate
        _b64("v1:accounts:" + "[" * 700 + "]" * 700),  # nesting, not a position
    ]
    for text in bad:
        assert await _codes(acme.api, query, {"first": 1, "after": text}) == [
            ("BAD_USER_INPUT", "after")
        ], text
    contacts = "query($a: String) { contacts(first: 1, after: $a) { totalCount } }"
    assert await _codes(acme.api, contacts, {"a": cursor}) == [("BAD_USER_INPUT", "after")]
    for field in ("invitationsPage", "documents", "deliveries"):
        document = ACCOUNT_PAGE % (field, "totalCount")
        assert await _codes(acme.api, document, {"id": gid, "after": audit_cursor}) == [
            ("BAD_USER_INPUT", "after")
        ], field
    documents = ACCOUNT_PAGE % ("documents", "totalCount")
    for when in ("0001-01-01T00:00:00+00:00", "2026-01-01T00:00:00", "2026-13-01T00:00:00Z"):
        text = _b64(f'v1:documents:[{{"t":"{when}"}},1]')  # beyond any time; no zone; no date
        assert await _codes(acme.api, documents, {"id": gid, "after": text}) == [
            ("BAD_USER_INPUT", "after")
        ], when
    good = _b64('v1:documents:[{"t":"2026-01-01T00:00:00+02:00"},1]')
    assert (await acme.api.data(documents, {"id": gid, "after": good}))["account"]
    # The list's own cursor passes.
    ok = await acme.api.data(audit, {"id": gid, "first": 1, "after": audit_cursor})
    assert len(ok["account"]["auditEntriesPage"]["edges"]) == 1


@pytest.mark.parametrize("first", [-1, 101])
async def test_page_sizes_are_bounded_on_every_new_field(acme, first):
    [account] = await _accounts(_firm(acme), ["One"])
    contact = await Contact.create(firm_id=account.firm_id, first_name="A", last_name="B")
    fields = [
        ("query($id: ID!, $first: Int) { account(id: $id) { auditEntriesPage(first: $first)"
         " { totalCount } } }", ids.encode("Account", account.pk)),
        ("query($id: ID!, $first: Int) { account(id: $id) { invitationsPage(first: $first)"
         " { totalCount } } }", ids.encode("Account", account.pk)),
        ("query($id: ID!, $first: Int) { contact(id: $id) { accountsPage(first: $first)"
         " { totalCount } } }", ids.encode("Contact", contact.pk)),
        ("query($first: Int) { staffMembersPage(first: $first) { totalCount } }", None),
    ]  # fmt: skip
    for query, gid in fields:
        variables = {"first": first, **({"id": gid} if gid else {})}
        assert await _codes(acme.api, query, variables) == [("BAD_USER_INPUT", "first")], query


async def test_another_firms_pages_are_not_reachable(acme, globex):
    [theirs] = await _accounts(_firm(globex), ["Theirs"])
    await _audit(theirs, 3)
    contact = await Contact.create(firm_id=theirs.firm_id, first_name="T", last_name="Them")
    await AccountContact.create(firm_id=theirs.firm_id, account=theirs, contact=contact)
    gid = ids.encode("Account", theirs.pk)
    for query in (
        "query($id: ID!) { account(id: $id) { auditEntriesPage { totalCount } } }",
        "query($id: ID!) { node(id: $id) { ... on Account { auditEntriesPage { totalCount } } } }",
    ):
        data = await acme.api.data(query, {"id": gid})
        assert list(data.values()) == [None]
    cid = ids.encode("Contact", contact.pk)
    data = await acme.api.data(
        "query($id: ID!) { contact(id: $id) { accountsPage { totalCount } } }", {"id": cid}
    )
    assert data == {"contact": None}
    # Their own owner does see them: the ids are real.
    theirs_data = await globex.api.data(
        "query($id: ID!) { account(id: $id) { auditEntriesPage { totalCount } } }", {"id": gid}
    )
    assert theirs_data["account"]["auditEntriesPage"]["totalCount"] == 3


NESTED = """
query($after: String) { accounts(first: 50) { edges { node {
  auditEntriesPage(first: 2, after: $after) { totalCount pageInfo { hasNextPage }
    edges { node { email actor } } }
  invitationsPage(status: PENDING, first: 2) { totalCount edges { node { email } } }
  documents(first: 2) { totalCount edges { node { filename } } }
  contacts { accountsPage(first: 1) { totalCount edges { node { name } } } }
} } } }
"""


async def _populate(firm_id: int, count: int, start: int) -> None:
    for i in range(start, start + count):
        [account] = await _accounts(firm_id, [f"Account {i:03}"])
        await _audit(account, 3)
        await _invitations(account)
        contact = await Contact.create(firm_id=firm_id, first_name="C", last_name=f"{i}")
        await AccountContact.create(firm_id=firm_id, account=account, contact=contact)


async def _statements(api: Api, variables: dict) -> tuple[int, dict]:
    with count_sql() as statements:
        data = await api.data(NESTED, variables)
    return len(statements), data


async def test_nested_pages_cost_the_same_for_few_and_many_accounts(acme):
    firm_id = _firm(acme)
    await _populate(firm_id, 3, 0)
    small, data = await _statements(acme.api, {})
    node = data["accounts"]["edges"][0]["node"]
    assert node["auditEntriesPage"]["totalCount"] == 3
    assert node["auditEntriesPage"]["pageInfo"]["hasNextPage"] is True
    assert node["invitationsPage"]["totalCount"] == 3
    assert node["contacts"][0]["accountsPage"]["totalCount"] == 1
    await _populate(firm_id, 22, 3)
    large, data = await _statements(acme.api, {})
    assert len(data["accounts"]["edges"]) == 25
    assert small == large
    # session, page (no COUNT: the accounts' totalCount is not asked); per paged field one
    # ranked statement and one for its rows (documents: none here, so no rows read);
    # contacts one: 10 for any number of accounts.
    assert large == 10, large
    # Continuing every account's audit page after one cursor is still one batch.
    cursor = (await acme.api.data(NESTED_CURSOR))["accounts"]["edges"][0]["node"]
    after = cursor["auditEntriesPage"]["pageInfo"]["endCursor"]
    again, data = await _statements(acme.api, {"after": after})
    assert again == large
    first = data["accounts"]["edges"][0]["node"]["auditEntriesPage"]
    assert len(first["edges"]) == 1 and first["pageInfo"]["hasNextPage"] is False


NESTED_CURSOR = """
{ accounts(first: 1) { edges { node {
  auditEntriesPage(first: 2) { pageInfo { endCursor } }
} } } }
"""


async def test_documents_pages_do_not_shift_when_newer_ones_come_and_go(acme):
    [account] = await _accounts(_firm(acme), ["Docs"])

    async def add(name: str) -> Document:
        return await Document.create(
            firm_id=account.firm_id,
            account=account,
            filename=name,
            content_type="text/plain",
            size=1,
            sha256="0" * 64,
        )

    for i in range(5):
        await add(f"d{i}")
    gid = ids.encode("Account", account.pk)
    query = ACCOUNT_PAGE % ("documents", PAGE % "filename")
    page = (await acme.api.data(query, {"id": gid, "first": 2}))["account"]["documents"]
    assert [e["node"]["filename"] for e in page["edges"]] == ["d4", "d3"]
    await add("newest")
    await Document.filter(account_id=account.pk, filename="d4").delete()
    after = page["pageInfo"]["endCursor"]
    page = (await acme.api.data(query, {"id": gid, "first": 2, "after": after}))["account"]
    assert [e["node"]["filename"] for e in page["documents"]["edges"]] == ["d2", "d1"]
    assert page["documents"]["pageInfo"]["hasNextPage"] is True


@pytest.mark.parametrize("size", [1, 2])
async def test_paging_agrees_with_the_databases_own_order_beyond_ascii(acme, size):
    # Each database lowers and collates in its own way (SQLite: ASCII only): the cursor's
    # comparison runs in SQL on the ORDER BY's expression, so pages follow one page exactly.
    names = ["Émile", "émile", "Zoë", "zoe", "Ångström", "angstrom", "ÉMILE", "Zoë", "éa", "EB"]
    firm_id = _firm(acme)
    await _accounts(firm_id, names)
    contact = await Contact.create(firm_id=firm_id, first_name="Ann", last_name="Lee")
    for row in await Account.filter(firm_id=firm_id):
        await AccountContact.create(firm_id=firm_id, account=row, contact=contact)
    whole = (await acme.api.data(ACCOUNTS % (PAGE % "id"), {"first": 100}))["accounts"]
    nodes = await _walk(acme.api, ACCOUNTS % (PAGE % "id"), ["accounts"], size)
    assert nodes == [edge["node"] for edge in whole["edges"]] and len(nodes) == len(names)
    query = (
        "query($id: ID!, $first: Int, $after: String) { contact(id: $id) {"
        " accountsPage(first: $first, after: $after) { %s } } }"
    ) % (PAGE % "id")
    gid = ids.encode("Contact", contact.pk)
    one = await acme.api.data(query, {"id": gid, "first": 100})
    walked = await _walk(acme.api, query, ["contact", "accountsPage"], size, id=gid)
    assert walked == [edge["node"] for edge in one["contact"]["accountsPage"]["edges"]]
    assert sorted(n["id"] for n in walked) == sorted(n["id"] for n in nodes)


@given(
    st.lists(
        st.one_of(
            st.text(),
            st.text(alphabet=st.characters(max_codepoint=127)),
            st.integers(),
            st.integers(min_value=-(2**70), max_value=2**70),
            st.booleans(),
            st.none(),
            st.floats(allow_nan=False, allow_infinity=False),
            st.datetimes(timezones=st.just(UTC)).map(lambda moment: {"t": moment.isoformat()}),
        ),
        max_size=4,
    )
)
def test_cursor_text_is_the_json_modules(values: list[object]) -> None:
    # Cursors are written by orjson where it gives json.dumps's text, and only there.
    assert pagination.compact_json(values) == json.dumps(values, separators=(",", ":"))
