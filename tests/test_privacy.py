"""A client's data exported (a ZIP behind a short-lived link) and erased (tombstones where the
firm keeps records), through the API."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import InvalidToken

from models import AuditEntry, Message, OutboundEmail, PortalUser, Session, SignInThrottle
from portico.settings import Settings
from schema import ids
from services.crm import privacy
from services.mail.parse import parse_message
from services.mail.store import store_message
from services.outbound import outbox
from services.shared import crypto, throttle_keys
from services.shared.scope import FirmScope
from tests.support.api import Api, add_staff, api_for
from tests.support.login import (
    CLIENT_PASSWORD,
    FLAGS,
    SIGN_IN,
    activated_client,
    deliver,
    invitee,
)
from tests.support.mail import mail
from tests.support.smtp import smtp_fixture  # noqa: F401  (the `smtp` fixture)
from tests.test_documents import PDF, upload

EXPORT = """mutation($id: ID!) { exportContactData(id: $id) {
  errors { code field } downloadUrl expiresAt } }"""
ERASE = "mutation($id: ID!) { eraseContact(id: $id) { errors { code field } erased kept } }"
LINK = (
    "mutation($a: ID!, $c: ID!) { linkContact(accountId: $a, contactId: $c) { errors { code } } }"
)
ANNA = "anna@miller.example"
OWNER = "owner@acme.example"


@dataclass
class World:
    anna_contact: str
    anna_client: Api
    ben_contact: str
    sole_document: str
    shared_document: str
    only_anna: int
    shared_message: int


async def world(acme, client, settings: Settings, smtp) -> World:
    """Anna alone in Miller Family (a document there), Anna and Ben in Shared Family (a
    document there too); Anna's portal sign-in; a message only Anna and the firm share, one
    Ben is copied on."""
    anna = await invitee(acme.api, "Miller Family", ANNA)
    ben = await invitee(acme.api, "Shared Family", "ben@other.example", first="Ben")
    await acme.api.ok(LINK, {"a": ben.account_id, "c": anna.contact_id})
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}})
    anna_client = await activated_client(
        acme.api, Api(client), settings, smtp, anna.account_email_id
    )
    sole = (await upload(client, acme.api.token, anna.account_id, "Return.pdf", PDF)).json()
    shared = (await upload(client, acme.api.token, ben.account_id, "Shared.pdf", b"%PDF-2")).json()
    await deliver(settings, smtp)  # the DOCUMENT_UPLOADS notice to Anna
    scope = FirmScope(acme.owner.firm_id)
    accounts = [ids.decode(anna.account_id, "Account")]
    only = await store_message(scope, parse_message(mail(ANNA, OWNER, "Figures")), accounts)
    cc = mail(ANNA, OWNER, "Family", cc=["ben@other.example"], body="For both of you")
    both = await store_message(scope, parse_message(cc), accounts)
    return World(
        anna.contact_id,
        anna_client,
        ben.contact_id,
        sole["data"]["uploadDocument"]["document"]["id"],
        shared["data"]["uploadDocument"]["document"]["id"],
        only.message.pk,
        both.message.pk,
    )


async def download(client, url: str):
    client.cookies.clear()
    return await client.get(url.removeprefix("http://testserver"))


async def test_the_export_holds_the_contacts_data_and_sole_documents(acme, client, settings, smtp):
    w = await world(acme, client, settings, smtp)
    payload = await acme.api.ok(EXPORT, {"id": w.anna_contact})
    expires = datetime.fromisoformat(payload["expiresAt"])
    assert timedelta(minutes=14) < expires - datetime.now(UTC) <= timedelta(minutes=15)

    response = await download(client, payload["downloadUrl"])  # no session needed
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["cache-control"] == "private, no-store"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    data = json.loads(archive.read("data.json"))
    assert data["contact"]["firstName"] == "Anna"
    assert data["emailAddresses"][0] | {"createdAt": None} == {
        "address": ANNA,
        "label": "Email",
        "createdAt": None,
    }
    accounts = {a["name"]: a for a in data["accounts"]}
    assert sorted(accounts) == ["Miller Family", "Shared Family"]
    [toggles] = accounts["Miller Family"]["addresses"]
    assert (toggles["login"], toggles["notify"], toggles["emailSync"]) == (True, True, False)
    assert toggles["notificationPreferences"] == {"all": True, "categories": []}
    [user] = data["portalUsers"]
    assert user["email"] == ANNA and user["activatedAt"]
    assert user["accountsWithAccess"] == ["Miller Family"]
    assert [i["status"] for i in data["invitations"]] == ["ACCEPTED"]
    actions = {e["action"] for e in data["auditEntries"]}
    assert {"FLAGS_CHANGED", "INVITATION_SENT", "INVITATION_ACCEPTED"} <= actions
    kinds = sorted(d["kind"] for d in data["deliveries"])
    assert len(kinds) == 2 and all(d["to"] == ANNA for d in data["deliveries"])
    assert sorted(m["subject"] for m in data["messages"]) == ["Family", "Figures"]
    assert any("For both of you" in (m["textBody"] or "") for m in data["messages"])
    # Only the documents of the account where Anna is the only contact.
    [document] = data["documents"]
    assert document["account"] == "Miller Family"
    assert archive.read(document["file"]) == PDF
    assert sorted(archive.namelist()) == sorted(["data.json", document["file"]])
    [entry] = await AuditEntry.filter(action="CONTACT_DATA_EXPORTED")
    assert entry.email is None and entry.after["contact"] == ids.decode(w.anna_contact, "Contact")


async def test_export_links_expire_and_refuse_tampering(acme, client, settings, smtp):
    w = await world(acme, client, settings, smtp)
    url = (await acme.api.ok(EXPORT, {"id": w.anna_contact}))["downloadUrl"]
    token = url.rsplit("/", 1)[1]
    tampered = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    assert (await download(client, f"/exports/{tampered}")).status_code == 404
    assert (await download(client, "/exports/not-a-token")).status_code == 404
    contact_pk = ids.decode(w.anna_contact, "Contact")
    past = datetime.now(UTC) - timedelta(seconds=1)
    expired = privacy.sign(settings, acme.owner.firm_id, contact_pk, acme.owner.pk, past)
    assert (await download(client, f"/exports/{expired}")).status_code == 410
    # Signed with another secret: refused.
    other = settings.model_copy(update={"secret_key": "another-secret-" + "x" * 40})
    future = datetime.now(UTC) + timedelta(minutes=5)
    forged = privacy.sign(other, acme.owner.firm_id, contact_pk, acme.owner.pk, future)
    assert (await download(client, f"/exports/{forged}")).status_code == 404
    assert (await download(client, f"/exports/{token}x")).status_code == 404
    assert (await download(client, url)).status_code == 200
    # The link is built when opened: once the contact is erased it leads nowhere.
    await acme.api.ok(ERASE, {"id": w.anna_contact})
    assert (await download(client, url)).status_code == 404


def test_a_link_token_opens_only_exactly_as_issued(settings: Settings) -> None:
    """base64 decoding ignores text after the padding; whether a token is padded depends
    on the length of what it holds, so both kinds are tried."""
    for size, padded in ((40, False), (50, True)):
        token = crypto.fernet(settings, "test").encrypt(b"x" * size).decode()
        assert token.endswith("=") is padded
        assert crypto.open_link_token(settings, "test", token) == b"x" * size
        for changed in (token + "x", token + "=", token + "\n", " " + token, token[:-1]):
            with pytest.raises(InvalidToken):
                crypto.open_link_token(settings, "test", changed)


async def test_export_and_erasure_are_for_managers_of_the_contacts_firm(
    acme, globex, client, settings
):
    anna = await invitee(acme.api, "Miller Family", ANNA)
    for query in (EXPORT, ERASE):
        [payload] = (await globex.api.data(query, {"id": anna.contact_id})).values()
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [("NOT_FOUND", ["id"])]
    clerk = await api_for(client, await add_staff(acme, "clerk@acme.example"))
    for query in (EXPORT, ERASE):
        refused = await clerk.post(query, {"id": anna.contact_id})
        assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert (
        await AuditEntry.filter(action__in=["CONTACT_DATA_EXPORTED", "CONTACT_ERASED"]).count() == 0
    )
    contact = "query($id: ID!) { contact(id: $id) { firstName } }"
    assert (await acme.api.data(contact, {"id": anna.contact_id}))["contact"] is not None


async def test_erasure_removes_the_person_and_tombstones_the_records(acme, client, settings, smtp):
    w = await world(acme, client, settings, smtp)
    audit_before = await AuditEntry.all().count()
    payload = await acme.api.ok(ERASE, {"id": w.anna_contact})
    assert any("retention duty" in sentence for sentence in payload["kept"])
    assert any("1 synced message(s) that concerned only" in s for s in payload["erased"])
    assert any("1 client portal sign-in(s)" in s for s in payload["erased"])
    for sentence in payload["erased"] + payload["kept"]:
        assert "anna" not in sentence.lower()

    contact = "query($id: ID!) { contact(id: $id) { firstName } }"
    assert (await acme.api.data(contact, {"id": w.anna_contact}))["contact"] is None
    assert (await acme.api.data(contact, {"id": w.ben_contact}))["contact"] is not None
    # The client is signed out and cannot sign in again.
    assert await PortalUser.filter(email_normalized=ANNA).count() == 0
    assert await Session.filter(portal_user_id__isnull=False).count() == 0
    assert "errors" in await w.anna_client.post("{ currentAccount { id } }")
    variables = {"firm": "acme", "email": ANNA, "password": CLIENT_PASSWORD}
    signed_in = (await Api(client).data(SIGN_IN, variables))["signIn"]
    assert signed_in["token"] is None and signed_in["errors"]
    # Mail only about Anna is gone; mail that concerns Ben too stays.
    assert await Message.filter(id=w.only_anna).count() == 0
    assert await Message.filter(id=w.shared_message).count() == 1
    # Documents stay with their accounts.
    headers = {"Authorization": f"Bearer {acme.api.token}"}
    for document in (w.sole_document, w.shared_document):
        assert (await client.get(f"/documents/{document}", headers=headers)).status_code == 200
    # Records keep a tombstone instead of the address, and the erasure's entry names nobody.
    entries = await AuditEntry.all()
    assert len(entries) > audit_before
    for entry in entries:
        text = json.dumps([entry.email, entry.before, entry.after]).lower()
        assert ANNA not in text and "anna" not in text, (entry.action, text)
    stones = {e.email for e in entries if e.email and e.email.endswith("@erased.invalid")}
    assert len(stones) == 1 and next(iter(stones)).startswith("erased-")
    [erased] = [e for e in entries if e.action == "CONTACT_ERASED"]
    assert erased.email is None and erased.staff_member_id == acme.owner.pk
    deliveries = await OutboundEmail.all()
    assert deliveries and all(row.to_address in stones for row in deliveries)
    # Nothing about Anna is left to export or erase.
    assert (await acme.api.data(ERASE, {"id": w.anna_contact}))["eraseContact"]["errors"] == [
        {"code": "NOT_FOUND", "field": ["id"]}
    ]


def data_json(response) -> dict:
    assert response.status_code == 200, response.text
    return json.loads(zipfile.ZipFile(io.BytesIO(response.content)).read("data.json"))


async def test_synced_mail_is_exported_only_to_members_who_may_read_it(
    acme, client, settings, smtp
):
    w = await world(acme, client, settings, smtp)
    await outbox.enqueue_written(  # a reply from Inbox+ to Anna: synced mail too
        firm_id=acme.owner.firm_id,
        from_name="Acme",
        to=ANNA,
        subject="Re: Figures",
        text="Here they are.",
        kind=outbox.REPLY_KIND,
        message_id="<reply.1@acme.example>",
        settings=settings,
    )
    clerk = await add_staff(acme, "clerk@acme.example", can_manage_accounts=True)
    clerk_api = await api_for(client, clerk)
    refused = await clerk_api.post("{ inbox(first: 1) { edges { node { id } } } }")
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    url = (await clerk_api.ok(EXPORT, {"id": w.anna_contact}))["downloadUrl"]
    response = await download(client, url)
    data = data_json(response)
    assert data["messages"] is None
    [note] = data["notes"]
    assert "left out" in note and "may not read" in note
    assert [d["kind"] for d in data["deliveries"]] and "REPLY" not in {
        d["kind"] for d in data["deliveries"]
    }
    for secret in ("For both of you", "Figures", "Here they are"):
        assert secret not in json.dumps(data)

    # Given the inbox right, the same link (checked when opened) brings the mail.
    clerk.can_use_inbox = True
    await clerk.save()
    data = data_json(await download(client, url))
    assert sorted(m["subject"] for m in data["messages"]) == ["Family", "Figures"]
    assert any("For both of you" in (m["textBody"] or "") for m in data["messages"])
    assert "Re: Figures" in {d["subject"] for d in data["deliveries"]}
    assert data["notes"] == []


async def test_the_export_lists_at_most_the_newest_messages(
    acme, client, settings, smtp, monkeypatch
):
    w = await world(acme, client, settings, smtp)
    await Message.filter(id=w.only_anna).update(sent_at=datetime(2020, 1, 1, tzinfo=UTC))
    monkeypatch.setattr(privacy, "MAX_MESSAGES", 1)
    url = (await acme.api.ok(EXPORT, {"id": w.anna_contact}))["downloadUrl"]
    data = data_json(await download(client, url))
    assert [m["subject"] for m in data["messages"]] == ["Family"]
    assert data["notes"] == [
        "Only the newest 1 of 2 synced messages are listed; ask the firm for the others."
    ]


async def test_the_access_log_never_holds_an_export_token(acme, client, settings, smtp, caplog):
    w = await world(acme, client, settings, smtp)
    url = (await acme.api.ok(EXPORT, {"id": w.anna_contact}))["downloadUrl"]
    token = url.rsplit("/", 1)[1]
    with caplog.at_level(logging.INFO, logger="portico.access"):
        caplog.clear()  # only the two downloads (another test may have left the level at INFO)
        assert (await download(client, url)).status_code == 200
        assert (await download(client, url + "x")).status_code == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "portico.access"]
    assert len(lines) == 2 and all('"path":"/exports/…"' in line for line in lines), lines
    # The server's records only: the test's own HTTP client logs the URL it requests.
    server_text = "\n".join(r.getMessage() for r in caplog.records if r.name != "httpx")
    assert token not in server_text and token[:20] not in server_text


async def test_erasure_forgets_the_sign_in_throttle_of_the_addresses(acme, client, settings, smtp):
    w = await world(acme, client, settings, smtp)
    staff_sign_in = SIGN_IN.replace("signIn(", "staffSignIn(")
    for email, query in ((ANNA, SIGN_IN), (ANNA, staff_sign_in), ("ben@other.example", SIGN_IN)):
        variables = {"firm": "acme", "email": email, "password": "wrong password"}
        [payload] = (await Api(client).data(query, variables)).values()
        assert payload["errors"][0]["code"] == "INVALID_CREDENTIALS"
    # The keys sign-in itself uses (the erasure computes its own: they must stay equal).
    annas = [throttle_keys.account_key(kind, "acme", ANNA) for kind in ("client", "staff")]
    bens = throttle_keys.account_key("client", "acme", "ben@other.example")
    assert await SignInThrottle.filter(key__in=[*annas, bens]).count() == 3
    await acme.api.ok(ERASE, {"id": w.anna_contact})
    assert await SignInThrottle.filter(key__in=annas).count() == 0
    assert await SignInThrottle.filter(key=bens).count() == 1
