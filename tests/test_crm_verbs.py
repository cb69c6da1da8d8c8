"""updateContact and deleteContact (issue 11): names checked as on create; deleting a contact
has the consequences of removing each of its addresses."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from models import (
    AuditEntry,
    Contact,
    Document,
    EmailAddress,
    Invitation,
    Message,
    MessageAccount,
    OutboundEmail,
    PortalAccess,
    StaffRole,
)
from services.mail import store as message_store
from services.mail.parse import parse_message
from services.shared.scope import FirmScope
from tests.support.api import Api, add_staff, api_for
from tests.support.crm_ops import LINK, REMOVE_EMAIL, new_account, new_contact
from tests.support.login import (
    STATUS,
    accept,
    audit_entries,
    bare_pk,
    deliver,
    login_on,
    portal_token,
    token_in,
)
from tests.support.mail import mail
from tests.support.smtp import smtp_fixture  # noqa: F401  (the `smtp` fixture)
from tests.test_documents import upload

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


async def test_a_rename_is_audited_in_each_linked_account(acme):
    miller = await new_account(acme.api, "Miller Family")
    company = await new_account(acme.api, "Miller GmbH")
    anna = await new_contact(acme.api, "Anna", "Miller", [], [miller["id"], company["id"]])
    await acme.api.ok(UPDATE_CONTACT, {"id": anna["id"], "input": {"firstName": "Hanna"}})
    await acme.api.ok(UPDATE_CONTACT, {"id": anna["id"], "input": {"firstName": "Hanna "}})
    for account in (miller, company):  # once each: the second call changed nothing
        [entry] = await audit_entries(acme.api, account["id"], "CONTACT_UPDATED")
        assert entry["actor"] == "owner@acme.example"
        assert entry["before"]["firstName"] == "Anna" and entry["after"]["firstName"] == "Hanna"


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


DELETE_ACCOUNT = """
mutation($id: ID!) {
  deleteAccount(id: $id) { errors { code field message } account { id name contacts { id } } }
}
"""


async def _store(scope: FirmScope, subject: str, account_ids: list[int]) -> int:
    raw = mail("anna@miller.example", "office@acme.example", subject, message_id=f"<{subject}@x>")
    outcome = await message_store.store_message(scope, parse_message(raw), account_ids)
    return outcome.message.pk


async def test_delete_account_removes_what_is_only_its_own(acme, globex, client, settings, smtp):
    family = await new_account(acme.api, "Miller Family")
    bakery = await new_account(acme.api, "Miller Bakery", "COMPANY")
    anna = await new_contact(
        acme.api, "Anna", "Miller", [("anna@miller.example", "Email")], [family["id"]]
    )
    await acme.api.ok(LINK, {"a": bakery["id"], "c": anna["id"]})
    ben = await new_contact(acme.api, "Ben", "Miller", [("ben@miller.example", "Email")])
    await acme.api.ok(LINK, {"a": family["id"], "c": ben["id"]})
    rows = (await acme.api.data(STATUS, {"id": family["id"]}))["account"]["emails"]
    ben_row = next(r for r in rows if r["emailAddress"]["address"] == "ben@miller.example")
    await login_on(acme.api, ben_row["id"])  # Ben's invitation: queued, not delivered
    client_api = Api(client, await portal_token(acme, family["id"]))  # Anna may enter Family
    shared = b"%PDF-1.4 shared content"
    own = b"%PDF-1.4 only the family's"
    docs = {}
    for account, name, content in [
        (family, "shared.pdf", shared),
        (family, "own.pdf", own),
        (bakery, "shared.pdf", shared),
    ]:
        answer = (await upload(client, acme.api.token, account["id"], name, content)).json()
        docs[(account["name"], name)] = answer["data"]["uploadDocument"]["document"]
    scope = FirmScope(acme.owner.firm_id)
    family_pk, bakery_pk = bare_pk(family["id"], "Account"), bare_pk(bakery["id"], "Account")
    only_family = await _store(scope, "only-family", [family_pk])
    both = await _store(scope, "both", [family_pk, bakery_pk])

    manager = await api_for(
        client, await add_staff(acme, "m@acme.example", can_manage_accounts=True)
    )
    body = await manager.post(DELETE_ACCOUNT, {"id": family["id"]})
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    refused = await globex.api.data(DELETE_ACCOUNT, {"id": family["id"]})
    assert [e["code"] for e in refused["deleteAccount"]["errors"]] == ["NOT_FOUND"]
    assert (await acme.api.data(CONTACT_ACCOUNT, {"id": family["id"]}))["account"] is not None

    last_entry = await AuditEntry.all().order_by("-id").first()
    deleted = await acme.api.ok(DELETE_ACCOUNT, {"id": family["id"]})
    assert deleted["account"] == {"id": family["id"], "name": "Miller Family", "contacts": []}

    assert (await acme.api.data(CONTACT_ACCOUNT, {"id": family["id"]}))["account"] is None
    listed = await acme.api.data("{ accounts(includeArchived: true) { edges { node { name } } } }")
    assert [e["node"]["name"] for e in listed["accounts"]["edges"]] == ["Miller Bakery"]
    # Contacts stay, with their other links.
    for contact, accounts in [(anna, ["Miller Bakery"]), (ben, [])]:
        found = await acme.api.data(CONTACT_LINKS, {"id": contact["id"]})
        assert [a["name"] for a in found["contact"]["accounts"]] == accounts
    # Access, invitations and their queued mail: gone or withdrawn.
    assert (await client_api.data("{ portalAccounts { name } }"))["portalAccounts"] == []
    assert not await PortalAccess.filter(account_id=family_pk).exists()
    assert not await Invitation.filter(account_id=family_pk).exists()
    [invitation_mail] = await OutboundEmail.filter(kind="INVITATION")
    assert (invitation_mail.status, invitation_mail.account_id) == ("CANCELLED", None)
    assert await deliver(settings, smtp) == []
    # Documents: the family's go; a content another account holds stays on disk.
    assert not await Document.filter(account_id=family_pk).exists()
    path = settings.resolved_files_dir
    kept, gone = (docs[("Miller Bakery", "shared.pdf")], docs[("Miller Family", "own.pdf")])
    assert (path / kept["sha256"][:2] / kept["sha256"]).is_file()
    assert not (path / gone["sha256"][:2] / gone["sha256"]).exists()
    bakery_docs = (await acme.api.data(DOCS, {"id": bakery["id"]}))["account"]["documents"]
    assert [e["node"]["filename"] for e in bakery_docs["edges"]] == ["shared.pdf"]
    # Mail: what was only the family's goes; shared mail stays, linked to the bakery.
    assert not await Message.filter(pk=only_family).exists()
    assert await MessageAccount.filter(message_id=both).values_list("account_id", flat=True) == [
        bakery_pk
    ]
    [entry] = await AuditEntry.filter(firm_id=scope.firm_id, action="ACCOUNT_DELETED")
    assert entry.account_id is None and entry.staff_member_id == acme.owner.pk
    assert entry.before["name"] == "Miller Family" and entry.before["messagesDeleted"] == 1
    assert entry.before["documents"] == 2
    # The one entry written: none per document (they would name the account, and go with it).
    assert last_entry is not None and entry.pk == last_entry.pk + 1
    again = await acme.api.data(DELETE_ACCOUNT, {"id": family["id"]})
    assert [e["code"] for e in again["deleteAccount"]["errors"]] == ["NOT_FOUND"]


async def test_delete_account_keeps_mail_a_sync_links_elsewhere_meanwhile(acme, settings):
    """The race: a sync pass links the family's only message to the bakery, uncommitted, while
    deleteAccount runs. The delete waits for it and then keeps the message with that link
    (without the lock it read "only the family's", then deleted it and the new link)."""
    if not settings.database_url.startswith("postgres"):
        pytest.skip("SQLite has one writer at a time: no sync write can come in between")
    family = await new_account(acme.api, "Miller Family")
    bakery = await new_account(acme.api, "Miller Bakery", "COMPANY")
    scope = FirmScope(acme.owner.firm_id)
    family_pk, bakery_pk = bare_pk(family["id"], "Account"), bare_pk(bakery["id"], "Account")
    message_pk = await _store(scope, "racing", [family_pk])
    sync = await asyncpg.connect(settings.database_url)
    try:
        linking = sync.transaction()
        await linking.start()
        await sync.execute(
            "INSERT INTO message_account (firm_id, message_id, account_id, sent_at)"
            " SELECT firm_id, id, $1, sent_at FROM message WHERE id = $2",
            bakery_pk,
            message_pk,
        )
        deleting = asyncio.create_task(acme.api.ok(DELETE_ACCOUNT, {"id": family["id"]}))
        for _ in range(200):  # until the delete waits for the sync's lock
            if await sync.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):
                break
            assert not deleting.done(), deleting.result()
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("deleteAccount never waited for the linking transaction")
        await linking.commit()
        await deleting
    finally:
        await sync.close()

    links = await MessageAccount.filter(message_id=message_pk).values_list("account_id", flat=True)
    assert links == [bakery_pk]
    [entry] = await AuditEntry.filter(firm_id=scope.firm_id, action="ACCOUNT_DELETED")
    assert entry.before["messagesDeleted"] == 0


async def test_admins_may_delete_accounts(acme, client):
    family = await new_account(acme.api, "Miller Family")
    admin = await api_for(client, await add_staff(acme, "a@acme.example", StaffRole.ADMIN))
    await admin.ok(DELETE_ACCOUNT, {"id": family["id"]})
    assert (await acme.api.data(CONTACT_ACCOUNT, {"id": family["id"]}))["account"] is None


CONTACT_ACCOUNT = "query($id: ID!) { account(id: $id) { name } }"
CONTACT_LINKS = "query($id: ID!) { contact(id: $id) { accounts { name } } }"
DOCS = "query($id: ID!) { account(id: $id) { documents { edges { node { filename } } } } }"
