"""updateContact and deleteContact (issue 11): names checked as on create; deleting a contact
has the consequences of removing each of its addresses."""

from __future__ import annotations

from models import Contact, EmailAddress, OutboundEmail
from tests.support.api import Api, add_staff, api_for
from tests.support.crm_ops import LINK, REMOVE_EMAIL, new_account, new_contact
from tests.support.login import (
    STATUS,
    accept,
    audit_entries,
    bare_pk,
    deliver,
    login_on,
    token_in,
)
from tests.support.smtp import smtp_fixture  # noqa: F401  (the `smtp` fixture)

UPDATE_CONTACT = """
mutation($id: ID!, $input: UpdateContactInput!) {
  updateContact(id: $id, input: $input) {
    errors { code field message } contact { id firstName lastName }
  }
}
"""
DELETE_CONTACT = """
mutation($id: ID!) {
  deleteContact(id: $id) {
    errors { code field message } contact { id firstName lastName emailAddresses { id } }
  }
}
"""
CONTACT = "query($id: ID!) { contact(id: $id) { firstName lastName } }"


async def test_update_contact_trims_and_keeps_null_fields(acme):
    anna = await new_contact(acme.api, "Anna", "Miller")
    renamed = await acme.api.ok(
        UPDATE_CONTACT, {"id": anna["id"], "input": {"firstName": "  Hanna "}}
    )
    assert renamed["contact"] == {"id": anna["id"], "firstName": "Hanna", "lastName": "Miller"}
    cleared = await acme.api.ok(UPDATE_CONTACT, {"id": anna["id"], "input": {"firstName": ""}})
    assert (cleared["contact"]["firstName"], cleared["contact"]["lastName"]) == ("", "Miller")
    unchanged = await acme.api.ok(UPDATE_CONTACT, {"id": anna["id"], "input": {}})
    assert unchanged["contact"]["lastName"] == "Miller"


async def test_update_contact_refuses_bad_names_and_writes_nothing(acme):
    anna = await new_contact(acme.api, "Anna", "Miller")
    data = await acme.api.data(
        UPDATE_CONTACT, {"id": anna["id"], "input": {"firstName": " ", "lastName": ""}}
    )
    assert data["updateContact"]["contact"] is None
    assert [(e["code"], e["field"]) for e in data["updateContact"]["errors"]] == [
        ("INVALID_NAME", ["input"])
    ]
    data = await acme.api.data(
        UPDATE_CONTACT, {"id": anna["id"], "input": {"firstName": "x" * 101, "lastName": "y"}}
    )
    assert [(e["code"], e["field"]) for e in data["updateContact"]["errors"]] == [
        ("INVALID_NAME", ["input", "firstName"])
    ]
    stored = await acme.api.data(CONTACT, {"id": anna["id"]})
    assert stored["contact"] == {"firstName": "Anna", "lastName": "Miller"}


async def test_contact_verbs_need_the_right_and_the_firm(acme, globex, client):
    anna = await new_contact(acme.api, "Anna", "Miller")
    reader = await api_for(client, await add_staff(acme, "reader@acme.example"))
    for document, variables in [
        (UPDATE_CONTACT, {"id": anna["id"], "input": {"firstName": "X"}}),
        (DELETE_CONTACT, {"id": anna["id"]}),
    ]:
        [payload] = (await globex.api.data(document, variables)).values()
        assert [e["code"] for e in payload["errors"]] == ["NOT_FOUND"]
        for api, code in [(reader, "FORBIDDEN"), (Api(client), "UNAUTHENTICATED")]:
            body = await api.post(document, variables)
            assert body["errors"][0]["extensions"]["code"] == code
    stored = await acme.api.data(CONTACT, {"id": anna["id"]})
    assert stored["contact"] == {"firstName": "Anna", "lastName": "Miller"}


async def _family_with_anna(acme, client, settings, smtp) -> dict:
    """Two accounts sharing Anna: in Family she is an activated client on her first address,
    in Bakery an invitation to her second address is pending (mailed, not delivered)."""
    family = await new_account(acme.api, "Miller Family")
    bakery = await new_account(acme.api, "Miller Bakery", "COMPANY")
    anna = await new_contact(
        acme.api,
        "Anna",
        "Miller",
        [("anna@miller.example", "Email"), ("anna@bakery.example", "Work")],
        [family["id"], bakery["id"]],
    )
    family_rows = (await acme.api.data(STATUS, {"id": family["id"]}))["account"]["emails"]
    home = next(r for r in family_rows if r["emailAddress"]["address"] == "anna@miller.example")
    await login_on(acme.api, home["id"])
    accepted = await accept(Api(client), token_in((await deliver(settings, smtp))[-1]))
    client_api = Api(client, accepted["token"])
    bakery_rows = (await acme.api.data(STATUS, {"id": bakery["id"]}))["account"]["emails"]
    work = next(r for r in bakery_rows if r["emailAddress"]["address"] == "anna@bakery.example")
    await login_on(acme.api, work["id"])  # queued: still undelivered
    return {"family": family, "bakery": bakery, "anna": anna, "client": client_api}


async def _state(acme, setup: dict) -> dict:
    """What removing Anna's addresses leaves: per account, its statuses and audit actions."""
    result = {}
    for name in ("family", "bakery"):
        account_id = setup[name]["id"]
        status = (await acme.api.data(STATUS, {"id": account_id}))["account"]
        revoked = await audit_entries(acme.api, account_id, "INVITATION_REVOKED")
        result[name] = {
            "emails": status["emails"],
            "unlinked": [u["portalUser"]["email"] for u in status["unlinkedEmails"]],
            "invitations": status["invitations"],
            "revoked_by": [e["actor"].split("@")[0] for e in revoked],
        }
    queued = await OutboundEmail.filter(firm_id=acme.owner.firm_id, kind="INVITATION").values_list(
        "status", flat=True
    )
    result["invitation_mail"] = sorted(queued)
    view = await setup["client"].data("{ portalAccounts { name } }")
    result["client_sees"] = [a["name"] for a in view["portalAccounts"]]
    return result


async def test_delete_contact_matches_removing_each_address(acme, globex, client, settings, smtp):
    removed = await _family_with_anna(acme, client, settings, smtp)
    for email in removed["anna"]["emailAddresses"]:
        await acme.api.ok(REMOVE_EMAIL, {"id": email["id"]})
    by_removal = await _state(acme, removed)

    # The same in another firm (same names and addresses), by deleteContact.
    deleted = await _family_with_anna(globex, client, settings, smtp)
    answer = await globex.api.ok(DELETE_CONTACT, {"id": deleted["anna"]["id"]})
    assert answer["contact"] == {
        "id": deleted["anna"]["id"],
        "firstName": "Anna",
        "lastName": "Miller",
        "emailAddresses": [],
    }
    assert await _state(globex, deleted) == by_removal
    # The consequences themselves: the pending invitation died with its mail; Anna's access
    # to Family stays under unlinked emails; toggles are gone.
    assert by_removal["family"]["unlinked"] == ["anna@miller.example"]
    assert by_removal["client_sees"] == ["Miller Family"]
    assert by_removal["bakery"]["emails"] == []
    assert by_removal["bakery"]["invitations"] == [
        {"email": "anna@bakery.example", "status": "REVOKED"}
    ]
    assert "CANCELLED" in by_removal["invitation_mail"]
    assert by_removal["bakery"]["revoked_by"] == ["owner"]

    assert (await globex.api.data(CONTACT, {"id": deleted["anna"]["id"]}))["contact"] is None
    assert not await Contact.filter(pk=bare_pk(deleted["anna"]["id"], "Contact")).exists()
    assert not await EmailAddress.filter(firm_id=globex.owner.firm_id).exists()
    for name in ("family", "bakery"):
        [entry] = await audit_entries(globex.api, deleted[name]["id"], "CONTACT_DELETED")
        assert entry["actor"] == "owner@globex.example"
        assert entry["before"]["emails"] == ["anna@miller.example", "anna@bakery.example"]
    again = await globex.api.data(DELETE_CONTACT, {"id": deleted["anna"]["id"]})
    assert [e["code"] for e in again["deleteContact"]["errors"]] == ["NOT_FOUND"]


async def test_deleted_contacts_revoked_invitation_cannot_be_accepted(acme, client, settings, smtp):
    family = await new_account(acme.api, "Miller Family")
    anna = await new_contact(acme.api, "Anna", "Miller", [("anna@x.example", "Email")])
    linked = await acme.api.ok(LINK, {"a": family["id"], "c": anna["id"]})
    await login_on(acme.api, linked["account"]["emails"][0]["id"])
    [mail] = await deliver(settings, smtp)
    await acme.api.ok(DELETE_CONTACT, {"id": anna["id"]})
    refused = await accept(Api(client), token_in(mail))
    assert [e["code"] for e in refused["errors"]] == ["INVITATION_REVOKED"]
