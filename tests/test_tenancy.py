"""Tenancy: another firm's ids read as null / NOT_FOUND everywhere, and nothing crosses."""

from __future__ import annotations

from models import Account, AccountContact, Contact, EmailAddress, StaffMember
from tests.support.crm_ops import (
    ACCOUNT,
    ADD_EMAIL,
    CREATE_CONTACT,
    LINK,
    REMOVE_EMAIL,
    UNLINK,
    UPDATE_ACCOUNT,
    UPDATE_EMAIL,
    new_account,
    new_contact,
)
from tests.support.staff_ops import UPDATE as UPDATE_STAFF

NODE = "query($id: ID!) { node(id: $id) { __typename id } }"


async def _globex_world(globex) -> dict[str, str]:
    """One object of each type in globex, by type name, as global ids."""
    account = await new_account(globex.api, "Globex Holdings", "COMPANY")
    contact = await new_contact(
        globex.api,
        "Hank",
        "Scorpio",
        emails=[("hank@globex.example", "Email")],
        account_ids=[account["id"]],
    )
    data = await globex.api.data(ACCOUNT, {"id": account["id"]})
    [account_email] = data["account"]["emails"]
    firm = await globex.api.data("{ firm { id } viewer { ... on StaffMember { id } } }")
    return {
        "Account": account["id"],
        "Contact": contact["id"],
        "EmailAddress": contact["emailAddresses"][0]["id"],
        "AccountEmail": account_email["id"],
        "Firm": firm["firm"]["id"],
        "StaffMember": firm["viewer"]["id"],
    }


async def _snapshot() -> tuple:
    return (
        await Account.all().order_by("id").values_list("firm_id", "name", "type"),
        await Contact.all().order_by("id").values_list("firm_id", "first_name", "last_name"),
        await EmailAddress.all()
        .order_by("id")
        .values_list("firm_id", "contact_id", "address", "label"),
        await AccountContact.all().order_by("id").values_list("account_id", "contact_id"),
        await StaffMember.all().order_by("id").values_list("firm_id", "name", "role", "active"),
    )


async def test_other_firms_ids_read_as_null(acme, globex):
    theirs = await _globex_world(globex)
    for type_name, global_id in theirs.items():
        assert (await globex.api.data(NODE, {"id": global_id}))["node"]["__typename"] == type_name
        assert (await acme.api.data(NODE, {"id": global_id}))["node"] is None, type_name
    assert (await acme.api.data(ACCOUNT, {"id": theirs["Account"]}))["account"] is None
    contact = "query($id: ID!) { contact(id: $id) { id } }"
    assert (await acme.api.data(contact, {"id": theirs["Contact"]}))["contact"] is None
    # An id of one type passed where another is expected is not found either.
    assert (await globex.api.data(ACCOUNT, {"id": theirs["Contact"]}))["account"] is None


async def test_lists_and_search_stay_in_the_firm(acme, globex):
    await _globex_world(globex)
    await new_account(acme.api, "Acme Family")
    data = await acme.api.data(
        """{ accounts(search: "holdings") { totalCount }
             contacts(search: "globex") { totalCount }
             staffMembers { email } }"""
    )
    assert data["accounts"]["totalCount"] == 0
    assert data["contacts"]["totalCount"] == 0
    assert [m["email"] for m in data["staffMembers"]] == ["owner@acme.example"]
    everything = await acme.api.data("{ accounts { totalCount } contacts { totalCount } }")
    assert everything == {"accounts": {"totalCount": 1}, "contacts": {"totalCount": 0}}


async def test_mutations_on_other_firms_ids_are_not_found_and_change_nothing(acme, globex):
    theirs = await _globex_world(globex)
    mine_account = await new_account(acme.api, "Acme Family")
    mine_contact = await new_contact(
        acme.api, "Ann", "Acme", emails=[("ann@acme.example", "Email")]
    )
    before = await _snapshot()

    attempts = [
        ("updateAccount", UPDATE_ACCOUNT, {"id": theirs["Account"], "input": {"name": "Pwned"}}),
        ("linkContact", LINK, {"a": mine_account["id"], "c": theirs["Contact"]}),
        ("linkContact", LINK, {"a": theirs["Account"], "c": mine_contact["id"]}),
        ("unlinkContact", UNLINK, {"a": theirs["Account"], "c": theirs["Contact"]}),
        (
            "addEmailAddress",
            ADD_EMAIL,
            {"c": theirs["Contact"], "email": {"address": "x@x.example"}},
        ),
        (
            "updateEmailAddress",
            UPDATE_EMAIL,
            {"id": theirs["EmailAddress"], "address": "p@x.example"},
        ),
        ("removeEmailAddress", REMOVE_EMAIL, {"id": theirs["EmailAddress"]}),
        (
            "createContact",
            CREATE_CONTACT,
            {"input": {"firstName": "A", "lastName": "B", "accountIds": [theirs["Account"]]}},
        ),
        (
            "updateStaffMember",
            UPDATE_STAFF,
            {"id": theirs["StaffMember"], "input": {"active": False}},
        ),
    ]
    for name, document, variables in attempts:
        payload = (await acme.api.data(document, variables))[name]
        assert [e["code"] for e in payload["errors"]] == ["NOT_FOUND"], (name, payload)
    assert await _snapshot() == before


async def test_the_same_address_may_live_in_two_firms(acme, globex):
    await new_contact(globex.api, "Hank", "Scorpio", emails=[("shared@example.com", "Email")])
    contact = await new_contact(
        acme.api, "Shared", "Person", emails=[("SHARED@example.com", "Email")]
    )
    assert contact["emailAddresses"][0]["address"] == "SHARED@example.com"
