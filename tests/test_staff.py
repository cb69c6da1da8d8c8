"""Staff management: who may manage whom, deactivation ends sessions, the last owner stays."""

from __future__ import annotations

from models import Session, StaffMember, StaffRole
from tests.support.api import Api, add_staff, api_for
from tests.support.crm_ops import new_account
from tests.support.login import portal_token
from tests.support.staff_ops import ADD, MEMBER_FIELDS, UPDATE

LIST = f"{{ staffMembers {{ {MEMBER_FIELDS} }} }}"


async def test_owner_adds_and_lists_staff(acme):
    payload = await acme.api.ok(
        ADD,
        {"input": {"email": "Erin@Acme.example", "name": " Erin ", "canManageAccounts": True}},
    )
    erin = payload["staffMember"]
    assert erin["email"] == "Erin@Acme.example" and erin["name"] == "Erin"
    assert erin["role"] == "EMPLOYEE" and erin["canManageAccounts"] and not erin["canUseInbox"]
    members = (await acme.api.data(LIST))["staffMembers"]
    assert sorted(m["email"] for m in members) == ["Erin@Acme.example", "owner@acme.example"]


async def test_add_staff_bad_input_writes_nothing(acme):
    cases = [
        ({"email": "not-an-address", "name": "X"}, "INVALID_EMAIL", ["input", "email"]),
        ({"email": "OWNER@acme.example", "name": "X"}, "EMAIL_TAKEN", ["input", "email"]),
        ({"email": "x@acme.example", "name": "   "}, "INVALID_NAME", ["input", "name"]),
    ]
    for staff_input, code, field in cases:
        data = await acme.api.data(ADD, {"input": staff_input})
        assert data["addStaffMember"]["staffMember"] is None
        [error] = data["addStaffMember"]["errors"]
        assert (error["code"], error["field"]) == (code, field)
    assert len((await acme.api.data(LIST))["staffMembers"]) == 1


async def test_employees_may_read_but_not_manage_staff(acme, client):
    erin = await add_staff(acme, "erin@acme.example", can_manage_accounts=True)
    api = await api_for(client, erin)
    assert len((await api.data(LIST))["staffMembers"]) == 2
    body = await api.post(ADD, {"input": {"email": "x@acme.example", "name": "X"}})
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert body["data"] is None
    assert len((await api.data(LIST))["staffMembers"]) == 2


async def test_admins_manage_employees_but_not_owners(acme, client):
    admin = await add_staff(acme, "ada@acme.example", StaffRole.ADMIN)
    api = await api_for(client, admin)
    emp = (await api.ok(ADD, {"input": {"email": "e@acme.example", "name": "E"}}))["staffMember"]
    promoted = await api.ok(UPDATE, {"id": emp["id"], "input": {"role": "ADMIN"}})
    assert promoted["staffMember"]["role"] == "ADMIN"
    assert promoted["staffMember"]["canManageAccounts"]  # admins always have both rights

    members = (await api.data(LIST))["staffMembers"]
    owner_id = next(m["id"] for m in members if m["role"] == "OWNER")
    for variables in [
        {"id": owner_id, "input": {"active": False}},
        {"id": emp["id"], "input": {"role": "OWNER"}},
    ]:
        body = await api.post(UPDATE, variables)
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    body = await api.post(
        ADD, {"input": {"email": "o2@acme.example", "name": "O", "role": "OWNER"}}
    )
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_deactivating_ends_sessions_at_once(acme, client):
    erin = await add_staff(acme, "erin@acme.example")
    erin_api = await api_for(client, erin)
    assert (await erin_api.data("{ viewer { __typename } }"))["viewer"] is not None
    erin_id = next(
        m for m in (await acme.api.data(LIST))["staffMembers"] if m["email"] == erin.email
    )["id"]

    payload = await acme.api.ok(UPDATE, {"id": erin_id, "input": {"active": False}})
    assert payload["staffMember"]["active"] is False
    assert (await erin_api.data("{ viewer { __typename } }"))["viewer"] is None
    assert await Session.filter(staff_member_id=erin.pk, revoked_at=None).count() == 0

    # Reactivated, she signs in anew: the old token stays dead.
    await acme.api.ok(UPDATE, {"id": erin_id, "input": {"active": True}})
    assert (await erin_api.data("{ viewer { __typename } }"))["viewer"] is None


async def test_the_last_owner_cannot_leave(acme):
    owner_id = (await acme.api.data("{ viewer { ... on StaffMember { id } } }"))["viewer"]["id"]
    for change in [{"active": False}, {"role": "ADMIN"}]:
        data = await acme.api.data(UPDATE, {"id": owner_id, "input": change})
        assert data["updateStaffMember"]["errors"][0]["code"] == "LAST_OWNER"
    assert (await acme.api.data("{ viewer { ... on StaffMember { role active } } }"))["viewer"] == {
        "role": "OWNER",
        "active": True,
    }

    second = await acme.api.ok(
        ADD, {"input": {"email": "o2@acme.example", "name": "O", "role": "OWNER"}}
    )
    await acme.api.ok(UPDATE, {"id": second["staffMember"]["id"], "input": {"name": "Second"}})
    demoted = await acme.api.ok(UPDATE, {"id": owner_id, "input": {"role": "ADMIN"}})
    assert demoted["staffMember"]["role"] == "ADMIN"


async def test_update_unknown_or_malformed_id_is_not_found(acme):
    for bad_id in ["nonsense", "QWNjb3VudDox", "U3RhZmZNZW1iZXI6OTk5OQ=="]:
        data = await acme.api.data(UPDATE, {"id": bad_id, "input": {"name": "X"}})
        assert data["updateStaffMember"]["errors"][0]["code"] == "NOT_FOUND"


INBOX_SETTING = """mutation($setting: InboxNotification!) {
  setInboxNotification(setting: $setting) {
    errors { code } staffMember { email inboxNotification } } }"""
MY_SETTING = "{ staffMembers { email inboxNotification } }"


async def test_each_member_sets_their_own_inbox_notification(acme, client):
    erin = await add_staff(acme, "erin@acme.example")  # no inbox right: may choose all the same
    erin_api = await api_for(client, erin)
    assert {m["inboxNotification"] for m in (await acme.api.data(MY_SETTING))["staffMembers"]} == {
        "OFF"
    }
    payload = await erin_api.ok(INBOX_SETTING, {"setting": "IMMEDIATE"})
    assert payload["staffMember"] == {
        "email": "erin@acme.example",
        "inboxNotification": "IMMEDIATE",
    }
    payload = await acme.api.ok(INBOX_SETTING, {"setting": "DAILY_DIGEST"})
    assert payload["staffMember"]["email"] == "owner@acme.example"
    settings = {
        m["email"]: m["inboxNotification"]
        for m in (await acme.api.data(MY_SETTING))["staffMembers"]
    }
    assert settings == {"erin@acme.example": "IMMEDIATE", "owner@acme.example": "DAILY_DIGEST"}
    # Choosing the digest starts its window; choosing it again keeps it.
    owner = await StaffMember.get(pk=acme.owner.pk)
    assert owner.inbox_digest_through is not None
    await acme.api.ok(INBOX_SETTING, {"setting": "DAILY_DIGEST"})
    assert (
        await StaffMember.get(pk=acme.owner.pk)
    ).inbox_digest_through == owner.inbox_digest_through


async def test_inbox_notification_is_for_signed_in_staff_and_known_values(acme, anon, client):
    body = await anon.post(INBOX_SETTING, {"setting": "IMMEDIATE"})
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    account = await new_account(acme.api, "Miller Family")
    anna = Api(client, await portal_token(acme, account["id"]))
    body = await anna.post(INBOX_SETTING, {"setting": "IMMEDIATE"})
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    body = await acme.api.post(INBOX_SETTING, {"setting": "HOURLY"})
    assert "data" not in body and "HOURLY" in body["errors"][0]["message"]  # never ran
    members = (await acme.api.data(MY_SETTING))["staffMembers"]
    assert [m["inboxNotification"] for m in members] == ["OFF"]
