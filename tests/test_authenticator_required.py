"""An authenticator required (services/firm/enrollment.py): a person without one gets in with
a mailed code or link, but only to set one up; they may not remove it while it is required;
replacing one needs a fresh code; an owner or admin resets a lost one."""

from __future__ import annotations

import re

from models import AuditEntry, OutboundEmail, StaffRole
from schema import ids
from services.mail.events import announce_message
from services.outbound import outbox
from services.shared.pubsub import firm_channel
from tests.support.api import Api, add_staff, api_for
from tests.support.crm_ops import new_account
from tests.support.login import (
    CLIENT_VIEW,
    deliver,
    invitee,
    login_on,
    portal_user,
    text_of,
    token_in,
)
from tests.support.smtp import smtp_fixture  # noqa: F401  (the `smtp` fixture)
from tests.support.websocket import SYNCED, serving, socket
from tests.test_second_factor import (
    CONFIRM,
    REMOVE,
    code_in,
    enrolled,
    error,
    later,
    require,
    staff_sign_in,
    totp_of,
    verify,
)
from tests.test_subscription_fanout import store_mail, token_for

MEMBER = """mutation($id: ID!, $input: UpdateStaffMemberInput!) {
  updateStaffMember(id: $id, input: $input) { errors { code } } }"""
VERIFY = """mutation($id: ID!, $code: String!) {
  verifySecondFactor(challengeId: $id, code: $code) {
    errors { code } token authenticatorRequired } }"""
RESET = """mutation($id: ID!) {
  resetAuthenticator(personId: $id) { errors { code } sessionsEnded } }"""
REPLACE = """mutation($code: String) {
  startAuthenticatorEnrollment(code: $code) { errors { code } provisioningUri } }"""
STAFF_WORK = "{ staffMembers { email } }"


async def notices_to(address: str) -> list[str]:
    """What each AUTHENTICATOR_CHANGED notice to `address` says happened, oldest first."""
    rows = await OutboundEmail.filter(kind="AUTHENTICATOR_CHANGED", to_address=address)
    return [r.subject.rsplit(" was ", 1)[1] for r in sorted(rows, key=lambda r: r.pk)]


def top_code(body: dict) -> str | None:
    return body["errors"][0]["extensions"]["code"] if body.get("errors") else None


async def own_requirement(acme, member, level: str = "AUTHENTICATOR") -> None:
    """The member's own requirement (it holds at once, whatever the firm's start date)."""
    variables = {"id": ids.encode("StaffMember", member.pk), "input": {"secondFactor": level}}
    await acme.api.ok(MEMBER, variables)


async def mailed_sign_in(anon: Api, settings, smtp, email: str) -> dict:
    asked = await staff_sign_in(anon, "acme", email)
    assert asked["secondFactor"]["methods"] == ["EMAIL_CODE"]
    code = code_in((await deliver(settings, smtp))[-1])
    return (await anon.data(VERIFY, {"id": asked["secondFactor"]["id"], "code": code}))[
        "verifySecondFactor"
    ]


async def test_a_mailed_code_opens_an_enrollment_only_session(acme, anon, client, settings, smtp):
    emma = await add_staff(acme, "emma@acme.example")
    await own_requirement(acme, emma)
    done = await mailed_sign_in(anon, settings, smtp, "emma@acme.example")
    assert done["errors"] == [] and done["token"] and done["authenticatorRequired"] is True
    me = Api(client, done["token"])
    # Anything but enrolling is refused, as a whole operation, with its own code.
    for query in (STAFF_WORK, "{ viewer { __typename } staffMembers { email } }"):
        body = await me.post(query)
        assert top_code(body) == "AUTHENTICATOR_REQUIRED", body
    fragment = "query { ...F } fragment F on Query { accounts(first: 1) { totalCount } }"
    assert top_code(await me.post(fragment)) == "AUTHENTICATOR_REQUIRED"
    mutation = "mutation { setInboxNotification(setting: DAILY_DIGEST) { errors { code } } }"
    assert top_code(await me.post(mutation)) == "AUTHENTICATOR_REQUIRED"
    # What needs no session works with hers too: someone else signs in on this browser.
    other = await staff_sign_in(me, "acme", acme.owner.email)
    assert other["errors"] == [] and (other["token"] or other["secondFactor"])
    # The viewer, and enrolling, work; once confirmed the same session is a full one.
    assert (await me.data("{ viewer { ... on StaffMember { email } } }"))["viewer"]
    totp, _ = await enrolled(me)
    assert (await me.data(STAFF_WORK))["staffMembers"]
    # Her next sign-in asks for the app, and the session is full at once.
    asked = (await staff_sign_in(anon, "acme", "emma@acme.example"))["secondFactor"]
    assert asked["methods"] == ["AUTHENTICATOR", "RECOVERY_CODE"]
    again = await anon.data(VERIFY, {"id": asked["id"], "code": later(totp)})
    assert again["verifySecondFactor"]["authenticatorRequired"] is False
    # Others, and she herself before the requirement, are not held.
    assert (await acme.api.data(STAFF_WORK))["staffMembers"]


async def test_a_session_from_before_the_start_date_is_held_too(acme, client):
    emma = await add_staff(acme, "emma@acme.example")
    me = await api_for(client, emma)
    assert (await me.data(STAFF_WORK))["staffMembers"]
    await own_requirement(acme, emma)
    assert top_code(await me.post(STAFF_WORK)) == "AUTHENTICATOR_REQUIRED"
    assert await me.data("mutation { signOut }") == {"signOut": True}


async def test_the_invitation_link_opens_an_enrollment_only_session(acme, client, settings, smtp):
    await require(acme.api, clientSecondFactor="AUTHENTICATOR")
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)
    [invitation] = await deliver(settings, smtp)
    query = """mutation($token: String!) { acceptInvitation(token: $token,
      password: "client-password-9") { errors { code } token authenticatorRequired } }"""
    accepted = (await Api(client).data(query, {"token": token_in(invitation)}))["acceptInvitation"]
    assert accepted["token"] and accepted["authenticatorRequired"] is True
    me = Api(client, accepted["token"])
    assert top_code(await me.post(CLIENT_VIEW)) == "AUTHENTICATOR_REQUIRED"
    # A document download reads nothing either (the same session, by cookie or Bearer).
    document = await client.get(
        f"/documents/{ids.encode('Document', 1)}",
        headers={"Authorization": f"Bearer {accepted['token']}"},
    )
    assert document.status_code == 404
    await enrolled(me)
    assert (await me.data(CLIENT_VIEW))["portalAccounts"] == [
        {"id": anna.account_id, "name": "Miller Family"}
    ]


async def test_the_password_page_opens_an_enrollment_only_session(acme, client, settings, smtp):
    await require(acme.api, staffSecondFactor="AUTHENTICATOR", secondFactorFrom="2099-01-01T00:00Z")
    add = """mutation { addStaffMember(input: {email: "new@acme.example", name: "New"}) {
      errors { code } } }"""
    await acme.api.ok(add)
    [mail] = await deliver(settings, smtp)
    await require(acme.api, secondFactorFrom="2000-01-01T00:00:00Z")
    token = re.search(r"/password\?token=([A-Za-z0-9_\-]+)", text_of(mail)).group(1)
    posted = await client.post(
        "/password",
        data={"token": token, "password": "a-new-password-9", "confirm": "a-new-password-9"},
        headers={"Origin": "http://portico.test"},
    )
    assert posted.status_code == 200, posted.text
    session = posted.cookies["portico_session"]
    client.cookies.clear()
    assert top_code(await Api(client, session).post(STAFF_WORK)) == "AUTHENTICATOR_REQUIRED"


async def test_removal_is_refused_while_required_and_replacing_needs_a_fresh_code(
    acme, anon, client
):
    emma = await add_staff(acme, "emma@acme.example")
    me = await api_for(client, emma)
    totp, codes = await enrolled(me)
    # Replacing needs a code from the app (or a recovery code): a stolen session has none.
    assert error((await me.data(REPLACE))["startAuthenticatorEnrollment"]) == (
        "AUTHENTICATOR_ENROLLED"
    )
    wrong = (await me.data(REPLACE, {"code": "000000"}))["startAuthenticatorEnrollment"]
    assert error(wrong) == "SECOND_FACTOR_INVALID"
    await own_requirement(acme, emma)
    removed = (await me.data(REMOVE, {"code": codes[0]}))["removeAuthenticator"]
    assert error(removed) == "AUTHENTICATOR_REQUIRED"
    # She replaces it: the old app works until the new one is confirmed, then not at all.
    started = await me.ok(REPLACE, {"code": later(totp)})
    new = totp_of(started["provisioningUri"])
    new_codes = (await me.ok(CONFIRM, {"code": new.now()}))["recoveryCodes"]
    assert len(new_codes) == 10
    asked = (await staff_sign_in(anon, "acme", "emma@acme.example"))["secondFactor"]
    assert error(await verify(anon, asked["id"], later(totp, 2))) == "SECOND_FACTOR_INVALID"
    assert error(await verify(anon, asked["id"], codes[1])) == "SECOND_FACTOR_INVALID"
    assert (await verify(anon, asked["id"], later(new)))["token"]
    # Not required any more: removal works again.
    await own_requirement(acme, emma, "NONE")
    assert (await me.ok(REMOVE, {"code": new_codes[0]}))["recoveryCodes"] == []
    # She was told each time, so a change she did not make would not go unseen.
    assert await notices_to("emma@acme.example") == ["set up", "replaced", "removed"]


async def test_an_owner_or_admin_resets_a_lost_authenticator(
    acme, globex, anon, client, settings, smtp
):
    emma = await add_staff(acme, "emma@acme.example")
    emma_api = await api_for(client, emma)
    await enrolled(emma_api)
    await own_requirement(acme, emma)
    emma_id = ids.encode("StaffMember", emma.pk)
    # Employees may not; another firm's owner finds nobody.
    employee = await api_for(client, await add_staff(acme, "eve@acme.example"))
    assert top_code(await employee.post(RESET, {"id": emma_id})) == "FORBIDDEN"
    other = (await globex.api.data(RESET, {"id": emma_id}))["resetAuthenticator"]
    assert error(other) == "NOT_FOUND"
    assert error((await acme.api.data(RESET, {"id": "nonsense"}))["resetAuthenticator"]) == (
        "NOT_FOUND"
    )
    # The owner resets hers: her sessions end, and her next sign-in mails a code and
    # opens an enrollment-only session.
    done = await acme.api.ok(RESET, {"id": emma_id})
    assert done["sessionsEnded"] == 1
    assert top_code(await emma_api.post("{ viewer { __typename } staffMembers { email } }")) == (
        "UNAUTHENTICATED"
    )
    [entry] = await AuditEntry.filter(action="AUTHENTICATOR_RESET")
    assert entry.staff_member_id == acme.owner.pk and entry.email == "emma@acme.example"
    assert entry.before == {"authenticator": True}
    assert (await notices_to("emma@acme.example"))[-1] == "reset"
    notice = await OutboundEmail.filter(kind="AUTHENTICATOR_CHANGED").order_by("-id").first()
    assert notice is not None and notice.priority == outbox.URGENT
    text = outbox.decrypt_bodies(settings, notice).text
    assert f"was reset by {acme.owner.name}." in text
    again = await mailed_sign_in(anon, settings, smtp, "emma@acme.example")
    assert again["authenticatorRequired"] is True
    # An admin may not reset an owner, nor anyone their own; another owner may.
    admin = await add_staff(acme, "ada@acme.example", StaffRole.ADMIN)
    admin_api = await api_for(client, admin)
    owner_id = ids.encode("StaffMember", acme.owner.pk)
    assert top_code(await admin_api.post(RESET, {"id": owner_id})) == "FORBIDDEN"
    own = ids.encode("StaffMember", admin.pk)
    assert top_code(await admin_api.post(RESET, {"id": own})) == "FORBIDDEN"
    second_owner = await api_for(client, await add_staff(acme, "o2@acme.example", StaffRole.OWNER))
    assert (await second_owner.ok(RESET, {"id": owner_id}))["sessionsEnded"] >= 1
    # A client's, by their portal user id.
    anna = await portal_user(acme.owner.firm_id)
    anna_id = ids.encode("PortalUser", anna.pk)
    assert (await admin_api.ok(RESET, {"id": anna_id}))["sessionsEnded"] == 0


async def test_an_enrollment_only_session_cannot_subscribe_to_mail(acme, anon, settings, smtp):
    emma = await add_staff(acme, "emma@acme.example", can_use_inbox=True)
    await own_requirement(acme, emma)
    done = await mailed_sign_in(anon, settings, smtp, "emma@acme.example")
    assert done["authenticatorRequired"] is True
    async with serving(settings) as live, socket(live.url, done["token"]) as sock:
        await sock.subscribe("1", SYNCED, None)  # ended at once, before it listens
        assert await sock.ended_by("1") == "AUTHENTICATOR_REQUIRED"
        await sock.nothing_pending()
        assert live.app.state.bus.subscriber_count(firm_channel(acme.owner.firm_id)) == 0


async def test_a_subscription_ends_when_an_authenticator_becomes_required(acme, settings):
    emma = await add_staff(acme, "emma@acme.example", can_use_inbox=True)
    token = await token_for(emma)
    family = await new_account(acme.api, "Family")
    firm_id = acme.owner.firm_id
    async with serving(settings) as live, socket(live.url, token) as sock:
        await sock.subscribe("1", SYNCED, None)
        await live.subscribed(firm_id)
        await own_requirement(acme, emma)  # holds at once: her session may only enroll now
        assert top_code(await live.api(token).post(STAFF_WORK)) == "AUTHENTICATOR_REQUIRED"
        pk = await store_mail(firm_id, family["id"], "Confidential")
        await announce_message(
            live.app.state.bus, firm_id, pk, [ids.decode(family["id"], "Account")]
        )
        assert await sock.ended_by("1") == "AUTHENTICATOR_REQUIRED"  # no mail went out
