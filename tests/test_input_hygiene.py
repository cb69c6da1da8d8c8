"""Hostile input (issue 10): control characters refused before anything runs, ids beyond the
32-bit keys simply not found, over-long sign-in input answered like a wrong password, and no
secret in any log."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from models import Account, Contact, SignInThrottle, StaffMember
from schema import ids
from services.firm import signin
from services.shared import passwords
from services.shared.pubsub import firm_channel
from tests.support.api import PASSWORD, Api, add_staff, eventually
from tests.support.crm_ops import CREATE_ACCOUNT, CREATE_CONTACT, UPDATE_ACCOUNT, new_account
from tests.support.websocket import (
    LEGACY_WS,
    TRANSPORT_WS,
    refusal,
    serving,
    socket,
)

STAFF_SIGN_IN = """mutation($firm: String!, $email: String!, $password: String!) {
  staffSignIn(firm: $firm, email: $email, password: $password) { errors { code } token } }"""
CLIENT_SIGN_IN = """mutation($firm: String!, $email: String!, $password: String!) {
  signIn(firm: $firm, email: $email, password: $password) { errors { code } token } }"""
ADD_STAFF = """mutation($input: StaffMemberInput!) {
  addStaffMember(input: $input) { errors { code } } }"""
SEARCH_ACCOUNTS = "query($s: String) { accounts(search: $s) { totalCount } }"
SEARCH_CONTACTS = "query($s: String) { contacts(search: $s) { totalCount } }"
SYNCED = "subscription($account: ID) { messageSynced(accountId: $account) { id } }"

NUL = "\x00"
# C0 other than tab, LF and CR; DEL; C1; a lone surrogate (JSON "\ud800").
REFUSED = ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x80", "\x9f", "\ud800"]
ALLOWED = ["\t", "\n", "\r\n", "é", "\u00a0", "\u20ac", "\U0001f600"]


async def post_raw(
    http: httpx.AsyncClient, query: str, variables: dict[str, Any], token: str | None = None
) -> dict[str, Any]:
    """POSTs the body as ASCII JSON, so a lone surrogate travels as the escape `\\ud800`
    (as a browser's JSON.stringify sends it) instead of failing to encode here."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps({"query": query, "variables": variables}).encode("ascii")
    response = await http.post("/graphql", content=body, headers=headers)
    http.cookies.clear()
    if response.status_code == 400:  # the request parser refuses some JSON outright
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
        return {"data": None, "errors": [], "bad_request": True}
    assert response.status_code == 200, response.text
    return response.json()


def refused(body: dict[str, Any], names: str) -> None:
    """A top-level BAD_USER_INPUT naming the variable or argument, and no data."""
    assert body.get("data") is None, body
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert names in error["message"] and "U+" in error["message"], error


# Control characters -------------------------------------------------------------------------


async def test_control_characters_in_variables_are_refused_before_anything_runs(acme, client):
    account = await new_account(acme.api, "Miller Family")
    staff_cases = [
        (CREATE_ACCOUNT, {"input": {"name": f"A{NUL}", "type": "FAMILY"}}, "$input.name"),
        (
            CREATE_CONTACT,
            {"input": {"firstName": f"An{NUL}na", "lastName": "Miller"}},
            "$input.firstName",
        ),
        (
            CREATE_CONTACT,
            {
                "input": {
                    "firstName": "Anna",
                    "lastName": "Miller",
                    "emails": [{"address": "a@miller.example", "label": f"Home{NUL}"}],
                }
            },
            "$input.emails[0].label",
        ),
        (
            CREATE_CONTACT,
            {
                "input": {
                    "firstName": "Anna",
                    "lastName": "Miller",
                    "accountIds": [account["id"], f"{NUL}"],
                }
            },
            "$input.accountIds[1]",
        ),
        (ADD_STAFF, {"input": {"email": "e@acme.example", "name": f"E{NUL}"}}, "$input.name"),
        (SEARCH_ACCOUNTS, {"s": f"mil{NUL}"}, "$s"),
        (SEARCH_CONTACTS, {"s": f"{NUL}"}, "$s"),
    ]
    for query, variables, names in staff_cases:
        refused(await post_raw(client, query, variables, acme.api.token), names)
    anonymous_cases = [
        (STAFF_SIGN_IN, {"firm": f"acme{NUL}", "email": "owner@acme.example"}, "$firm"),
        (CLIENT_SIGN_IN, {"firm": "acme", "email": f"a{NUL}@b.example"}, "$email"),
    ]
    for query, variables, names in anonymous_cases:
        refused(await post_raw(client, query, {**variables, "password": "x"}, None), names)
    # Nothing was written, and a refused sign-in is not even counted.
    assert await Account.all().count() == 1
    assert await Contact.all().count() == 0
    assert await StaffMember.all().count() == 1
    assert await SignInThrottle.all().count() == 0


async def test_every_control_character_is_refused_and_ordinary_text_is_not(acme, client):
    for character in REFUSED:
        body = await post_raw(client, SEARCH_ACCOUNTS, {"s": f"a{character}b"}, acme.api.token)
        if character == "\ud800" and body.get("bad_request"):
            continue  # the JSON parser refused it as malformed already: refused either way
        refused(body, "$s")
        assert f"U+{ord(character):04X}" in body["errors"][0]["message"]
    for character in ALLOWED:
        body = await post_raw(client, SEARCH_ACCOUNTS, {"s": f"a{character}b"}, acme.api.token)
        assert body == {"data": {"accounts": {"totalCount": 0}}}, character


async def test_string_literals_in_the_document_are_checked_too(acme, client):
    literal = (
        'mutation { createAccount(input: {name: "A\\u0000", type: FAMILY}) { account { id } } }'
    )
    refused(await post_raw(client, literal, {}, acme.api.token), "input.name")
    in_a_list = 'query { accounts(search: "x") { totalCount } node(id: "\\u0085") { id } }'
    refused(await post_raw(client, in_a_list, {}, acme.api.token), "'id'")
    default = 'query($s: String = "\\u001b[31m") { accounts(search: $s) { totalCount } }'
    refused(await post_raw(client, default, {}, acme.api.token), "$s")
    # A document's other operations are checked as well: it is one document.
    two = 'query A { viewer { __typename } } query B { accounts(search: "\\u0000") { edges { cursor } } }'
    response = await client.post("/graphql", json={"query": two, "operationName": "A"})
    refused(response.json(), "search")
    assert await Account.all().count() == 0


async def test_subscriptions_are_refused_alike_on_both_websocket_protocols(acme, settings):
    """(A WebSocket carries subscriptions only.)"""
    cases = [
        (SYNCED, {"account": NUL}, "$account"),
        (SYNCED, {"account": "QWNjb3VudDox\x7f"}, "$account"),
        ('subscription { messageSynced(accountId: "\\u0000") { id } }', {}, "accountId"),
    ]
    async with serving(settings) as served:
        for protocol in (TRANSPORT_WS, LEGACY_WS):
            async with socket(served.url, acme.api.token, protocol) as sock:
                for document, variables, names in cases:
                    error = await refusal(sock, variables, document)
                    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
                    assert names in error["message"], error
                if protocol == TRANSPORT_WS:
                    await sock.nothing_pending()
        assert served.app.state.bus.subscriber_count(firm_channel(acme.owner.firm_id)) == 0


# Ids beyond the 32-bit primary keys ---------------------------------------------------------

BEYOND = [2**31, 2**32 + 1, 2**63 - 1]


async def test_ids_beyond_the_primary_keys_are_simply_not_found(acme, client):
    account = await new_account(acme.api, "Miller Family")
    for pk in BEYOND:
        big = ids.encode("Account", pk)
        assert await acme.api.data("query($id: ID!) { node(id: $id) { id } }", {"id": big}) == {
            "node": None
        }
        found = await acme.api.data("query($id: ID!) { account(id: $id) { id } }", {"id": big})
        assert found == {"account": None}
        updated = await acme.api.data(UPDATE_ACCOUNT, {"id": big, "input": {"name": "X"}})
        assert [e["code"] for e in updated["updateAccount"]["errors"]] == ["NOT_FOUND"]
        contact = {"firstName": "Anna", "lastName": "Miller", "accountIds": [account["id"], big]}
        created = await acme.api.data(CREATE_CONTACT, {"input": contact})
        assert [e["code"] for e in created["createContact"]["errors"]] == ["NOT_FOUND"]
        download = await client.get(
            f"/documents/{ids.encode('Document', pk)}",
            headers={"Authorization": f"Bearer {acme.api.token}"},
        )
        assert download.status_code == 404
    assert await Contact.all().count() == 0
    # The largest key a column holds is still an ordinary id.
    largest = ids.encode("Account", 2**31 - 1)
    assert await acme.api.data("query($id: ID!) { node(id: $id) { id } }", {"id": largest}) == {
        "node": None
    }


# Over-long sign-in input --------------------------------------------------------------------

LONG_FIRM = "a" * 65
LONG_EMAIL = "a" * 245 + "@acme.example"  # 258 characters


async def _sign_in(api: Api, mutation: str, firm: str, email: str, password: str) -> dict:
    data = await api.data(mutation, {"firm": firm, "email": email, "password": password})
    [payload] = data.values()
    return payload


@pytest.mark.parametrize("mutation", [STAFF_SIGN_IN, CLIENT_SIGN_IN], ids=["staff", "client"])
async def test_over_long_sign_in_input_is_a_wrong_password(acme, anon, settings, mutation):
    for firm, email in [(LONG_FIRM, "owner@acme.example"), ("acme", LONG_EMAIL)]:
        payload = await _sign_in(anon, mutation, firm, email, PASSWORD)
        assert payload == {"errors": [{"code": "INVALID_CREDENTIALS"}], "token": None}
    # The throttle still counts them.
    for _ in range(settings.signin_max_failures - 1):
        await _sign_in(anon, mutation, LONG_FIRM, "owner@acme.example", PASSWORD)
    payload = await _sign_in(anon, mutation, LONG_FIRM, "owner@acme.example", PASSWORD)
    assert payload["errors"] == [{"code": "TOO_MANY_ATTEMPTS"}]


@pytest.fixture
def argon2_verifications(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of each password argon2 verifies; the real verification still runs."""
    lengths: list[int] = []
    real = PasswordHasher.verify

    def counting(hasher: PasswordHasher, password_hash: str | bytes, password: str | bytes) -> bool:
        lengths.append(len(password))
        return real(hasher, password_hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting)
    return lengths


@pytest.mark.parametrize("mutation", [STAFF_SIGN_IN, CLIENT_SIGN_IN], ids=["staff", "client"])
async def test_over_long_sign_in_input_costs_one_argon2_verification(
    acme, anon, argon2_verifications, mutation
):
    """Work, not timing, proves it: an over-long firm or email is no fast "no such user"."""
    for firm, email in [(LONG_FIRM, "owner@acme.example"), ("acme", LONG_EMAIL)]:
        argon2_verifications.clear()
        payload = await _sign_in(anon, mutation, firm, email, "wrong-password-1")
        assert payload == {"errors": [{"code": "INVALID_CREDENTIALS"}], "token": None}
        assert argon2_verifications == [len("wrong-password-1")], (firm, email)
    # A megabyte of password costs one ordinary verification, not a megabyte of argon2.
    argon2_verifications.clear()
    payload = await _sign_in(anon, mutation, "acme", "owner@acme.example", "p" * 1_000_000)
    assert payload == {"errors": [{"code": "INVALID_CREDENTIALS"}], "token": None}
    [verified] = argon2_verifications
    assert 0 < verified <= passwords.MAX_PASSWORD_LENGTH


async def test_sign_ins_cancelled_by_their_client_keep_argon2_to_four_at_once(
    acme, settings, monkeypatch
):
    """A stranger cannot run more argon2 at once by cancelling sign-ins over a WebSocket:
    `complete` cancels the operation, not its verification's thread, so the slot stays taken
    until that thread ends (before, each cancellation freed a slot for one more)."""
    let_go = threading.Event()
    counting = threading.Lock()
    running, most = [0], [0]
    real = PasswordHasher.verify

    def held(hasher: PasswordHasher, password_hash: str | bytes, password: str | bytes) -> bool:
        with counting:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            let_go.wait(10)
            return real(hasher, password_hash, password)
        finally:
            with counting:
                running[0] -= 1

    def sign_in(who: str) -> dict[str, Any]:
        return {"firm": "acme", "email": f"{who}@acme.example", "password": "wrong-password-1"}

    monkeypatch.setattr(PasswordHasher, "verify", held)
    try:
        async with serving(settings) as live, socket(live.url) as sock:
            for n in range(4):
                await sock.subscribe(f"cancelled-{n}", STAFF_SIGN_IN, sign_in(f"nobody{n}"))
            await eventually(lambda: running[0] == 4, "four verifications hold the slots")
            for n in range(4):
                await sock.send({"id": f"cancelled-{n}", "type": "complete"})
            for n in range(4):
                await sock.subscribe(f"later-{n}", STAFF_SIGN_IN, sign_in(f"other{n}"))
            await asyncio.sleep(0.5)  # time enough for a freed slot to start one
            assert running[0] == 4
            let_go.set()
            answers = {}
            while len(answers) < 4:
                message = await sock.receive()
                if message["type"] == "next":
                    answers[message["id"]] = message["payload"]["data"]["staffSignIn"]
    finally:
        let_go.set()
    assert answers == {
        f"later-{n}": {"errors": [{"code": "INVALID_CREDENTIALS"}], "token": None} for n in range(4)
    }
    assert most[0] == 4


async def test_an_over_long_password_is_never_cut_to_fit(acme, anon):
    """A password longer than any that can be set is wrong, even when it starts with the
    right one (no truncation before argon2)."""
    longest = "".join(chr(ord("a") + i % 26) for i in range(1024))
    member = await add_staff(acme, "erin@acme.example")
    member.password_hash = PasswordHasher().hash(longest)
    await member.save()
    assert (await _sign_in(anon, STAFF_SIGN_IN, "acme", member.email, longest))["token"]
    payload = await _sign_in(anon, STAFF_SIGN_IN, "acme", member.email, longest + "-and-more")
    assert payload == {"errors": [{"code": "INVALID_CREDENTIALS"}], "token": None}


async def test_over_long_tokens_are_invalid_links(acme, anon):
    accept = """mutation($token: String!, $password: String) {
      acceptInvitation(token: $token, password: $password) { errors { code field } token } }"""
    payload = (await anon.data(accept, {"token": "t" * 100_000, "password": "p" * 5000}))[
        "acceptInvitation"
    ]
    assert payload == {
        "errors": [{"code": "INVITATION_INVALID", "field": ["token"]}],
        "token": None,
    }
    set_password = """mutation($token: String!, $password: String!) {
      setStaffPassword(token: $token, password: $password) { errors { code field } token } }"""
    payload = (await anon.data(set_password, {"token": "t" * 100_000, "password": "p" * 5000}))[
        "setStaffPassword"
    ]
    assert payload == {"errors": [{"code": "LINK_INVALID", "field": ["token"]}], "token": None}


# No secret in any log -----------------------------------------------------------------------

SECRET = "hunter2-literal-secret"
OTHER_SECRET = "swordfish-variable-secret"


@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Captures every logger at DEBUG (tortoise's db_client included), levels restored."""
    caplog.set_level(logging.DEBUG)  # the root logger: caplog puts its level back
    names = list(logging.root.manager.loggerDict)
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield caplog
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


async def test_a_failing_request_logs_its_traceback_but_no_secret(
    acme, anon, monkeypatch, every_log
):
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("sign-in broke on purpose")

    monkeypatch.setattr(signin, "staff_sign_in", broken)
    literal = (
        'mutation Steal { staffSignIn(firm: "acme", email: "owner@acme.example", '
        f'password: "{SECRET}") {{ token }} }}'
    )
    body = await anon.post(literal)
    assert body["errors"][0]["extensions"]["code"] == "INTERNAL"
    body = await anon.post(
        STAFF_SIGN_IN, {"firm": "acme", "email": "owner@acme.example", "password": OTHER_SECRET}
    )
    assert body["errors"][0]["extensions"]["code"] == "INTERNAL"
    log = every_log.text
    assert "sign-in broke on purpose" in log and "Traceback" in log  # the traceback is kept
    assert "Steal" in log and "staffSignIn" in log  # operation and field path say where
    assert SECRET not in log and OTHER_SECRET not in log


async def test_sign_in_and_password_setting_log_no_plain_password(acme, anon, every_log):
    """The access log and tortoise's db_client at DEBUG: a password hash may appear in an
    UPDATE's parameters, the password itself never."""
    assert (await _sign_in(anon, STAFF_SIGN_IN, "acme", "owner@acme.example", PASSWORD))["token"]
    await _sign_in(anon, STAFF_SIGN_IN, "acme", "owner@acme.example", OTHER_SECRET)
    await _sign_in(anon, CLIENT_SIGN_IN, "acme", "owner@acme.example", OTHER_SECRET)
    assert {"portico.access", "tortoise.db_client"} <= {r.name for r in every_log.records}
    assert PASSWORD not in every_log.text and OTHER_SECRET not in every_log.text
