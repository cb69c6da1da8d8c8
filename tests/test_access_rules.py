"""LOGIN's access rules (services/portal/access.py) through the API: what an address change,
a no-op toggle and removePortalAccess do, and what each leaves in Account.auditEntries."""

from __future__ import annotations

from models import HistoryImport, Mailbox, OutboundEmail, PortalUser
from tests.support.api import Api
from tests.support.crm_ops import LINK as LINK_CONTACT
from tests.support.crm_ops import REMOVE_EMAIL, UNLINK, UPDATE_EMAIL, new_account
from tests.support.login import (
    CLIENT_VIEW,
    FLAGS,
    RESEND,
    STATUS,
    accept,
    activated_client,
    audit_entries,
    bare_pk,
    deliver,
    invitee,
    login_on,
    token_in,
)
from tests.support.smtp import smtp_fixture  # noqa: F401  (the `smtp` fixture)

REMOVE_ACCESS = """
mutation($id: ID!) {
  removePortalAccess(portalAccessId: $id) { errors { code field } account { id unlinkedEmails { id } } }
}
"""
ACCESS_NODE = "query($id: ID!) { node(id: $id) { ... on PortalAccess { id linked portalUser { email } account { name } } } }"


async def _status(api: Api, account_id: str) -> dict:
    return (await api.data(STATUS, {"id": account_id}))["account"]


async def test_an_address_change_with_login_off_invites_nobody(acme, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@old.example")
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}})
    await acme.api.ok(UPDATE_EMAIL, {"id": anna.email_id, "address": "anna@new.example"})
    status = await _status(acme.api, anna.account_id)
    [row] = status["emails"]
    assert (row["login"], row["portalStatus"], row["latestInvitation"]) == (
        False,
        "NO_ACCESS",
        None,
    )
    assert status["invitations"] == []
    assert await OutboundEmail.all().count() == 0
    assert await deliver(settings, smtp) == []
    assert await audit_entries(acme.api, anna.account_id, "INVITATION_SENT") == []


async def test_an_address_change_revokes_that_address_invitations_only(
    acme, client, settings, smtp
):
    """The revocation on an address change is bound to the changed address: the other
    pending invitations of the firm, in this account and others, stay usable."""
    anna = await invitee(acme.api, "Miller Family", "anna@old.example")
    ben = await invitee(acme.api, "Ben Family", "ben@example.com", first="Ben")
    carl = await invitee(acme.api, "Carl Family", "carl@example.com", first="Carl")
    await acme.api.ok(LINK_CONTACT, {"a": anna.account_id, "c": carl.contact_id})
    carl_in_miller = next(
        e["id"]
        for e in (await _status(acme.api, anna.account_id))["emails"]
        if e["emailAddress"]["address"] == "carl@example.com"
    )
    for row_id in (anna.account_email_id, ben.account_email_id, carl_in_miller):
        await login_on(acme.api, row_id)
    anna_old, ben_mail, carl_mail = await deliver(settings, smtp)

    await acme.api.ok(UPDATE_EMAIL, {"id": anna.email_id, "address": "anna@new.example"})
    miller = await _status(acme.api, anna.account_id)
    assert sorted((i["email"], i["status"]) for i in miller["invitations"]) == [
        ("anna@new.example", "PENDING"),
        ("anna@old.example", "REVOKED"),
        ("carl@example.com", "PENDING"),
    ]
    ben_status = await _status(acme.api, ben.account_id)
    assert [i["status"] for i in ben_status["invitations"]] == ["PENDING"]
    revoked = await audit_entries(acme.api, anna.account_id, "INVITATION_REVOKED")
    assert [e["email"] for e in revoked] == ["anna@old.example"]
    assert await audit_entries(acme.api, ben.account_id, "INVITATION_REVOKED") == []
    resent = (await audit_entries(acme.api, anna.account_id, "INVITATION_SENT"))[0]
    assert (resent["email"], resent["actor"]) == ("anna@new.example", "owner@acme.example")

    assert (await accept(Api(client), token_in(anna_old)))["errors"][0][
        "code"
    ] == "INVITATION_REVOKED"
    assert (await accept(Api(client), token_in(ben_mail)))["errors"] == []
    assert (await accept(Api(client), token_in(carl_mail)))["errors"] == []


async def test_revocation_reasons_are_audited(acme, settings, smtp):
    """Every INVITATION_REVOKED entry names the invitation, the old address, the staff member
    and why: superseded, address changed, LOGIN off, address removed, contact unlinked."""
    anna = await invitee(acme.api, "Miller Family", "anna@old.example")
    first = (await login_on(acme.api, anna.account_email_id))["latestInvitation"]
    second = (await acme.api.ok(RESEND, {"id": anna.account_email_id}))["invitation"]
    await acme.api.ok(UPDATE_EMAIL, {"id": anna.email_id, "address": "anna@new.example"})
    third = (await _status(acme.api, anna.account_id))["emails"][0]["latestInvitation"]
    assert third["status"] == "PENDING"
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "login": False}})
    await login_on(acme.api, anna.account_email_id)
    await acme.api.ok(REMOVE_EMAIL, {"id": anna.email_id})

    ben = await invitee(acme.api, "Ben Family", "ben@example.com", first="Ben")
    await login_on(acme.api, ben.account_email_id)
    await acme.api.ok(UNLINK, {"a": ben.account_id, "c": ben.contact_id})

    revoked = await audit_entries(acme.api, anna.account_id, "INVITATION_REVOKED")
    assert [(e["email"], e["after"]) for e in reversed(revoked)] == [
        ("anna@old.example", {"reason": "superseded"}),
        ("anna@old.example", {"reason": "address changed"}),
        ("anna@new.example", {"reason": "LOGIN off"}),
        ("anna@new.example", {"reason": "address removed"}),
    ]
    assert {e["actor"] for e in revoked} == {"owner@acme.example"}
    assert [e["before"] for e in reversed(revoked[2:])] == [
        {"invitation": bare_pk(first["id"], "Invitation")},
        {"invitation": bare_pk(second["id"], "Invitation")},
    ]
    [unlinked] = await audit_entries(acme.api, ben.account_id, "INVITATION_REVOKED")
    assert (unlinked["email"], unlinked["after"]) == (
        "ben@example.com",
        {"reason": "contact unlinked"},
    )
    assert await deliver(settings, smtp) == []  # every one of them was withdrawn unsent


async def test_a_toggle_change_that_changes_nothing_writes_no_audit_entry(acme):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    on = {"input": {"accountEmailId": anna.account_email_id, "notify": True}}
    assert (await acme.api.ok(FLAGS, on))["accountEmail"]["notify"] is True
    again = (await acme.api.ok(FLAGS, on))["accountEmail"]
    assert (again["login"], again["notify"], again["emailSync"]) == (False, True, False)
    same = {"notify": True, "login": False, "emailSync": False}
    nothing = {"input": {"accountEmailId": anna.account_email_id, **same}}
    assert (await acme.api.ok(FLAGS, nothing))["accountEmail"]["notify"] is True
    empty = {"input": {"accountEmailId": anna.account_email_id}}
    assert (await acme.api.ok(FLAGS, empty))["accountEmail"]["id"] == anna.account_email_id
    entries = await audit_entries(acme.api, anna.account_id)
    assert [(e["action"], e["before"], e["after"]) for e in entries] == [
        (
            "FLAGS_CHANGED",
            {"login": False, "notify": False, "emailSync": False},
            {"login": False, "notify": True, "emailSync": False},
        )
    ]


async def test_remove_portal_access_is_audited(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@old.example")
    client_api = await activated_client(
        acme.api, Api(client), settings, smtp, anna.account_email_id
    )
    await acme.api.ok(UPDATE_EMAIL, {"id": anna.email_id, "address": "anna@new.example"})
    [unlinked] = (await _status(acme.api, anna.account_id))["unlinkedEmails"]

    removed = (await acme.api.data(REMOVE_ACCESS, {"id": unlinked["id"]}))["removePortalAccess"]
    assert removed == {"errors": [], "account": {"id": anna.account_id, "unlinkedEmails": []}}
    assert (await client_api.data(CLIENT_VIEW))["portalAccounts"] == []
    user = await PortalUser.get(email_normalized="anna@old.example")
    [entry] = await audit_entries(acme.api, anna.account_id, "PORTAL_ACCESS_REMOVED")
    assert entry == {
        "action": "PORTAL_ACCESS_REMOVED",
        "actor": "owner@acme.example",
        "email": "anna@old.example",
        "before": {"portalUser": user.pk},
        "after": None,
    }
    again = (await acme.api.data(REMOVE_ACCESS, {"id": unlinked["id"]}))["removePortalAccess"]
    assert again["errors"] == [{"code": "NOT_FOUND", "field": ["portalAccessId"]}]


async def test_access_of_one_account_is_read_for_that_account_only(acme, client, settings, smtp):
    """An account's unlinked emails and statuses are its own, whatever portal users other
    accounts have (one at a time, and loaded together in one list)."""
    anna = await invitee(acme.api, "Miller Family", "anna@old.example")
    bakery = await new_account(acme.api, "Anna's Bakery", "COMPANY")
    quiet = await new_account(acme.api, "Quiet Family")
    await acme.api.ok(LINK_CONTACT, {"a": bakery["id"], "c": anna.contact_id})
    bakery_row = (await _status(acme.api, bakery["id"]))["emails"][0]["id"]
    await login_on(acme.api, anna.account_email_id)
    [mail] = await deliver(settings, smtp)
    assert (await accept(Api(client), token_in(mail)))["errors"] == []
    await login_on(acme.api, bakery_row)  # invited, not accepted: her access is Miller's only

    bakery_status = await _status(acme.api, bakery["id"])
    assert bakery_status["unlinkedEmails"] == []
    assert bakery_status["emails"][0]["portalStatus"] == "PENDING_ACTIVATION"
    assert (await _status(acme.api, quiet["id"]))["unlinkedEmails"] == []
    miller = await _status(acme.api, anna.account_id)
    assert (miller["emails"][0]["portalStatus"], miller["unlinkedEmails"]) == ("ACTIVE", [])

    # Her address changes: Miller shows the old access as unlinked, the others nothing.
    await acme.api.ok(UPDATE_EMAIL, {"id": anna.email_id, "address": "anna@new.example"})
    [unlinked] = (await _status(acme.api, anna.account_id))["unlinkedEmails"]
    assert unlinked["portalUser"]["email"] == "anna@old.example"
    assert (await _status(acme.api, bakery["id"]))["unlinkedEmails"] == []
    node = (await acme.api.data(ACCESS_NODE, {"id": unlinked["id"]}))["node"]
    assert node == {
        "id": unlinked["id"],
        "linked": False,
        "portalUser": {"email": "anna@old.example"},
        "account": {"name": "Miller Family"},
    }
    listed = await acme.api.data(
        "{ accounts(first: 10) { edges { node { name unlinkedEmails { portalUser { email } } } } } }"
    )
    by_name = {
        e["node"]["name"]: [u["portalUser"]["email"] for u in e["node"]["unlinkedEmails"]]
        for e in listed["accounts"]["edges"]
    }
    assert by_name == {
        "Anna's Bakery": [],
        "Miller Family": ["anna@old.example"],
        "Quiet Family": [],
    }


async def test_refusals_name_their_field_and_say_why(acme, globex, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    ben = await invitee(acme.api, "Ben Family", "ben@miller.example", first="Ben")
    missing = {"code": "NOT_FOUND", "message": "No such account email."}
    flags = """mutation($input: SetEmailFlagsInput!) { setEmailFlags(input: $input) {
      errors { code field message } accountEmail { id } } }"""
    resend = "mutation($id: ID!) { resendInvitation(accountEmailId: $id) { errors { code field message } invitation { id } } }"
    prefs = """mutation($input: NotificationPreferencesInput!) { setNotificationPreferences(input: $input) {
      errors { code field message } accountEmail { id } } }"""

    theirs = await globex.api.data(flags, {"input": {"accountEmailId": anna.account_email_id}})
    assert theirs["setEmailFlags"] == {
        "errors": [{**missing, "field": ["input", "accountEmailId"]}],
        "accountEmail": None,
    }
    unknown = await acme.api.data(resend, {"id": "nope"})
    assert unknown["resendInvitation"]["errors"] == [{**missing, "field": ["accountEmailId"]}]
    login_off = await acme.api.data(resend, {"id": anna.account_email_id})
    assert login_off["resendInvitation"] == {
        "errors": [
            {
                "code": "LOGIN_OFF",
                "field": ["accountEmailId"],
                "message": "Turn LOGIN on for this address first.",
            }
        ],
        "invitation": None,
    }
    staff_prefs = {"accountEmailId": anna.account_email_id, "all": True}
    theirs = await globex.api.data(prefs, {"input": staff_prefs})
    assert theirs["setNotificationPreferences"]["errors"] == [
        {**missing, "field": ["input", "accountEmailId"]}
    ]

    client_api = await activated_client(
        acme.api, Api(client), settings, smtp, anna.account_email_id
    )
    others = {"accountEmailId": ben.account_email_id, "all": True}
    refused = await client_api.data(prefs, {"input": others})
    assert refused["setNotificationPreferences"] == {
        "errors": [{**missing, "field": ["input", "accountEmailId"]}],
        "accountEmail": None,
    }


async def test_login_off_ends_access_and_audits_it(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    client_api = await activated_client(
        acme.api, Api(client), settings, smtp, anna.account_email_id
    )
    resent = await acme.api.ok(RESEND, {"id": anna.account_email_id})
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "login": False}})
    assert (await client_api.data(CLIENT_VIEW))["portalAccounts"] == []

    user = await PortalUser.get(email_normalized="anna@miller.example")
    [removed] = await audit_entries(acme.api, anna.account_id, "PORTAL_ACCESS_REMOVED")
    assert removed == {
        "action": "PORTAL_ACCESS_REMOVED",
        "actor": "owner@acme.example",
        "email": "anna@miller.example",
        "before": {"portalUser": user.pk},
        "after": None,
    }
    [revoked] = await audit_entries(acme.api, anna.account_id, "INVITATION_REVOKED")
    assert revoked["before"] == {"invitation": bare_pk(resent["invitation"]["id"], "Invitation")}
    assert revoked["after"] == {"reason": "LOGIN off"}
    sent = await audit_entries(acme.api, anna.account_id, "INVITATION_SENT")
    assert [e["actor"] for e in sent] == ["owner@acme.example"] * 2


async def test_notification_preferences_are_audited_with_who_changed_them(
    acme, client, settings, smtp
):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    prefs = """mutation($input: NotificationPreferencesInput!) { setNotificationPreferences(input: $input) {
      errors { code } accountEmail { notificationPreferences { all enabled } } } }"""
    by_staff = {"accountEmailId": anna.account_email_id, "all": False, "enabled": ["APPROVALS"]}
    await acme.api.ok(prefs, {"input": by_staff})
    client_api = await activated_client(
        acme.api, Api(client), settings, smtp, anna.account_email_id
    )
    by_client = {"accountEmailId": anna.account_email_id, "all": True, "enabled": []}
    assert (await client_api.ok(prefs, {"input": by_client}))["accountEmail"][
        "notificationPreferences"
    ] == {"all": True, "enabled": []}
    entries = await audit_entries(acme.api, anna.account_id, "NOTIFICATION_PREFERENCES_CHANGED")
    assert entries == [
        {
            "action": "NOTIFICATION_PREFERENCES_CHANGED",
            "actor": "anna@miller.example",
            "email": "anna@miller.example",
            "before": {"all": False, "enabled": ["APPROVALS"]},
            "after": {"all": True, "enabled": []},
        },
        {
            "action": "NOTIFICATION_PREFERENCES_CHANGED",
            "actor": "owner@acme.example",
            "email": "anna@miller.example",
            "before": {"all": True, "enabled": []},
            "after": {"all": False, "enabled": ["APPROVALS"]},
        },
    ]


async def _mailbox(acme, name: str) -> Mailbox:
    """A connected mailbox as stored (never logged in to: these tests only queue imports)."""
    return await Mailbox.create(
        firm_id=acme.owner.firm_id,
        address=f"{name}@acme.example",
        address_normalized=f"{name}@acme.example",
        imap_host="127.0.0.1",
        imap_port=993,
        smtp_host="127.0.0.1",
        smtp_port=465,
        username=name,
        password_encrypted="unused",
    )


async def test_only_email_sync_going_on_queues_history_and_changes_name_the_address(acme):
    """NOTIFY going on with EMAIL SYNC off queues no import of earlier mail; EMAIL SYNC going
    on does. Each change's audit entry names the address."""
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await _mailbox(acme, "office")
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}})
    assert await HistoryImport.all().count() == 0
    sync_on = {"input": {"accountEmailId": anna.account_email_id, "emailSync": True}}
    await acme.api.ok(FLAGS, sync_on)
    assert await HistoryImport.all().values_list("address_normalized", flat=True) == [
        "anna@miller.example"
    ]
    changes = await audit_entries(acme.api, anna.account_id, "FLAGS_CHANGED")
    assert [e["email"] for e in changes] == ["anna@miller.example"] * 2


async def test_an_address_change_with_email_sync_on_queues_the_new_address_history(acme):
    """EMAIL SYNC stays on for the renamed address: its earlier mail is queued for import
    from every mailbox of the firm (the import itself is test_history's)."""
    anna = await invitee(acme.api, "Miller Family", "anna@old.example")
    ben = await invitee(acme.api, "Ben Family", "ben@old.example", first="Ben")
    for name in ("office", "tax"):
        await _mailbox(acme, name)
    sync_on = {"input": {"accountEmailId": anna.account_email_id, "emailSync": True}}
    await acme.api.ok(FLAGS, sync_on)
    await acme.api.ok(UPDATE_EMAIL, {"id": anna.email_id, "address": "Anna@New.example"})
    await acme.api.ok(UPDATE_EMAIL, {"id": ben.email_id, "address": "ben@new.example"})
    queued = await HistoryImport.all().order_by("id").values_list("address_normalized", "status")
    assert [(a, str(s)) for a, s in queued] == [
        ("anna@old.example", "PENDING"),
        ("anna@old.example", "PENDING"),
        ("anna@new.example", "PENDING"),
        ("anna@new.example", "PENDING"),
    ]
