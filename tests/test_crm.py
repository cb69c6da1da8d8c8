"""The CRM API: accounts, contacts, links, addresses, lists with search and paging."""

from __future__ import annotations

from models import AccountEmail, Contact, EmailAddress
from tests.support.api import add_staff, api_for
from tests.support.crm_ops import (
    ACCOUNT,
    ADD_EMAIL,
    CREATE_ACCOUNT,
    CREATE_CONTACT,
    LINK,
    REMOVE_EMAIL,
    UNLINK,
    UPDATE_ACCOUNT,
    UPDATE_EMAIL,
    new_account,
    new_contact,
)


async def test_account_lifecycle(acme):
    account = await new_account(acme.api, "  Miller Family ")
    assert account["name"] == "Miller Family" and account["type"] == "FAMILY"
    assert account["autoSaveAttachments"] is False
    updated = await acme.api.ok(
        UPDATE_ACCOUNT,
        {"id": account["id"], "input": {"type": "COMPANY", "autoSaveAttachments": True}},
    )
    assert updated["account"] == {**account, "type": "COMPANY", "autoSaveAttachments": True}
    data = await acme.api.data(
        "query($id: ID!) { node(id: $id) { ... on Account { name type } } }", {"id": account["id"]}
    )
    assert data["node"] == {"name": "Miller Family", "type": "COMPANY"}


async def test_account_bad_input(acme):
    data = await acme.api.data(CREATE_ACCOUNT, {"input": {"name": " ", "type": "FAMILY"}})
    assert data["createAccount"] == {
        "errors": [
            {
                "code": "INVALID_NAME",
                "field": ["input", "name"],
                "message": data["createAccount"]["errors"][0]["message"],
            }
        ],
        "account": None,
    }
    body = await acme.api.post(CREATE_ACCOUNT, {"input": {"name": "X", "type": "TRUST"}})
    assert "errors" in body and body.get("data") is None  # not a valid enum: a GraphQL error
    account = await new_account(acme.api, "Kept")
    data = await acme.api.data(UPDATE_ACCOUNT, {"id": account["id"], "input": {"name": "x" * 201}})
    assert data["updateAccount"]["errors"][0]["code"] == "INVALID_NAME"
    assert (await acme.api.data(ACCOUNT, {"id": account["id"]}))["account"]["name"] == "Kept"
    total = await acme.api.data("{ accounts { totalCount } }")
    assert total["accounts"]["totalCount"] == 1


async def test_contact_with_addresses_and_accounts(acme):
    family = await new_account(acme.api, "Miller Family")
    bakery = await new_account(acme.api, "Miller Bakery", "COMPANY")
    anna = await new_contact(
        acme.api,
        "Anna",
        "Miller",
        emails=[("Anna@Miller.example", "Email"), ("anna@bakery.example", "Work Email")],
        account_ids=[family["id"], bakery["id"]],
    )
    assert [(e["address"], e["label"]) for e in anna["emailAddresses"]] == [
        ("Anna@Miller.example", "Email"),
        ("anna@bakery.example", "Work Email"),
    ]
    assert sorted(a["name"] for a in anna["accounts"]) == ["Miller Bakery", "Miller Family"]

    account = (await acme.api.data(ACCOUNT, {"id": family["id"]}))["account"]
    assert [c["firstName"] for c in account["contacts"]] == ["Anna"]
    emails = account["emails"]
    assert [e["emailAddress"]["address"] for e in emails] == [
        "Anna@Miller.example",
        "anna@bakery.example",
    ]
    assert all(not (e["login"] or e["notify"] or e["emailSync"]) for e in emails)
    assert all(e["account"]["id"] == family["id"] for e in emails)
    assert all(e["emailAddress"]["contact"]["id"] == anna["id"] for e in emails)
    # AccountEmail ids are per account: the same address has another row in the bakery.
    bakery_emails = (await acme.api.data(ACCOUNT, {"id": bakery["id"]}))["account"]["emails"]
    assert {e["id"] for e in bakery_emails}.isdisjoint({e["id"] for e in emails})
    node = await acme.api.data(
        "query($id: ID!) { node(id: $id) { ... on AccountEmail { emailAddress { address } account { id } } } }",
        {"id": emails[0]["id"]},
    )
    assert node["node"] == {
        "emailAddress": {"address": "Anna@Miller.example"},
        "account": {"id": family["id"]},
    }


async def test_contact_bad_input_writes_nothing(acme):
    await new_contact(acme.api, "Ben", "Miller", emails=[("ben@miller.example", "Email")])
    cases = [
        ({"firstName": " ", "lastName": ""}, "INVALID_NAME", ["input"]),
        (
            {
                "firstName": "A",
                "lastName": "B",
                "emails": [{"address": "a@b.example"}, {"address": "bad"}],
            },
            "INVALID_EMAIL",
            ["input", "emails", "1", "address"],
        ),
        (
            {"firstName": "A", "lastName": "B", "emails": [{"address": "BEN@miller.example"}]},
            "EMAIL_TAKEN",
            ["input", "emails", "0", "address"],
        ),
        (
            {
                "firstName": "A",
                "lastName": "B",
                "emails": [{"address": "x@y.example"}, {"address": "X@Y.example"}],
            },
            "EMAIL_TAKEN",
            ["input", "emails", "1"],
        ),
        (
            {"firstName": "A", "lastName": "B", "accountIds": ["QWNjb3VudDo5OTk="]},
            "NOT_FOUND",
            ["input", "accountIds", "0"],
        ),
        (
            {"firstName": "A", "lastName": "B", "accountIds": ["garbage"]},
            "NOT_FOUND",
            ["input", "accountIds", "0"],
        ),
    ]
    for contact_input, code, field in cases:
        data = await acme.api.data(CREATE_CONTACT, {"input": contact_input})
        payload = data["createContact"]
        assert payload["contact"] is None, contact_input
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [(code, field)], (
            contact_input
        )
    assert await Contact.all().count() == 1
    assert await EmailAddress.all().count() == 1


async def test_contact_names_at_their_limits(acme):
    """A name of 100 characters is taken; 101 is refused, each long name reported at its
    own field (the CSV import reports the same rule at its columns)."""
    ok = await new_contact(acme.api, "F" * 100, "L" * 100)
    assert (ok["firstName"], ok["lastName"]) == ("F" * 100, "L" * 100)
    data = await acme.api.data(
        CREATE_CONTACT, {"input": {"firstName": "F" * 101, "lastName": "L" * 101}}
    )
    errors = data["createContact"]["errors"]
    assert [(e["code"], e["field"]) for e in errors] == [
        ("INVALID_NAME", ["input", "firstName"]),
        ("INVALID_NAME", ["input", "lastName"]),
    ]
    assert await Contact.all().count() == 1


async def test_link_and_unlink(acme):
    family = await new_account(acme.api, "Family")
    ben = await new_contact(
        acme.api, "Ben", "Miller", emails=[("ben@m.example", "Email"), ("b@work.example", "Work")]
    )
    linked = await acme.api.ok(LINK, {"a": family["id"], "c": ben["id"]})
    assert [c["id"] for c in linked["account"]["contacts"]] == [ben["id"]]
    assert len(linked["account"]["emails"]) == 2
    again = await acme.api.ok(LINK, {"a": family["id"], "c": ben["id"]})  # harmless twice
    assert again["account"]["emails"] == linked["account"]["emails"]

    unlinked = await acme.api.ok(UNLINK, {"a": family["id"], "c": ben["id"]})
    assert unlinked["account"]["contacts"] == [] and unlinked["account"]["emails"] == []
    data = await acme.api.data(UNLINK, {"a": family["id"], "c": ben["id"]})
    assert data["unlinkContact"]["errors"][0]["code"] == "NOT_LINKED"
    # Relinking starts the toggles afresh.
    relinked = await acme.api.ok(LINK, {"a": family["id"], "c": ben["id"]})
    assert len(relinked["account"]["emails"]) == 2
    assert await AccountEmail.filter(login=True).count() == 0


async def test_email_addresses(acme):
    family = await new_account(acme.api, "Family")
    ben = await new_contact(acme.api, "Ben", "Miller", account_ids=[family["id"]])
    added = await acme.api.ok(
        ADD_EMAIL, {"c": ben["id"], "email": {"address": " Ben@Miller.example "}}
    )
    email = added["emailAddress"]
    assert (email["address"], email["label"], email["contact"]["id"]) == (
        "Ben@Miller.example",
        "Email",
        ben["id"],
    )
    emails = (await acme.api.data(ACCOUNT, {"id": family["id"]}))["account"]["emails"]
    assert [e["emailAddress"]["id"] for e in emails] == [email["id"]]

    other = await new_contact(acme.api, "Other", "Person", emails=[("other@x.example", "Email")])
    taken = await acme.api.data(
        ADD_EMAIL, {"c": other["id"], "email": {"address": "BEN@miller.EXAMPLE"}}
    )
    assert taken["addEmailAddress"]["errors"][0]["code"] == "EMAIL_TAKEN"
    assert taken["addEmailAddress"]["errors"][0]["field"] == ["email", "address"]

    changed = await acme.api.ok(
        UPDATE_EMAIL, {"id": email["id"], "address": "ben@new.example", "label": "Private"}
    )
    assert changed["emailAddress"] == {
        "id": email["id"],
        "address": "ben@new.example",
        "label": "Private",
    }
    case_only = await acme.api.ok(UPDATE_EMAIL, {"id": email["id"], "address": "Ben@New.example"})
    assert case_only["emailAddress"]["label"] == "Private"  # label kept when not given
    for address, code in [("other@x.example", "EMAIL_TAKEN"), ("nope", "INVALID_EMAIL")]:
        data = await acme.api.data(UPDATE_EMAIL, {"id": email["id"], "address": address})
        assert data["updateEmailAddress"]["errors"][0]["code"] == code
    assert (
        await EmailAddress.get(address_normalized="ben@new.example")
    ).address == "Ben@New.example"

    removed = await acme.api.ok(REMOVE_EMAIL, {"id": email["id"]})
    assert removed["emailAddress"]["address"] == "Ben@New.example"
    assert (await acme.api.data(ACCOUNT, {"id": family["id"]}))["account"]["emails"] == []
    again = await acme.api.data(REMOVE_EMAIL, {"id": email["id"]})
    assert again["removeEmailAddress"]["errors"][0]["code"] == "NOT_FOUND"


async def test_lists_search_and_paging(acme):
    for name in ["Charlie Co", "alpha family", "Bravo GmbH", "Alphabet Inc"]:
        await new_account(acme.api, name)
    await new_contact(acme.api, "Anna", "Zeta", emails=[("anna@zeta.example", "Email")])
    await new_contact(acme.api, "Zed", "Alpha")

    query = "query($first: Int, $after: String, $search: String) { accounts(first: $first, after: $after, search: $search) { totalCount pageInfo { hasNextPage hasPreviousPage endCursor } edges { cursor node { name } } } }"
    page = (await acme.api.data(query, {"first": 2}))["accounts"]
    assert page["totalCount"] == 4
    # Alphabetical whatever the case, on SQLite and PostgreSQL alike.
    assert [e["node"]["name"] for e in page["edges"]] == ["alpha family", "Alphabet Inc"]
    assert page["pageInfo"]["hasNextPage"] and not page["pageInfo"]["hasPreviousPage"]
    rest = (await acme.api.data(query, {"first": 10, "after": page["pageInfo"]["endCursor"]}))[
        "accounts"
    ]
    assert len(rest["edges"]) == 2 and not rest["pageInfo"]["hasNextPage"]
    assert [e["node"]["name"] for e in rest["edges"]] == ["Bravo GmbH", "Charlie Co"]

    found = (await acme.api.data(query, {"search": "ALPHA"}))["accounts"]
    assert found["totalCount"] == 2
    assert (await acme.api.data(query, {"first": None}))["accounts"]["totalCount"] == 4

    contacts = (
        "query($s: String) { contacts(search: $s) { totalCount edges { node { lastName } } } }"
    )
    assert [
        e["node"]["lastName"] for e in (await acme.api.data(contacts, {}))["contacts"]["edges"]
    ] == ["Alpha", "Zeta"]
    by_address = (await acme.api.data(contacts, {"s": "ZETA.EXAMPLE"}))["contacts"]
    assert [e["node"]["lastName"] for e in by_address["edges"]] == ["Zeta"]
    by_name = (await acme.api.data(contacts, {"s": "alp"}))["contacts"]
    assert by_name["totalCount"] == 1


async def test_read_only_employee(acme, client):
    family = await new_account(acme.api, "Family")
    reader = await api_for(client, await add_staff(acme, "reader@acme.example"))
    assert (await reader.data(ACCOUNT, {"id": family["id"]}))["account"]["name"] == "Family"
    writes = [
        (CREATE_ACCOUNT, {"input": {"name": "X", "type": "FAMILY"}}),
        (UPDATE_ACCOUNT, {"id": family["id"], "input": {"name": "Y"}}),
        (CREATE_CONTACT, {"input": {"firstName": "A", "lastName": "B"}}),
    ]
    for document, variables in writes:
        body = await reader.post(document, variables)
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert (await acme.api.data("{ accounts { totalCount } }"))["accounts"]["totalCount"] == 1
    manager = await api_for(
        client, await add_staff(acme, "m@acme.example", can_manage_accounts=True)
    )
    assert (await new_account(manager, "By manager"))["name"] == "By manager"
