"""Two-factor sign-in through the API (services/firm/second_factor.py): the firm's and a
member's requirement, the mailed code's rules (single use, 10 minutes, 5 tries, bound to its
challenge), the pages, and who may read and set what. Expiry is reached by moving the row's
time back, as the session tests do, never by sleeping."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta

import pyotp
import pytest

from models import Authenticator, RecoveryCode, SecondFactorChallenge
from schema import ids
from services.shared.sessions import now
from services.shared.tokens import hash_token
from tests.support.api import PASSWORD, Api, add_staff, api_for
from tests.support.crm_ops import LINK, new_account
from tests.support.login import (
    CLIENT_PASSWORD,
    STATUS,
    accept,
    deliver,
    invitee,
    login_on,
    portal_token,
    text_of,
    token_in,
)
from tests.support.smtp import smtp_fixture  # noqa: F401  (the `smtp` fixture)
from tests.support.sqlcount import count_sql

SETTINGS = """
mutation($input: FirmSettingsInput!) {
  updateFirmSettings(input: $input) {
    errors { code field }
    firm { copyAddress clientSecondFactor staffSecondFactor secondFactorFrom }
  }
}
"""
STAFF_SIGN_IN = """
mutation($firm: String!, $email: String!, $password: String!) {
  staffSignIn(firm: $firm, email: $email, password: $password) {
    errors { code }
    token
    viewer { __typename }
    secondFactor { id methods expiresAt }
  }
}
"""
CLIENT_SIGN_IN = """
mutation($firm: String!, $email: String!, $password: String!) {
  signIn(firm: $firm, email: $email, password: $password) {
    errors { code }
    token
    accounts { name }
    currentAccount { name }
    secondFactor { id methods expiresAt }
  }
}
"""
VERIFY = """
mutation($id: ID!, $code: String!) {
  verifySecondFactor(challengeId: $id, code: $code) {
    errors { code field }
    token
    viewer { __typename ... on StaffMember { email } ... on PortalUser { email } }
    accounts { name }
    currentAccount { name }
    secondFactor { id }
  }
}
"""
CODE = re.compile(r"\b(\d{6})\b")


def code_in(message) -> str:
    match = CODE.search(text_of(message))
    assert match, text_of(message)
    return match.group(1)


async def require(api: Api, **settings: object) -> dict:
    return (await api.ok(SETTINGS, {"input": settings}))["firm"]


async def staff_sign_in(api: Api, slug: str, email: str, password: str = PASSWORD) -> dict:
    variables = {"firm": slug, "email": email, "password": password}
    return (await api.data(STAFF_SIGN_IN, variables))["staffSignIn"]


async def verify(api: Api, challenge_id: str, code: str) -> dict:
    data = await api.data(VERIFY, {"id": challenge_id, "code": code})
    return data["verifySecondFactor"]


def error(payload: dict) -> str | None:
    return payload["errors"][0]["code"] if payload["errors"] else None


async def test_firm_settings_are_kept_apart_and_read_by_staff(acme, anon):
    firm = await require(acme.api, staffSecondFactor="EMAIL_CODE")
    assert firm["staffSecondFactor"] == "EMAIL_CODE"
    assert firm["clientSecondFactor"] == "NONE" and firm["secondFactorFrom"] is None
    await require(acme.api, copyAddress="archive@acme.example")
    firm = await require(acme.api, clientSecondFactor="AUTHENTICATOR")
    # Leaving a setting out keeps it (copyAddress as well).
    assert firm["copyAddress"] == "archive@acme.example"
    assert firm["staffSecondFactor"] == "EMAIL_CODE"
    firm = await require(acme.api, secondFactorFrom="2030-01-02T03:04:05")  # no zone: UTC
    assert firm["secondFactorFrom"].startswith("2030-01-02T03:04:05")
    assert (await require(acme.api, secondFactorFrom=None))["secondFactorFrom"] is None


async def test_only_owners_and_admins_set_them(acme, client):
    employee = await api_for(client, await add_staff(acme, "emma@acme.example"))
    body = await employee.post(SETTINGS, {"input": {"staffSecondFactor": "NONE"}})
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    bad = await acme.api.post(SETTINGS, {"input": {"staffSecondFactor": "SMS"}})
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_staff_email_code_end_to_end(acme, anon, settings, smtp):
    await require(acme.api, staffSecondFactor="EMAIL_CODE")
    asked = await staff_sign_in(anon, "acme", "owner@acme.example")
    assert asked["errors"] == [] and asked["token"] is None and asked["viewer"] is None
    challenge = asked["secondFactor"]
    assert challenge["methods"] == ["EMAIL_CODE"]
    [mail] = await deliver(settings, smtp)
    assert mail["To"] == "owner@acme.example"
    code = code_in(mail)
    assert code not in mail["Subject"]
    # At rest: neither the challenge id nor the code in clear.
    row = await SecondFactorChallenge.get(token_hash=hash_token(challenge["id"]))
    assert code not in (row.code_hash or "") and challenge["id"] not in row.token_hash
    wrong = "000000" if code != "000000" else "111111"
    assert error(await verify(anon, challenge["id"], wrong)) == "SECOND_FACTOR_INVALID"
    done = await verify(anon, challenge["id"], code)
    assert done["errors"] == [] and done["viewer"]["email"] == "owner@acme.example"
    me = Api(anon.http, done["token"])
    assert (await me.data("{ viewer { __typename } }"))["viewer"]["__typename"] == "StaffMember"
    # Single use: the same right code again is refused.
    assert error(await verify(anon, challenge["id"], code)) == "SECOND_FACTOR_INVALID"


async def test_five_tries_then_refused_even_with_the_right_code(acme, anon, settings, smtp):
    await require(acme.api, staffSecondFactor="EMAIL_CODE")
    challenge = (await staff_sign_in(anon, "acme", "owner@acme.example"))["secondFactor"]
    code = code_in((await deliver(settings, smtp))[0])
    wrong = [c for c in ("000000", "111111", "222222", "333333", "444444", "555555") if c != code]
    answers = [error(await verify(anon, challenge["id"], c)) for c in wrong[:5]]
    assert answers == ["SECOND_FACTOR_INVALID"] * 4 + ["TOO_MANY_ATTEMPTS"]
    assert error(await verify(anon, challenge["id"], code)) == "TOO_MANY_ATTEMPTS"


async def test_wrong_codes_count_on_the_sign_in_throttle(acme, anon, settings, smtp):
    """A new challenge per sign-in must not give unlimited guesses: wrong codes count as
    failed sign-ins, and past the limit the next sign-in is refused."""
    await require(acme.api, staffSecondFactor="EMAIL_CODE")
    for _ in range(2):
        challenge = (await staff_sign_in(anon, "acme", "owner@acme.example"))["secondFactor"]
        if challenge is None:
            break
        for c in ("000001", "000002", "000003"):
            await verify(anon, challenge["id"], c)
    refused = await staff_sign_in(anon, "acme", "owner@acme.example")
    assert error(refused) == "TOO_MANY_ATTEMPTS"


async def test_an_expired_challenge_is_refused(acme, anon, settings, smtp):
    await require(acme.api, staffSecondFactor="EMAIL_CODE")
    challenge = (await staff_sign_in(anon, "acme", "owner@acme.example"))["secondFactor"]
    code = code_in((await deliver(settings, smtp))[0])
    expires = challenge["expiresAt"]
    assert timedelta(minutes=9) < datetime.fromisoformat(expires) - now() <= timedelta(minutes=10)
    await SecondFactorChallenge.all().update(expires_at=now() - timedelta(seconds=1))
    assert error(await verify(anon, challenge["id"], code)) == "SECOND_FACTOR_INVALID"


@pytest.mark.parametrize(
    "challenge_id", ["", "nope", "x" * 5000, "ü" * 300, "' OR 1=1 --", "U3RhZmZNZW1iZXI6MQ=="]
)
async def test_unknown_and_malformed_challenges_answer_alike(acme, anon, challenge_id):
    payload = await verify(anon, challenge_id, "123456")
    assert payload["errors"] == [{"code": "SECOND_FACTOR_INVALID", "field": ["code"]}]
    assert payload["token"] is None


async def test_a_code_answers_only_its_own_challenge(acme, anon, settings, smtp):
    await require(acme.api, staffSecondFactor="EMAIL_CODE")
    await add_staff(acme, "emma@acme.example")
    mine = (await staff_sign_in(anon, "acme", "owner@acme.example"))["secondFactor"]
    theirs = (await staff_sign_in(anon, "acme", "emma@acme.example"))["secondFactor"]
    mails = {m["To"]: code_in(m) for m in await deliver(settings, smtp)}
    stolen = await verify(anon, theirs["id"], mails["owner@acme.example"])
    if mails["owner@acme.example"] != mails["emma@acme.example"]:
        assert error(stolen) == "SECOND_FACTOR_INVALID"
    done = await verify(anon, mine["id"], mails["owner@acme.example"])
    assert done["viewer"]["email"] == "owner@acme.example"


async def test_the_start_date_and_a_members_own_stricter_setting(acme, anon, client):
    await require(acme.api, staffSecondFactor="EMAIL_CODE", secondFactorFrom="2099-01-01T00:00:00Z")
    direct = await staff_sign_in(anon, "acme", "owner@acme.example")
    assert direct["token"] and direct["secondFactor"] is None  # not yet required
    emma = await add_staff(acme, "emma@acme.example")
    update = """mutation($id: ID!, $input: UpdateStaffMemberInput!) {
      updateStaffMember(id: $id, input: $input) { errors { code } staffMember { secondFactor } } }"""
    member = await acme.api.ok(
        update, {"id": ids.encode("StaffMember", emma.pk), "input": {"secondFactor": "EMAIL_CODE"}}
    )
    assert member["staffMember"]["secondFactor"] == "EMAIL_CODE"
    # Her own setting holds at once, whatever the firm's start date.
    asked = await staff_sign_in(anon, "acme", "emma@acme.example")
    assert asked["token"] is None and asked["secondFactor"]["methods"] == ["EMAIL_CODE"]
    # She may not lower it herself.
    emma_api = await api_for(client, emma)
    body = await emma_api.post(
        update, {"id": ids.encode("StaffMember", emma.pk), "input": {"secondFactor": "NONE"}}
    )
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    await require(acme.api, secondFactorFrom="2000-01-01T00:00:00Z")
    assert (await staff_sign_in(anon, "acme", "owner@acme.example"))["secondFactor"]


async def test_clients_verify_into_their_account_and_the_invitation_still_signs_in(
    acme, client, settings, smtp
):
    await require(acme.api, clientSecondFactor="EMAIL_CODE")
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)
    [invitation] = await deliver(settings, smtp)
    # The invitation's link proves the mailbox: accepting signs in without a code.
    accepted = await accept(Api(client), token_in(invitation))
    assert accepted["errors"] == [] and accepted["token"]
    anon = Api(client)
    variables = {"firm": "acme", "email": "anna@miller.example", "password": CLIENT_PASSWORD}
    asked = (await anon.data(CLIENT_SIGN_IN, variables))["signIn"]
    assert asked["token"] is None and asked["accounts"] == [] and asked["currentAccount"] is None
    mail = (await deliver(settings, smtp))[-1]
    assert mail["To"] == "anna@miller.example"
    done = await verify(anon, asked["secondFactor"]["id"], code_in(mail))
    assert done["errors"] == [] and done["token"]
    assert done["viewer"]["email"] == "anna@miller.example"
    assert done["currentAccount"] == {"name": "Miller Family"}
    # Staff are not asked: the client setting is the clients'.
    assert (await staff_sign_in(anon, "acme", "owner@acme.example"))["token"]


async def test_the_password_page_still_signs_a_new_member_in(acme, client, settings, smtp):
    # (From its start date on, the owner's own session could only enroll: see
    # test_authenticator_required.py, which follows the page's session further.)
    await require(acme.api, staffSecondFactor="AUTHENTICATOR", secondFactorFrom="2099-01-01T00:00Z")
    add = """mutation { addStaffMember(input: {email: "new@acme.example", name: "New"}) {
      errors { code } } }"""
    await acme.api.ok(add)
    [mail] = await deliver(settings, smtp)
    token = re.search(r"/password\?token=([A-Za-z0-9_\-]+)", text_of(mail)).group(1)
    page = await client.get("/password", params={"token": token})
    assert page.status_code == 200
    posted = await client.post(
        "/password",
        data={"token": token, "password": "a-new-password-9", "confirm": "a-new-password-9"},
        headers={"Origin": "http://portico.test"},
    )
    assert posted.status_code == 200, posted.text
    assert "portico_session" in posted.cookies


START = (
    """mutation { startAuthenticatorEnrollment { errors { code } provisioningUri qrCodeSvg } }"""
)
CONFIRM = """mutation($code: String!) {
  confirmAuthenticatorEnrollment(code: $code) { errors { code } recoveryCodes } }"""
REMOVE = """mutation($code: String!) {
  removeAuthenticator(code: $code) { errors { code } recoveryCodes } }"""


def totp_of(uri: str) -> pyotp.TOTP:
    return pyotp.parse_uri(uri)  # type: ignore[return-value]


async def enrolled(api: Api) -> tuple[pyotp.TOTP, list[str]]:
    started = await api.ok(START)
    assert started["provisioningUri"].startswith("otpauth://totp/")
    assert started["qrCodeSvg"].startswith("<svg") and "http" not in started["qrCodeSvg"]
    totp = totp_of(started["provisioningUri"])
    confirmed = await api.ok(CONFIRM, {"code": totp.now()})
    return totp, confirmed["recoveryCodes"]


def later(totp: pyotp.TOTP, steps: int = 1) -> str:
    """The code of a coming step (a step already used is refused: no replay)."""
    return totp.at(now() + timedelta(seconds=totp.interval * steps))


async def test_authenticator_enrollment_sign_in_and_removal(acme, anon):
    totp, codes = await enrolled(acme.api)
    assert len(codes) == 10 and len(set(codes)) == 10
    # At rest: the secret encrypted, recovery codes hashed.
    row = await Authenticator.get(staff_member_id=acme.owner.pk)
    assert totp.secret not in row.secret_encrypted
    stored = await RecoveryCode.filter(authenticator_id=row.pk).values_list("code_hash", flat=True)
    assert not set(codes) & set(stored)
    # Enrolled: every sign-in asks for it, the firm asking nothing; no code is mailed.
    asked = (await staff_sign_in(anon, "acme", "owner@acme.example"))["secondFactor"]
    assert asked["methods"] == ["AUTHENTICATOR", "RECOVERY_CODE"]
    assert error(await verify(anon, asked["id"], totp.now())) == "SECOND_FACTOR_INVALID"  # used
    code = later(totp)
    assert (await verify(anon, asked["id"], code))["token"]
    again = (await staff_sign_in(anon, "acme", "owner@acme.example"))["secondFactor"]
    assert error(await verify(anon, again["id"], code)) == "SECOND_FACTOR_INVALID"  # replay
    # A recovery code works once, with or without its dashes.
    assert (await verify(anon, again["id"], codes[0].replace("-", "").upper()))["token"]
    third = (await staff_sign_in(anon, "acme", "owner@acme.example"))["secondFactor"]
    assert error(await verify(anon, third["id"], codes[0])) == "SECOND_FACTOR_INVALID"
    # A second set-up is refused; removal needs a fresh code.
    second = (await acme.api.data(START))["startAuthenticatorEnrollment"]
    assert error(second) == "AUTHENTICATOR_ENROLLED"
    assert error((await acme.api.data(REMOVE, {"code": "123"}))["removeAuthenticator"]) == (
        "SECOND_FACTOR_INVALID"
    )
    removed = await acme.api.data(REMOVE, {"code": codes[1]})
    assert removed["removeAuthenticator"] == {"errors": [], "recoveryCodes": []}
    assert await RecoveryCode.all().count() == 0
    assert (await staff_sign_in(anon, "acme", "owner@acme.example"))["token"]


async def test_enrollment_bad_input_and_viewers(acme, anon, client, settings, smtp):
    # Nobody signed in: UNAUTHENTICATED.
    body = await anon.post(START)
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    # Confirming with nothing started, or with a wrong code.
    no_start = (await acme.api.data(CONFIRM, {"code": "123456"}))["confirmAuthenticatorEnrollment"]
    assert error(no_start) == "SECOND_FACTOR_INVALID"
    started = await acme.api.ok(START)
    # (Four wrong codes: a fifth would lock the owner's sign-in, as the test below shows.)
    for bad in ("", "abcdef", "9" * 5000):
        answer = (await acme.api.data(CONFIRM, {"code": bad}))["confirmAuthenticatorEnrollment"]
        assert error(answer) == "SECOND_FACTOR_INVALID" and answer["recoveryCodes"] == []
    # Not confirmed: sign-in does not ask for it yet.
    assert (await staff_sign_in(anon, "acme", "owner@acme.example"))["token"]
    # Another person's secret does not confirm mine.
    emma = await api_for(client, await add_staff(acme, "emma@acme.example"))
    theirs = totp_of(started["provisioningUri"])
    await emma.ok(START)
    mine = (await emma.data(CONFIRM, {"code": theirs.now()}))["confirmAuthenticatorEnrollment"]
    assert error(mine) == "SECOND_FACTOR_INVALID"
    # Removing what is not there.
    gone = (await emma.data(REMOVE, {"code": "123456"}))["removeAuthenticator"]
    assert error(gone) == "NOT_FOUND"


async def test_a_client_with_an_authenticator_accepting_an_invitation_is_asked_for_it(
    acme, client, settings, smtp
):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)
    [invitation] = await deliver(settings, smtp)
    accepted = await accept(Api(client), token_in(invitation))
    me = Api(client, accepted["token"])
    totp, _ = await enrolled(me)
    # A second account's invitation: the link alone no longer signs her in.
    gmbh = await new_account(acme.api, "Miller GmbH", "COMPANY")
    await acme.api.ok(LINK, {"a": gmbh["id"], "c": anna.contact_id})
    status = await acme.api.data(STATUS, {"id": gmbh["id"]})
    await login_on(acme.api, status["account"]["emails"][0]["id"])
    second = (await deliver(settings, smtp))[-1]
    query = """mutation($token: String!) { acceptInvitation(token: $token) {
      errors { code } token secondFactor { id methods } } }"""
    answer = (await Api(client).data(query, {"token": token_in(second)}))["acceptInvitation"]
    assert answer["errors"] == [] and answer["token"] is None
    assert answer["secondFactor"]["methods"] == ["AUTHENTICATOR", "RECOVERY_CODE"]
    done = await verify(Api(client), answer["secondFactor"]["id"], later(totp))
    assert done["currentAccount"] == {"name": "Miller GmbH"}


async def test_a_wrong_code_and_an_unknown_challenge_take_the_same_statements(
    acme, anon, settings, smtp
):
    """The timing must not tell whether a challenge exists: both paths send the same SQL."""
    await require(acme.api, staffSecondFactor="EMAIL_CODE")
    challenge = (await staff_sign_in(anon, "acme", "owner@acme.example"))["secondFactor"]
    code = code_in((await deliver(settings, smtp))[0])
    wrong = "000000" if code != "000000" else "111111"
    shapes = []
    for challenge_id in (challenge["id"], "unknown-" + challenge["id"][8:]):
        with count_sql() as statements:
            answer = await verify(anon, challenge_id, wrong)
        assert error(answer) == "SECOND_FACTOR_INVALID"
        shapes.append([s.split()[0] for s in statements])
    assert shapes[0] == shapes[1], shapes


async def test_clients_may_not_read_the_firms_requirements(acme, client):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    me = Api(client, await portal_token(acme, anna.account_id))
    assert (await me.data("{ firm { name } }"))["firm"]["name"] == "Acme LLP"
    for field in ("clientSecondFactor", "staffSecondFactor", "secondFactorFrom"):
        body = await me.post(f"{{ firm {{ {field} }} }}")
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", field
    # Nor change them, nor a member's.
    body = await me.post(
        "mutation { updateFirmSettings(input: {clientSecondFactor: NONE}) { errors { code } } }"
    )
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_wrong_codes_to_remove_the_authenticator_lock_it(acme):
    """A stolen session cannot try codes one request after another."""
    _, codes = await enrolled(acme.api)
    answers = []
    for attempt in range(6):
        payload = (await acme.api.data(REMOVE, {"code": f"00000{attempt}"}))["removeAuthenticator"]
        answers.append(error(payload))
    assert answers[:5] == ["SECOND_FACTOR_INVALID"] * 5
    assert answers[5] == "TOO_MANY_ATTEMPTS"
    locked = (await acme.api.data(REMOVE, {"code": codes[0]}))["removeAuthenticator"]
    assert error(locked) == "TOO_MANY_ATTEMPTS"
    assert await Authenticator.filter(confirmed_at__isnull=False).count() == 1


async def test_two_right_answers_at_once_sign_in_once(acme, anon, settings, smtp):
    await require(acme.api, staffSecondFactor="EMAIL_CODE")
    challenge = (await staff_sign_in(anon, "acme", "owner@acme.example"))["secondFactor"]
    code = code_in((await deliver(settings, smtp))[0])
    answers = await asyncio.gather(*(verify(anon, challenge["id"], code) for _ in range(4)))
    assert sorted(bool(a["token"]) for a in answers) == [False, False, False, True]
    assert {error(a) for a in answers if not a["token"]} == {"SECOND_FACTOR_INVALID"}


async def test_many_open_challenges_share_the_sign_ins_few_guesses(acme, anon, settings, smtp):
    """Opening a challenge per sign-in before guessing gives no more guesses: once wrong codes
    lock the person's sign-in throttle, no challenge of theirs checks a code, the right one
    included."""
    await require(acme.api, staffSecondFactor="EMAIL_CODE")
    challenges = []
    for _ in range(8):
        answer = await staff_sign_in(anon, "acme", "owner@acme.example")
        if answer["secondFactor"] is None:
            break
        challenges.append(answer["secondFactor"]["id"])
    codes = [code_in(m) for m in await deliver(settings, smtp)]
    assert len(challenges) >= 2 and len(codes) == len(challenges)
    checked = 0
    for challenge, code in zip(challenges, codes, strict=True):
        wrong = next(c for c in ("000000", "111111") if c != code)
        for _ in range(5):
            if error(await verify(anon, challenge, wrong)) == "SECOND_FACTOR_INVALID":
                checked += 1
    assert checked <= 6  # the sign-in throttle's limit, not 5 per challenge
    for challenge, code in zip(challenges, codes, strict=True):
        assert error(await verify(anon, challenge, code)) == "TOO_MANY_ATTEMPTS"
