"""LOGIN end to end through the API, with mail through a real SMTP server (aiosmtpd)."""

from __future__ import annotations

from datetime import timedelta

from models import Invitation, OutboundEmail
from services.shared.sessions import now
from tests.support.api import Api, add_staff, api_for
from tests.support.crm_ops import ADD_EMAIL, REMOVE_EMAIL, UNLINK, UPDATE_EMAIL, new_account
from tests.support.crm_ops import LINK as LINK_CONTACT
from tests.support.login import (
    CLIENT_PASSWORD,
    CLIENT_VIEW,
    FLAGS,
    RESEND,
    SIGN_IN,
    STATUS,
    accept,
    deliver,
    invitee,
    login_on,
    text_of,
    token_in,
)
from tests.support.smtp import smtp_fixture  # noqa: F401  (the `smtp` fixture)


async def test_invitation_received_and_accepted(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "Anna@Miller.example")
    row = await login_on(acme.api, anna.account_email_id)
    assert row["login"] and row["portalStatus"] == "PENDING_ACTIVATION"
    assert row["latestInvitation"]["status"] == "PENDING" and row["latestInvitation"]["sentAt"]

    deliveries = "query($id: ID!) { account(id: $id) { deliveries { totalCount edges { node { to kind status attempts sentAt } } } } }"
    queued = (await acme.api.data(deliveries, {"id": anna.account_id}))["account"]["deliveries"]
    assert queued["edges"][0]["node"]["status"] == "QUEUED"
    [mail] = await deliver(settings, smtp)
    sent = (await acme.api.data(deliveries, {"id": anna.account_id}))["account"]["deliveries"]
    assert sent["totalCount"] == 1
    node = sent["edges"][0]["node"]
    assert (node["to"], node["kind"], node["status"], node["attempts"]) == (
        "Anna@Miller.example",
        "INVITATION",
        "SENT",
        1,
    )
    assert mail["To"] == "Anna@Miller.example"
    assert mail["From"].addresses[0].display_name == "Acme LLP"
    body = text_of(mail)
    assert "Acme LLP" in body and "Miller Family" in body
    assert f"{settings.resolved_portal_url}/invitation?token=" in body
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert "Miller Family" in html
    token = token_in(mail)
    assert token not in str(await Invitation.all().values_list("token_hash", flat=True))

    weak = await accept(Api(client), token, "short")
    assert weak["errors"][0]["code"] == "WEAK_PASSWORD" and weak["token"] is None

    accepted = await accept(Api(client), token)
    assert accepted["errors"] == []
    assert accepted["viewer"]["__typename"] == "PortalUser"
    assert accepted["viewer"]["email"] == "Anna@Miller.example"
    assert accepted["currentAccount"] == {"id": anna.account_id, "name": "Miller Family"}
    client_api = Api(client, accepted["token"])
    view = await client_api.data(CLIENT_VIEW)
    assert view["currentAccount"]["name"] == "Miller Family"
    assert view["accountNotice"] == "You are in the portal of Miller Family."

    again = await accept(Api(client), token)
    assert again["errors"][0]["code"] == "INVITATION_USED"

    status = (await acme.api.data(STATUS, {"id": anna.account_id}))["account"]
    assert status["emails"][0]["portalStatus"] == "ACTIVE"
    assert status["emails"][0]["latestInvitation"]["status"] == "ACCEPTED"

    signed_in = (
        await Api(client).data(
            SIGN_IN, {"firm": "acme", "email": "anna@miller.example", "password": CLIENT_PASSWORD}
        )
    )["signIn"]
    assert signed_in["errors"] == [] and signed_in["currentAccount"]["name"] == "Miller Family"

    audit = await acme.api.data(
        "query($id: ID!) { account(id: $id) { auditEntries { action actor email } } }",
        {"id": anna.account_id},
    )
    actions = [(e["action"], e["actor"]) for e in audit["account"]["auditEntries"]]
    assert actions == [
        ("INVITATION_ACCEPTED", "Anna@Miller.example"),
        ("INVITATION_SENT", "owner@acme.example"),
        ("FLAGS_CHANGED", "owner@acme.example"),
    ]


async def test_invite_later_then_resend_supersedes(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    row = await login_on(acme.api, anna.account_email_id, send=False)
    assert row["latestInvitation"]["sentAt"] is None
    assert await OutboundEmail.all().count() == 0
    assert await deliver(settings, smtp) == []

    first = (await acme.api.ok(RESEND, {"id": anna.account_email_id}))["invitation"]
    [old_mail] = await deliver(settings, smtp)
    second = (await acme.api.ok(RESEND, {"id": anna.account_email_id}))["invitation"]
    assert first["id"] != second["id"]
    _, new_mail = await deliver(settings, smtp)
    refused = await accept(Api(client), token_in(old_mail))
    assert refused["errors"][0]["code"] == "INVITATION_REVOKED"
    assert (await accept(Api(client), token_in(new_mail)))["errors"] == []
    statuses = (await acme.api.data(STATUS, {"id": anna.account_id}))["account"]["invitations"]
    assert [i["status"] for i in statuses] == ["ACCEPTED", "REVOKED", "REVOKED"]


async def test_resend_needs_login_on(acme):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    data = await acme.api.data(RESEND, {"id": anna.account_email_id})
    assert data["resendInvitation"]["errors"][0]["code"] == "LOGIN_OFF"


async def test_address_changed_before_acceptance(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@old.example")
    await login_on(acme.api, anna.account_email_id)
    [old_mail] = await deliver(settings, smtp)
    await acme.api.ok(UPDATE_EMAIL, {"id": anna.email_id, "address": "anna@new.example"})
    _, new_mail = await deliver(settings, smtp)
    assert new_mail["To"] == "anna@new.example"
    refused = await accept(Api(client), token_in(old_mail))
    assert refused["errors"][0]["code"] == "INVITATION_REVOKED"
    accepted = await accept(Api(client), token_in(new_mail))
    assert accepted["viewer"]["email"] == "anna@new.example"
    # A change of case only is the same address: nothing is revoked or resent.
    await acme.api.ok(UPDATE_EMAIL, {"id": anna.email_id, "address": "Anna@New.example"})
    assert len(await deliver(settings, smtp)) == 2


async def test_expired_invitation(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)
    [mail] = await deliver(settings, smtp)
    await Invitation.all().update(expires_at=now() - timedelta(seconds=1))
    refused = await accept(Api(client), token_in(mail))
    assert refused["errors"][0]["code"] == "INVITATION_EXPIRED"
    status = (await acme.api.data(STATUS, {"id": anna.account_id}))["account"]
    assert status["emails"][0]["latestInvitation"]["status"] == "EXPIRED"
    assert status["emails"][0]["portalStatus"] == "PENDING_ACTIVATION"
    for bad in ["", "x" * 500, "not-a-token"]:
        assert (await accept(Api(client), bad))["errors"][0]["code"] == "INVITATION_INVALID"


async def test_login_off_mid_session_touches_nothing_else(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    ben = await invitee(acme.api, "Ben's Bakery", "ben@miller.example", first="Ben")
    await acme.api.ok(LINK_CONTACT, {"a": anna.account_id, "c": ben.contact_id})
    ben_row = next(
        e
        for e in (await acme.api.data(STATUS, {"id": anna.account_id}))["account"]["emails"]
        if e["emailAddress"]["address"] == "ben@miller.example"
    )
    await login_on(acme.api, anna.account_email_id)
    await login_on(acme.api, ben_row["id"])
    anna_mail, ben_mail = await deliver(settings, smtp)
    anna_api = Api(client, (await accept(Api(client), token_in(anna_mail)))["token"])
    ben_api = Api(client, (await accept(Api(client), token_in(ben_mail)))["token"])
    assert (await anna_api.data(CLIENT_VIEW))["currentAccount"]["name"] == "Miller Family"

    off = {"input": {"accountEmailId": anna.account_email_id, "login": False}}
    row = (await acme.api.ok(FLAGS, off))["accountEmail"]
    assert row["portalStatus"] == "NO_ACCESS"
    # Anna's open session loses the account on her very next request; Ben keeps his.
    assert await anna_api.data(CLIENT_VIEW) == {
        "portalAccounts": [],
        "currentAccount": None,
        "accountNotice": None,
    }
    body = await anna_api.post(
        "query($id: ID!) { account(id: $id) { name } }", {"id": anna.account_id}
    )
    assert body["data"]["account"] is None
    assert (await ben_api.data(CLIENT_VIEW))["currentAccount"]["name"] == "Miller Family"
    failed = await anna_api.data(
        "mutation($id: ID!) { switchAccount(accountId: $id) { errors { code } } }",
        {"id": anna.account_id},
    )
    assert failed["switchAccount"]["errors"][0]["code"] == "NOT_FOUND"


async def test_two_accounts_and_switching(acme, client, settings, smtp):
    family = await invitee(acme.api, "Miller Family", "anna@miller.example")
    bakery = await new_account(acme.api, "Anna's Bakery", "COMPANY")
    await acme.api.ok(LINK_CONTACT, {"a": bakery["id"], "c": family.contact_id})
    bakery_row = (await acme.api.data(STATUS, {"id": bakery["id"]}))["account"]["emails"][0]
    await login_on(acme.api, family.account_email_id)
    await login_on(acme.api, bakery_row["id"])
    first, second = await deliver(settings, smtp)
    assert (await accept(Api(client), token_in(first)))["errors"] == []
    # Invited to a second account: linked without a new password.
    linked = await accept(Api(client), token_in(second), password=None)
    assert linked["errors"] == [] and len(linked["accounts"]) == 2

    signed_in = (
        await Api(client).data(
            SIGN_IN, {"firm": "acme", "email": "anna@miller.example", "password": CLIENT_PASSWORD}
        )
    )["signIn"]
    assert [a["name"] for a in signed_in["accounts"]] == ["Anna's Bakery", "Miller Family"]
    assert signed_in["currentAccount"] is None  # several: she chooses
    api = Api(client, signed_in["token"])
    assert (await api.data(CLIENT_VIEW))["accountNotice"] is None

    switch = "mutation($id: ID!) { switchAccount(accountId: $id) { errors { code } currentAccount { name } } }"
    chosen = await api.data(switch, {"id": bakery["id"]})
    assert chosen["switchAccount"] == {"errors": [], "currentAccount": {"name": "Anna's Bakery"}}
    view = await api.data(CLIENT_VIEW)
    assert view["currentAccount"]["name"] == "Anna's Bakery"
    assert view["accountNotice"] == "You are in the portal of Anna's Bakery."
    assert await api.data("mutation { dismissAccountNotice }") == {"dismissAccountNotice": True}
    assert (await api.data(CLIENT_VIEW))["accountNotice"] is None
    await api.data(switch, {"id": family.account_id})
    assert (await api.data(CLIENT_VIEW))["accountNotice"] is None  # until the next sign-in

    other = await new_account(acme.api, "Not hers")
    refused = await api.data(switch, {"id": other["id"]})
    assert refused["switchAccount"]["errors"][0]["code"] == "NOT_FOUND"
    again = (
        await Api(client).data(
            SIGN_IN, {"firm": "acme", "email": "anna@miller.example", "password": CLIENT_PASSWORD}
        )
    )["signIn"]
    relogged = Api(client, again["token"])
    await relogged.data(switch, {"id": family.account_id})
    assert (await relogged.data(CLIENT_VIEW))[
        "accountNotice"
    ] == "You are in the portal of Miller Family."


async def test_unlinked_email_kept_then_removed(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@old.example")
    await login_on(acme.api, anna.account_email_id)
    [mail] = await deliver(settings, smtp)
    old_api = Api(client, (await accept(Api(client), token_in(mail)))["token"])

    # The firm changes her address: the old access stays (unlinked) until the new is active.
    await acme.api.ok(UPDATE_EMAIL, {"id": anna.email_id, "address": "anna@new.example"})
    status = (await acme.api.data(STATUS, {"id": anna.account_id}))["account"]
    [unlinked] = status["unlinkedEmails"]
    assert unlinked["linked"] is False and unlinked["portalUser"]["email"] == "anna@old.example"
    assert status["emails"][0]["portalStatus"] == "PENDING_ACTIVATION"
    assert (await old_api.data(CLIENT_VIEW))["currentAccount"]["name"] == "Miller Family"

    _, new_mail = await deliver(settings, smtp)
    assert (await accept(Api(client), token_in(new_mail)))["errors"] == []
    status = (await acme.api.data(STATUS, {"id": anna.account_id}))["account"]
    assert status["emails"][0]["portalStatus"] == "ACTIVE"

    remove = "mutation($id: ID!) { removePortalAccess(portalAccessId: $id) { errors { code } account { unlinkedEmails { id } } } }"
    removed = await acme.api.data(remove, {"id": unlinked["id"]})
    assert removed["removePortalAccess"] == {"errors": [], "account": {"unlinkedEmails": []}}
    assert (await old_api.data(CLIENT_VIEW))["portalAccounts"] == []
    again = await acme.api.data(remove, {"id": unlinked["id"]})
    assert again["removePortalAccess"]["errors"][0]["code"] == "NOT_FOUND"


async def test_unlinking_or_removing_revokes_pending_invitations(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)
    [mail] = await deliver(settings, smtp)
    await acme.api.ok(UNLINK, {"a": anna.account_id, "c": anna.contact_id})
    assert (await accept(Api(client), token_in(mail)))["errors"][0]["code"] == "INVITATION_REVOKED"

    ben = await invitee(acme.api, "Ben Family", "ben@miller.example", first="Ben")
    await login_on(acme.api, ben.account_email_id)
    _, ben_mail = await deliver(settings, smtp)
    await acme.api.ok(REMOVE_EMAIL, {"id": ben.email_id})
    assert (await accept(Api(client), token_in(ben_mail)))["errors"][0][
        "code"
    ] == "INVITATION_REVOKED"


async def test_clients_read_only_client_facing_data(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)
    [mail] = await deliver(settings, smtp)
    api = Api(client, (await accept(Api(client), token_in(mail)))["token"])
    own = await api.data(
        "query($id: ID!) { account(id: $id) { name type } node(id: $id) { id } }",
        {"id": anna.account_id},
    )
    assert own == {
        "account": {"name": "Miller Family", "type": "FAMILY"},
        "node": {"id": anna.account_id},
    }
    for query in [
        "{ accounts { totalCount } }",
        "{ contacts { totalCount } }",
        "{ staffMembers { id } }",
        "{ currentAccount { emails { id } } }",
        "{ currentAccount { contacts { id } } }",
        "{ currentAccount { invitations { id } } }",
        "{ currentAccount { auditEntries { action } } }",
        "{ currentAccount { unlinkedEmails { id } } }",
    ]:
        body = await api.post(query)
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", query
    for document, variables in [
        (FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}}),
        ('mutation { createAccount(input: {name: "X", type: FAMILY}) { errors { code } } }', {}),
    ]:
        body = await api.post(document, variables)
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    contact_node = await api.data(
        "query($id: ID!) { node(id: $id) { id } }", {"id": anna.contact_id}
    )
    assert contact_node["node"] is None
    staff_body = await acme.api.post("mutation { dismissAccountNotice }")
    assert staff_body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_other_firms_and_read_only_staff_are_kept_out(acme, globex, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    for document, variables, name in [
        (
            FLAGS,
            {"input": {"accountEmailId": anna.account_email_id, "login": True}},
            "setEmailFlags",
        ),
        (RESEND, {"id": anna.account_email_id}, "resendInvitation"),
    ]:
        payload = (await globex.api.data(document, variables))[name]
        assert payload["errors"][0]["code"] == "NOT_FOUND"
    reader = await api_for(client, await add_staff(acme, "reader@acme.example"))
    body = await reader.post(
        FLAGS, {"input": {"accountEmailId": anna.account_email_id, "login": True}}
    )
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert await OutboundEmail.all().count() == 0

    # An acme client cannot enter or see globex, nor sign in there.
    await login_on(acme.api, anna.account_email_id)
    [mail] = await deliver(settings, smtp)
    api = Api(client, (await accept(Api(client), token_in(mail)))["token"])
    globex_account = await new_account(globex.api, "Globex Family")
    seen = await api.data(
        "query($id: ID!) { account(id: $id) { id } node(id: $id) { id } }",
        {"id": globex_account["id"]},
    )
    assert seen == {"account": None, "node": None}
    wrong_firm = (
        await Api(client).data(
            SIGN_IN, {"firm": "globex", "email": "anna@miller.example", "password": CLIENT_PASSWORD}
        )
    )["signIn"]
    assert wrong_firm["errors"][0]["code"] == "INVALID_CREDENTIALS"


async def test_toggles_are_stored_and_audited(acme):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    variables = {
        "input": {"accountEmailId": anna.account_email_id, "notify": True, "emailSync": True}
    }
    row = (await acme.api.ok(FLAGS, variables))["accountEmail"]
    assert (row["login"], row["notify"], row["emailSync"], row["portalStatus"]) == (
        False,
        True,
        True,
        "NO_ACCESS",
    )
    prefs = """mutation($input: NotificationPreferencesInput!) { setNotificationPreferences(input: $input) {
        errors { code } accountEmail { notificationPreferences { all enabled } } } }"""
    changed = await acme.api.ok(
        prefs,
        {
            "input": {
                "accountEmailId": anna.account_email_id,
                "all": False,
                "enabled": ["INVOICES_AND_PAYMENTS", "APPROVALS"],
            }
        },
    )
    assert changed["accountEmail"]["notificationPreferences"] == {
        "all": False,
        "enabled": ["APPROVALS", "INVOICES_AND_PAYMENTS"],
    }
    audit = await acme.api.data(
        "query($id: ID!) { account(id: $id) { auditEntries { action before after } } }",
        {"id": anna.account_id},
    )
    entries = audit["account"]["auditEntries"]
    assert entries[1]["before"] == {"login": False, "notify": False, "emailSync": False}
    assert entries[1]["after"] == {"login": False, "notify": True, "emailSync": True}
    assert entries[0]["action"] == "NOTIFICATION_PREFERENCES_CHANGED"
    bad = await acme.api.data(FLAGS, {"input": {"accountEmailId": "QWNjb3VudDox", "login": True}})
    assert bad["setEmailFlags"]["errors"][0]["code"] == "NOT_FOUND"


async def test_a_withdrawn_invitation_is_never_mailed(acme, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@old.example")
    await login_on(acme.api, anna.account_email_id)
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "login": False}})
    ben = await invitee(acme.api, "Ben Family", "ben@old.example", first="Ben")
    await login_on(acme.api, ben.account_email_id)
    await acme.api.ok(UPDATE_EMAIL, {"id": ben.email_id, "address": "ben@new.example"})
    # Only the invitation to Ben's new address goes out: the old address learns nothing.
    assert [m["To"] for m in await deliver(settings, smtp)] == ["ben@new.example"]
    query = "query($id: ID!) { account(id: $id) { deliveries { edges { node { to status } } } } }"
    anna_mail = (await acme.api.data(query, {"id": anna.account_id}))["account"]["deliveries"]
    assert anna_mail["edges"] == [{"node": {"to": "anna@old.example", "status": "CANCELLED"}}]


async def test_activated_address_relinked_or_re_added_keeps_visible_access(
    acme, client, settings, smtp
):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)
    [mail] = await deliver(settings, smtp)
    api = Api(client, (await accept(Api(client), token_in(mail)))["token"])

    # Unlinked: her access stays and shows as an unlinked email.
    await acme.api.ok(UNLINK, {"a": anna.account_id, "c": anna.contact_id})
    status = (await acme.api.data(STATUS, {"id": anna.account_id}))["account"]
    assert [u["portalUser"]["email"] for u in status["unlinkedEmails"]] == ["anna@miller.example"]
    # Linked again: the row shows LOGIN on and ACTIVE (no new invitation); LOGIN off ends it.
    await acme.api.ok(LINK_CONTACT, {"a": anna.account_id, "c": anna.contact_id})
    status = (await acme.api.data(STATUS, {"id": anna.account_id}))["account"]
    [row] = status["emails"]
    assert (row["login"], row["portalStatus"], status["unlinkedEmails"]) == (True, "ACTIVE", [])
    assert len(await deliver(settings, smtp)) == 1
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": row["id"], "login": False}})
    assert (await api.data(CLIENT_VIEW))["portalAccounts"] == []

    # Removed and added again: the same holds for the address itself.
    ben = await invitee(acme.api, "Ben Family", "ben@miller.example", first="Ben")
    await login_on(acme.api, ben.account_email_id)
    _, ben_mail = await deliver(settings, smtp)
    ben_api = Api(client, (await accept(Api(client), token_in(ben_mail)))["token"])
    await acme.api.ok(REMOVE_EMAIL, {"id": ben.email_id})
    assert (await ben_api.data(CLIENT_VIEW))["currentAccount"]["name"] == "Ben Family"
    await acme.api.ok(ADD_EMAIL, {"c": ben.contact_id, "email": {"address": "ben@miller.example"}})
    [row] = (await acme.api.data(STATUS, {"id": ben.account_id}))["account"]["emails"]
    assert (row["login"], row["portalStatus"]) == (True, "ACTIVE")
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": row["id"], "login": False}})
    assert (await ben_api.data(CLIENT_VIEW))["portalAccounts"] == []


async def test_login_off_in_one_account_leaves_the_other(acme, client, settings, smtp):
    family = await invitee(acme.api, "Miller Family", "anna@miller.example")
    bakery = await new_account(acme.api, "Anna's Bakery", "COMPANY")
    await acme.api.ok(LINK_CONTACT, {"a": bakery["id"], "c": family.contact_id})
    bakery_row = (await acme.api.data(STATUS, {"id": bakery["id"]}))["account"]["emails"][0]
    await login_on(acme.api, family.account_email_id)
    await login_on(acme.api, bakery_row["id"])
    first, second = await deliver(settings, smtp)
    await accept(Api(client), token_in(first))
    api = Api(client, (await accept(Api(client), token_in(second), password=None))["token"])
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": family.account_email_id, "login": False}})
    view = await api.data(CLIENT_VIEW)
    assert [a["name"] for a in view["portalAccounts"]] == ["Anna's Bakery"]
    audit = await acme.api.data(
        "query($id: ID!) { account(id: $id) { auditEntries { action before after } } }",
        {"id": family.account_id},
    )
    actions = [e["action"] for e in audit["account"]["auditEntries"]]
    assert actions[:2] == ["PORTAL_ACCESS_REMOVED", "FLAGS_CHANGED"]
    assert audit["account"]["auditEntries"][1]["after"]["login"] is False
