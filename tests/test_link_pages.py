"""Portico's pages for mailed links (/invitation, /password) and staff onboarding by mail."""

from __future__ import annotations

import re
from datetime import timedelta

from models import Invitation, PasswordLink
from resolvers.context import SESSION_COOKIE
from services.shared.sessions import now
from tests.support.api import Api
from tests.support.login import deliver, invitee, login_on, text_of, token_in
from tests.support.smtp import smtp_fixture  # noqa: F401  (the `smtp` fixture)
from tests.support.staff_ops import ADD

PASSWORD_LINK = re.compile(r"/password\?token=([A-Za-z0-9_\-]+)")
SET_PASSWORD = """mutation($t: String!, $p: String!) { setStaffPassword(token: $t, password: $p) {
  errors { code } token viewer { ... on StaffMember { email } } } }"""


async def test_invitation_page_states(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)
    token = token_in((await deliver(settings, smtp))[0])

    page = await client.get("/invitation", params={"token": token})
    assert page.status_code == 200 and "Miller Family" in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert 'name="password"' in page.text

    mismatch = await client.post(
        "/invitation",
        data={"token": token, "password": "long-password-1", "confirm": "other-password-1"},
    )
    assert mismatch.status_code == 400 and "differ" in mismatch.text
    weak = await client.post(
        "/invitation", data={"token": token, "password": "short", "confirm": "short"}
    )
    assert weak.status_code == 400 and "at least 10" in weak.text
    assert await Invitation.filter(accepted_at__not_isnull=True).count() == 0

    done = await client.post(
        "/invitation",
        data={"token": token, "password": "long-password-1", "confirm": "long-password-1"},
    )
    assert done.status_code == 200 and "signed in to the portal of Miller Family" in done.text
    session = done.cookies[SESSION_COOKIE]
    view = await Api(client, session).data("{ currentAccount { name } }")
    assert view == {"currentAccount": {"name": "Miller Family"}}

    used = await client.get("/invitation", params={"token": token})
    assert used.status_code == 410 and "used already" in used.text
    unknown = await client.get("/invitation", params={"token": "nope"})
    assert unknown.status_code == 404 and "not valid" in unknown.text
    assert (await client.get("/invitation")).status_code == 404


async def test_invitation_page_expired_and_revoked(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)
    token = token_in((await deliver(settings, smtp))[0])
    await Invitation.all().update(expires_at=now() - timedelta(minutes=1))
    expired = await client.get("/invitation", params={"token": token})
    assert expired.status_code == 410 and "expired" in expired.text
    await Invitation.all().update(expires_at=now() + timedelta(hours=1), revoked_at=now())
    revoked = await client.post(
        "/invitation",
        data={"token": token, "password": "long-password-1", "confirm": "long-password-1"},
    )
    assert revoked.status_code == 410 and "withdrawn" in revoked.text


async def test_new_staff_member_sets_password_from_mailed_link(acme, client, settings, smtp):
    added = await acme.api.ok(ADD, {"input": {"email": "erin@acme.example", "name": "Erin"}})
    assert added["staffMember"]["email"] == "erin@acme.example"
    [mail] = await deliver(settings, smtp)
    assert mail["To"] == "erin@acme.example"
    assert "Acme LLP" in text_of(mail)
    token = PASSWORD_LINK.search(text_of(mail)).group(1)
    assert token not in str(await PasswordLink.all().values_list("token_hash", flat=True))

    weak = (await Api(client).data(SET_PASSWORD, {"t": token, "p": "short"}))["setStaffPassword"]
    assert weak["errors"][0]["code"] == "WEAK_PASSWORD"
    done = (await Api(client).data(SET_PASSWORD, {"t": token, "p": "erins-password-1"}))[
        "setStaffPassword"
    ]
    assert done["errors"] == [] and done["viewer"] == {"email": "erin@acme.example"}
    again = (await Api(client).data(SET_PASSWORD, {"t": token, "p": "erins-password-2"}))[
        "setStaffPassword"
    ]
    assert again["errors"][0]["code"] == "LINK_USED"
    signed_in = await Api(client).data(
        'mutation { staffSignIn(firm: "acme", email: "erin@acme.example", password: "erins-password-1") { errors { code } } }'
    )
    assert signed_in["staffSignIn"]["errors"] == []


async def test_password_page_and_expired_link(acme, client, settings, smtp):
    await acme.api.ok(ADD, {"input": {"email": "erin@acme.example", "name": "Erin"}})
    token = PASSWORD_LINK.search(text_of((await deliver(settings, smtp))[0])).group(1)
    page = await client.get("/password", params={"token": token})
    assert page.status_code == 200 and 'name="password"' in page.text
    done = await client.post(
        "/password",
        data={"token": token, "password": "erins-password-1", "confirm": "erins-password-1"},
    )
    assert done.status_code == 200 and "signed in" in done.text
    assert (await client.get("/password", params={"token": token})).status_code == 410

    await acme.api.ok(ADD, {"input": {"email": "finn@acme.example", "name": "Finn"}})
    _, finn_mail = await deliver(settings, smtp)
    await PasswordLink.filter(used_at=None).update(expires_at=now() - timedelta(seconds=1))
    finn_token = PASSWORD_LINK.search(text_of(finn_mail)).group(1)
    expired = (await Api(client).data(SET_PASSWORD, {"t": finn_token, "p": "finns-password-1"}))[
        "setStaffPassword"
    ]
    assert expired["errors"][0]["code"] == "LINK_EXPIRED"


async def test_forms_posted_from_another_site_are_refused(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)
    token = token_in((await deliver(settings, smtp))[0])
    form = {"token": token, "password": "long-password-1", "confirm": "long-password-1"}
    for headers in [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}]:
        refused = await client.post("/invitation", data=form, headers=headers)
        assert refused.status_code == 403 and SESSION_COOKIE not in refused.cookies
        assert (await client.post("/password", data=form, headers=headers)).status_code == 403
    assert await Invitation.filter(accepted_at__not_isnull=True).count() == 0
    # Our own page's post: Origin "null" (no-referrer policy) with Sec-Fetch-Site same-origin.
    same = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    assert (await client.post("/invitation", data=form, headers=same)).status_code == 200
