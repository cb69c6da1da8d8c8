"""archiveAccount / unarchiveAccount (issue 11): out of lists and the portal, no mail to it, no
new synced mail linked to it; nothing deleted; both verbs idempotent."""

from __future__ import annotations

from models import Invitation, OutboundEmail, PortalAccess
from services.mail import sync_engine
from services.shared.scope import FirmScope
from tests.support.api import Api, add_staff, api_for
from tests.support.crm_ops import UPDATE_EMAIL, new_account
from tests.support.imap import ImapServer, imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.login import (
    FLAGS,
    RESEND,
    STATUS,
    accept,
    audit_entries,
    deliver,
    invitee,
    login_on,
    portal_token,
    token_in,
)
from tests.support.mail import add_mailbox, mail
from tests.support.smtp import smtp_fixture  # noqa: F401  (the `smtp` fixture)
from tests.test_documents import PDF, upload

ARCHIVE = """
mutation($id: ID!) {
  archiveAccount(id: $id) { errors { code field message } account { id name archivedAt } }
}
"""
UNARCHIVE = ARCHIVE.replace("archiveAccount", "unarchiveAccount")
LIST = """
query($all: Boolean) {
  accounts(includeArchived: $all) { totalCount edges { node { name archivedAt } } }
}
"""
LIST_DEFAULT = "{ accounts { totalCount edges { node { name } } } }"
SEND = """mutation($input: SendFirmEmailInput!) {
  sendFirmEmail(input: $input) { errors { code field } queued } }"""
EVENT = """mutation($input: ClientEventInput!) {
  notifyClientEvent(input: $input) { errors { code field } queued } }"""
CLIENT = "{ portalAccounts { name } currentAccount { name } }"
TAB = "query($id: ID!) { account(id: $id) { messages { edges { node { subject } } } } }"


async def _names(api: Api, include: bool | None = None) -> list[str]:
    data = await api.data(LIST, {"all": include} if include is not None else {})
    return [edge["node"]["name"] for edge in data["accounts"]["edges"]]


async def test_archived_account_leaves_lists_and_comes_back(acme):
    family = await new_account(acme.api, "Miller Family")
    await new_account(acme.api, "Baker Ltd", "COMPANY")
    archived = (await acme.api.ok(ARCHIVE, {"id": family["id"]}))["account"]
    assert archived["archivedAt"] is not None
    assert await _names(acme.api) == ["Baker Ltd"]
    assert await _names(acme.api, False) == ["Baker Ltd"]
    assert await _names(acme.api, True) == ["Baker Ltd", "Miller Family"]
    default = await acme.api.data(LIST_DEFAULT)
    assert default["accounts"]["totalCount"] == 1
    # Staff still read it by id (to unarchive it, or look back).
    one = await acme.api.data("query($id: ID!) { account(id: $id) { name } }", family)
    assert one["account"] == {"name": "Miller Family"}

    again = (await acme.api.ok(ARCHIVE, {"id": family["id"]}))["account"]
    assert again["archivedAt"] == archived["archivedAt"]  # idempotent: the first time stands
    back = (await acme.api.ok(UNARCHIVE, {"id": family["id"]}))["account"]
    assert back["archivedAt"] is None
    assert (await acme.api.ok(UNARCHIVE, {"id": family["id"]}))["account"]["archivedAt"] is None
    assert await _names(acme.api) == ["Baker Ltd", "Miller Family"]
    actions = [e["action"] for e in await audit_entries(acme.api, family["id"])]
    assert actions == ["ACCOUNT_UNARCHIVED", "ACCOUNT_ARCHIVED"]  # newest first, once each


async def test_archive_verbs_need_the_right_and_the_firm(acme, globex, client):
    family = await new_account(acme.api, "Miller Family")
    reader = await api_for(client, await add_staff(acme, "reader@acme.example"))
    for document in (ARCHIVE, UNARCHIVE):
        [payload] = (await globex.api.data(document, family)).values()
        assert [e["code"] for e in payload["errors"]] == ["NOT_FOUND"]
        for api, code in [(reader, "FORBIDDEN"), (Api(client), "UNAUTHENTICATED")]:
            body = await api.post(document, family)
            assert body["errors"][0]["extensions"]["code"] == code
    assert await _names(acme.api) == ["Miller Family"]


async def test_client_loses_access_when_archived_and_regains_it(acme, client):
    family = await new_account(acme.api, "Miller Family")
    token = await portal_token(acme, family["id"])
    anna = Api(client, token)
    uploaded = (await upload(client, acme.api.token, family["id"], "a.pdf", PDF)).json()
    download = "/documents/" + uploaded["data"]["uploadDocument"]["document"]["id"]
    as_client = {"Authorization": f"Bearer {token}"}
    assert (await client.get(download, headers=as_client)).status_code == 200
    assert await anna.data(CLIENT) == {
        "portalAccounts": [{"name": "Miller Family"}],
        "currentAccount": {"name": "Miller Family"},
    }
    await acme.api.ok(ARCHIVE, family)
    assert await anna.data(CLIENT) == {"portalAccounts": [], "currentAccount": None}
    own = await anna.data("query($id: ID!) { account(id: $id) { name } }", family)
    assert own["account"] is None
    switched = await anna.data(
        "mutation($id: ID!) { switchAccount(accountId: $id) { errors { code } } }", family
    )
    assert [e["code"] for e in switched["switchAccount"]["errors"]] == ["NOT_FOUND"]
    assert await PortalAccess.filter(firm_id=acme.owner.firm_id).count() == 1  # kept
    assert (await client.get(download, headers=as_client)).status_code == 404

    await acme.api.ok(UNARCHIVE, family)
    assert await anna.data(CLIENT) == {
        "portalAccounts": [{"name": "Miller Family"}],
        "currentAccount": {"name": "Miller Family"},
    }
    assert (await client.get(download, headers=as_client)).status_code == 200


async def test_no_mail_goes_to_an_archived_account(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}})
    await login_on(acme.api, anna.account_email_id)  # an invitation, mailed
    [mail_sent] = await deliver(settings, smtp)
    await acme.api.ok(UNARCHIVE, {"id": anna.account_id})  # harmless on an active account
    await acme.api.ok(RESEND, {"id": anna.account_email_id})  # a second, still queued
    event = {
        "accountId": anna.account_id,
        "category": "DOCUMENT_UPLOADS",
        "title": "New document",
        "body": "See the portal.",
    }
    assert (await acme.api.ok(EVENT, {"input": event}))["queued"] == 1  # queued, undelivered
    await acme.api.ok(ARCHIVE, {"id": anna.account_id})

    # What was pending dies: the links and the mail no worker had taken.
    refused = await accept(Api(client), token_in(mail_sent))
    assert [e["code"] for e in refused["errors"]] == ["INVITATION_REVOKED"]
    statuses = await OutboundEmail.filter(firm_id=acme.owner.firm_id).values_list("kind", "status")
    assert sorted(statuses) == [
        ("INVITATION", "CANCELLED"),
        ("INVITATION", "SENT"),
        ("NOTIFICATION", "CANCELLED"),
    ]
    before = await OutboundEmail.all().count()

    # Nothing new is queued: notifications and firm emails find no recipients...
    assert (await acme.api.ok(EVENT, {"input": event}))["queued"] == 0
    firm_email = {"accountIds": [anna.account_id], "subject": "Hello", "body": "News."}
    assert (await acme.api.ok(SEND, {"input": firm_email}))["queued"] == 0
    # ...invitations are refused, and nothing is written...
    resent = await acme.api.data(RESEND, {"id": anna.account_email_id})
    assert [e["code"] for e in resent["resendInvitation"]["errors"]] == ["ACCOUNT_ARCHIVED"]
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "login": False}})
    refused = await acme.api.data(
        FLAGS, {"input": {"accountEmailId": anna.account_email_id, "login": True}}
    )
    assert [e["code"] for e in refused["setEmailFlags"]["errors"]] == ["ACCOUNT_ARCHIVED"]
    assert refused["setEmailFlags"]["accountEmail"] is None
    row = (await acme.api.data(STATUS, {"id": anna.account_id}))["account"]["emails"][0]
    assert row["login"] is False
    # ...and a changed address with LOGIN on sends no new invitation.
    await acme.api.ok(UNARCHIVE, {"id": anna.account_id})
    await login_on(acme.api, anna.account_email_id, send=False)
    await acme.api.ok(ARCHIVE, {"id": anna.account_id})
    invitations = await Invitation.filter(firm_id=acme.owner.firm_id).count()
    await acme.api.ok(UPDATE_EMAIL, {"id": anna.email_id, "address": "anna@new.example"})
    assert await Invitation.filter(firm_id=acme.owner.firm_id).count() == invitations
    assert await OutboundEmail.all().count() == before
    assert len(await deliver(settings, smtp)) == 1  # only the first invitation ever went out


async def test_sync_links_no_new_mail_to_an_archived_account(acme, settings, imap: ImapServer):
    family = await invitee(acme.api, "Doe Family", "jane@client.example", first="Jane")
    company = await new_account(acme.api, "Doe Ltd", "COMPANY")
    await acme.api.ok(
        "mutation($a: ID!, $c: ID!) { linkContact(accountId: $a, contactId: $c) { errors { code } } }",
        {"a": company["id"], "c": family.contact_id},
    )
    for account_id in (family.account_id, company["id"]):
        rows = (await acme.api.data(STATUS, {"id": account_id}))["account"]["emails"]
        await acme.api.ok(FLAGS, {"input": {"accountEmailId": rows[0]["id"], "emailSync": True}})
    scope = FirmScope(acme.owner.firm_id)
    mailbox = await add_mailbox(scope.firm_id, imap, settings)
    imap.append(mailbox.username, mail("jane@client.example", mailbox.address, "Before"))
    await sync_engine.sync_mailbox(scope, mailbox, settings, None)

    await acme.api.ok(ARCHIVE, {"id": family.account_id})
    imap.append(mailbox.username, mail("jane@client.example", mailbox.address, "While archived"))
    await sync_engine.sync_mailbox(scope, mailbox, settings, None)
    await acme.api.ok(UNARCHIVE, {"id": family.account_id})

    async def subjects(account_id: str) -> list[str]:
        data = await acme.api.data(TAB, {"id": account_id})
        return [e["node"]["subject"] for e in data["account"]["messages"]["edges"]]

    assert await subjects(family.account_id) == ["Before"]  # kept, but nothing new linked
    assert await subjects(company["id"]) == ["While archived", "Before"]
