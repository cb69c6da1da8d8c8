"""Staff sign-in, sessions (Bearer and cookie), sign-out, throttling."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx

from models import Session, SignInThrottle
from portico.app import create_app
from portico.settings import Settings
from resolvers.context import SESSION_COOKIE
from services.firm import address_throttle, throttle_rows
from services.shared import sessions
from tests.support.api import PASSWORD, Api, add_staff

SIGN_IN = """
mutation($firm: String!, $email: String!, $password: String!) {
  staffSignIn(firm: $firm, email: $email, password: $password) {
    errors { code field message }
    token
    viewer { __typename ... on StaffMember { email role } }
    accounts { id }
    currentAccount { id }
  }
}
"""
CLIENT_SIGN_IN = """
mutation($firm: String!, $email: String!, $password: String!) {
  signIn(firm: $firm, email: $email, password: $password) { errors { code field message } token }
}
"""
VIEWER = "{ viewer { ... on StaffMember { email } } firm { slug } }"


async def sign_in(api: Api, firm: str, email: str, password: str) -> dict:
    data = await api.data(SIGN_IN, {"firm": firm, "email": email, "password": password})
    return data["staffSignIn"]


async def test_sign_in_returns_token_and_sets_cookie(acme, client):
    response = await client.post(
        "/graphql",
        json={
            "query": SIGN_IN,
            "variables": {"firm": "ACME", "email": "Owner@Acme.example", "password": PASSWORD},
        },
    )
    payload = response.json()["data"]["staffSignIn"]
    assert payload["errors"] == []
    assert payload["viewer"] == {
        "__typename": "StaffMember",
        "email": "owner@acme.example",
        "role": "OWNER",
    }
    assert payload["accounts"] == [] and payload["currentAccount"] is None
    token = payload["token"]
    assert len(token) >= 43  # 32 random bytes, base64url

    cookie = response.headers["set-cookie"]
    assert f"{SESSION_COOKIE}={token}" in cookie
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie

    # Only the hash of the token is stored.
    stored = await Session.get(token_hash=sessions.hash_token(token))
    assert token not in stored.token_hash

    # The cookie alone authenticates (browsers), as does the Bearer header (scripts).
    client.cookies.set(SESSION_COOKIE, token)
    by_cookie = await client.post("/graphql", json={"query": VIEWER})
    client.cookies.clear()
    assert by_cookie.json()["data"]["viewer"] == {"email": "owner@acme.example"}
    assert (await Api(client, token).data(VIEWER))["firm"] == {"slug": "acme"}


async def test_wrong_firm_email_or_password_give_one_answer(acme, globex, anon):
    attempts = [
        ("nosuchfirm", "owner@acme.example", PASSWORD),
        ("acme", "nobody@acme.example", PASSWORD),
        ("acme", "owner@acme.example", "wrong-password-1"),
        ("globex", "owner@acme.example", PASSWORD),  # right person, other firm
    ]
    answers = []
    for firm, email, password in attempts:
        payload = await sign_in(anon, firm, email, password)
        assert payload["token"] is None and payload["viewer"] is None
        answers.append(payload["errors"])
    assert all(a == answers[0] for a in answers)
    assert answers[0][0]["code"] == "INVALID_CREDENTIALS"


async def test_failures_take_about_as_long_as_a_wrong_password(acme, anon):
    """An unknown firm or email still spends one argon2 verification (no timing oracle)."""

    async def fastest(firm: str, email: str) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            await sign_in(anon, firm, email, "wrong-password-1")
            times.append(time.perf_counter() - started)
        return min(times)

    wrong_password = await fastest("acme", "owner@acme.example")
    # A fresh email each time for the unknown cases would be throttle-free too.
    for firm, email in [("nosuch", "x@y.example"), ("acme", "ghost@acme.example")]:
        ratio = await fastest(firm, email) / wrong_password
        assert ratio > 0.5, (firm, email, ratio)
    await SignInThrottle.all().delete()


async def test_repeated_failures_are_throttled_even_with_the_right_password(acme, anon, settings):
    for _ in range(settings.signin_max_failures):
        payload = await sign_in(anon, "acme", "owner@acme.example", "wrong-password-1")
        assert payload["errors"][0]["code"] == "INVALID_CREDENTIALS"
    payload = await sign_in(anon, "acme", "owner@acme.example", PASSWORD)
    assert payload["errors"][0]["code"] == "TOO_MANY_ATTEMPTS"
    assert payload["token"] is None

    # Unknown accounts are throttled alike, so throttling reveals nothing.
    for _ in range(settings.signin_max_failures):
        await sign_in(anon, "acme", "ghost@acme.example", "wrong-password-1")
    payload = await sign_in(anon, "acme", "ghost@acme.example", "wrong-password-1")
    assert payload["errors"][0]["code"] == "TOO_MANY_ATTEMPTS"

    # Other members are unaffected; once the lock has passed the owner gets in.
    await add_staff(acme, "erin@acme.example")
    assert (await sign_in(anon, "acme", "erin@acme.example", PASSWORD))["token"]
    await SignInThrottle.all().update(locked_until=sessions.now() - timedelta(seconds=1))
    assert (await sign_in(anon, "acme", "owner@acme.example", PASSWORD))["token"]


async def test_sign_out_revokes_the_session(acme, client):
    token = (await sign_in(Api(client), "acme", "owner@acme.example", PASSWORD))["token"]
    api = Api(client, token)
    assert (await api.data(VIEWER))["viewer"] is not None
    response = await client.post(
        "/graphql",
        json={"query": "mutation { signOut }"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.json()["data"] == {"signOut": True}
    assert f'{SESSION_COOKIE}=""' in response.headers["set-cookie"]
    assert (await api.data(VIEWER)) == {"viewer": None, "firm": None}
    assert (await Api(client).data("mutation { signOut }")) == {"signOut": False}


async def test_expired_revoked_and_garbage_tokens_are_anonymous(acme, client):
    token, session = await sessions.start_staff_session(acme.owner, timedelta(hours=1))
    await Session.filter(pk=session.pk).update(expires_at=sessions.now() - timedelta(seconds=1))
    assert (await Api(client, token).data(VIEWER))["viewer"] is None
    for garbage in ["x", "a" * 5000, "Bearer", "%00"]:
        body = await Api(client, garbage).post("{ accounts { totalCount } }")
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_anonymous_reads(anon):
    assert await anon.data("{ viewer { __typename } firm { name } }") == {
        "viewer": None,
        "firm": None,
    }
    for query in [
        "{ accounts { totalCount } }",
        "{ contacts { totalCount } }",
        "{ staffMembers { id } }",
    ]:
        body = await anon.post(query)
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    body = await anon.post(
        'mutation { createAccount(input: {name: "X", type: FAMILY}) { errors { code } } }'
    )
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_sign_in_rejects_members_without_password_or_inactive(acme, anon):
    erin = await add_staff(acme, "erin@acme.example")
    erin.password_hash = None
    await erin.save()
    assert (await sign_in(anon, "acme", "erin@acme.example", ""))["errors"][0]["code"] == (
        "INVALID_CREDENTIALS"
    )
    ivan = await add_staff(acme, "ivan@acme.example", active=False)
    payload = await sign_in(anon, "acme", ivan.email, PASSWORD)
    assert payload["errors"][0]["code"] == "INVALID_CREDENTIALS"


async def test_parallel_guesses_cannot_outrun_the_throttle(acme, anon, settings):
    attempts = 20
    payloads = await asyncio.gather(
        *(sign_in(anon, "acme", "owner@acme.example", f"guess-{i}-wrong") for i in range(attempts))
    )
    codes = [p["errors"][0]["code"] for p in payloads]
    assert codes.count("INVALID_CREDENTIALS") <= settings.signin_max_failures + 1, codes
    assert codes.count("TOO_MANY_ATTEMPTS") >= attempts - settings.signin_max_failures - 1
    assert all(p["token"] is None for p in payloads)


@contextlib.asynccontextmanager
async def from_address(settings: Settings, host: str) -> AsyncIterator[Api]:
    """An anonymous client of the app whose requests come from `host`."""
    transport = httpx.ASGITransport(app=create_app(settings, manage_db=False), client=(host, 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://portico.test") as http:
        yield Api(http)


async def client_sign_in(api: Api, firm: str, email: str, password: str) -> dict:
    data = await api.data(CLIENT_SIGN_IN, {"firm": firm, "email": email, "password": password})
    return data["signIn"]


async def test_one_address_has_a_budget_of_failures_over_every_firm_and_email(
    acme, globex, settings
):
    settings.signin_max_failures_per_address = 6  # the app shares this settings object
    async with from_address(settings, "198.51.100.7") as guesser:
        # Staff and client sign-ins, any firm, any email: no account reaches its own limit.
        for firm, email in [("acme", "a@x.example"), ("globex", "b@x.example")]:
            for password in ["wrong-password-1", "wrong-password-2"]:
                payload = await sign_in(guesser, firm, email, password)
                assert payload["errors"][0]["code"] == "INVALID_CREDENTIALS"
        for firm, email in [("nosuch", "c@x.example"), ("acme", "owner@acme.example")]:
            payload = await client_sign_in(guesser, firm, email, "wrong-password-1")
            assert payload["errors"][0]["code"] == "INVALID_CREDENTIALS"
        # The budget is spent: the address is refused, the right password and strangers alike.
        refusals = [
            await sign_in(guesser, "globex", "owner@globex.example", PASSWORD),
            await sign_in(guesser, "acme", "nobody@acme.example", "wrong-password-1"),
            await client_sign_in(guesser, "acme", "anna@miller.example", "wrong-password-1"),
        ]
        assert {(p["errors"][0]["code"], p["token"]) for p in refusals} == {
            ("TOO_MANY_ATTEMPTS", None)
        }
        assert refusals[0]["errors"] == refusals[1]["errors"]  # known or not, one answer
        # Another address is not concerned.
        async with from_address(settings, "203.0.113.9") as colleague:
            assert (await sign_in(colleague, "globex", "owner@globex.example", PASSWORD))["token"]
        # Once the window has passed the address may try again.
        await SignInThrottle.all().update(locked_until=sessions.now() - timedelta(seconds=1))
        assert (await sign_in(guesser, "globex", "owner@globex.example", PASSWORD))["token"]


async def test_a_success_neither_spends_nor_resets_the_address_budget(acme, settings):
    settings.signin_max_failures_per_address = 4
    async with from_address(settings, "198.51.100.7") as office:
        for i in range(3):  # someone behind the same address guesses
            await sign_in(office, "acme", f"guess{i}@x.example", "wrong-password-1")
        for _ in range(3):  # a colleague signs in, several times
            assert (await sign_in(office, "acme", "owner@acme.example", PASSWORD))["token"]
        payload = await sign_in(office, "acme", "guess@x.example", "wrong-password-1")
        assert payload["errors"][0]["code"] == "INVALID_CREDENTIALS"  # the fourth failure
        payload = await sign_in(office, "acme", "owner@acme.example", PASSWORD)
        assert payload["errors"][0]["code"] == "TOO_MANY_ATTEMPTS"


async def test_the_address_budget_holds_against_parallel_guesses(acme, settings):
    settings.signin_max_failures_per_address = 5
    async with from_address(settings, "198.51.100.7") as guesser:
        payloads = await asyncio.gather(
            *(
                sign_in(guesser, "acme", f"guess{i}@x.example", "wrong-password-1")
                for i in range(15)
            )
        )
    # Each attempt is counted before its password is checked: at most the budget get through.
    codes = [p["errors"][0]["code"] for p in payloads]
    assert 1 <= codes.count("INVALID_CREDENTIALS") <= 5, codes
    assert codes.count("TOO_MANY_ATTEMPTS") >= 10, codes


async def test_an_ipv6_client_has_one_budget_per_64_and_a_mapped_ipv4_its_ipv4s(acme, settings):
    settings.signin_max_failures_per_address = 3
    for host in ["2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:0:1:ffff:ffff:ffff:fffe"]:
        async with from_address(settings, host) as guesser:  # each from another address
            payload = await sign_in(guesser, "acme", "nobody@acme.example", "wrong-password-1")
            assert payload["errors"][0]["code"] == "INVALID_CREDENTIALS"
    # The /64 has spent its budget, written in any form; the next /64 has its own.
    async with from_address(settings, "2001:DB8:0:1:abcd::9") as neighbour:
        payload = await sign_in(neighbour, "acme", "owner@acme.example", PASSWORD)
        assert payload["errors"][0]["code"] == "TOO_MANY_ATTEMPTS"
    async with from_address(settings, "2001:db8:0:2::1") as elsewhere:
        assert (await sign_in(elsewhere, "acme", "owner@acme.example", PASSWORD))["token"]

    # An IPv4 client seen through an IPv6 socket is the same IPv4 client.
    for host in ["198.51.100.7", "::ffff:198.51.100.7", "198.51.100.7"]:
        async with from_address(settings, host) as guesser:
            payload = await sign_in(guesser, "acme", "noone@acme.example", "wrong-password-2")
            assert payload["errors"][0]["code"] == "INVALID_CREDENTIALS"
    async with from_address(settings, "::ffff:198.51.100.7") as mapped:
        payload = await sign_in(mapped, "acme", "owner@acme.example", PASSWORD)
        assert payload["errors"][0]["code"] == "TOO_MANY_ATTEMPTS"


def address_in_slice_of(key: str) -> str:
    """An address whose budget row lands in the same pruning slice as `key`."""
    digits = throttle_rows.SLICE_DIGITS
    for n in range(2**16):
        address = f"198.18.{n // 256}.{n % 256}"
        if address_throttle.key_for(address)[:digits] == key[:digits]:
            return address
    raise AssertionError("no address in that slice")


async def add_throttle_row(
    key: str, locked_until: datetime | None, updated_at: datetime
) -> SignInThrottle:
    row = await SignInThrottle.create(key=key, failures=3, locked_until=locked_until)
    await SignInThrottle.filter(key=key).update(updated_at=updated_at)  # create sets it to now
    return row


async def test_a_new_throttle_row_prunes_the_stale_rows_of_its_slice(acme, settings):
    """Each new address or guessed email leaves a row: a spray must not grow the table forever."""
    now = sessions.now()
    window = timedelta(seconds=settings.signin_lockout_seconds)
    long_ago, lately = now - window - timedelta(seconds=5), now - timedelta(seconds=60)
    trigger = "198.18.0.1"
    prefix = address_throttle.key_for(trigger)[: throttle_rows.SLICE_DIGITS]
    rows = {
        "window or lock ended a window ago": (long_ago, long_ago),
        "no lock, untouched for a window": (None, long_ago),
        "lock ended lately": (lately, long_ago),  # its count still sets the next lock
        "locked": (now + window, long_ago),
        "no lock, touched lately": (None, lately),
    }
    keys = {}
    for n, (name, (locked_until, updated_at)) in enumerate(rows.items()):
        keys[name] = prefix + f"{n:x}".rjust(62, "0")
        await add_throttle_row(keys[name], locked_until, updated_at)
    other_slice = ("0" if prefix[0] != "0" else "1") + "0" * 63
    await add_throttle_row(other_slice, long_ago, long_ago)

    async with from_address(settings, trigger) as stranger:
        payload = await sign_in(stranger, "acme", "nobody@acme.example", "wrong-password-1")
        assert payload["errors"][0]["code"] == "INVALID_CREDENTIALS"

    left = set(await SignInThrottle.all().values_list("key", flat=True))
    assert {name for name, key in keys.items() if key in left} == {
        "lock ended lately",
        "locked",
        "no lock, touched lately",
    }
    # One slice per new row: the DELETE reads a bounded share of the table.
    assert other_slice in left


async def test_a_count_still_in_use_is_not_pruned(acme, settings):
    async with from_address(settings, "198.51.100.7") as guesser:
        for _ in range(settings.signin_max_failures - 2):
            await sign_in(guesser, "acme", "owner@acme.example", "wrong-password-1")
        address_key = address_throttle.key_for("198.51.100.7")
        [email_key] = await SignInThrottle.exclude(key=address_key).values_list("key", flat=True)
        # Long ago; then one more failure: the row is in use again.
        long_ago = sessions.now() - timedelta(seconds=settings.signin_lockout_seconds + 5)
        await SignInThrottle.all().update(updated_at=long_ago)
        await sign_in(guesser, "acme", "owner@acme.example", "wrong-password-2")
        async with from_address(settings, address_in_slice_of(email_key)) as other:
            await sign_in(other, "acme", "nobody@acme.example", "wrong-password-1")
        # Still counted: the next failure reaches the limit and locks the account.
        payload = await sign_in(guesser, "acme", "owner@acme.example", "wrong-password-3")
        assert payload["errors"][0]["code"] == "INVALID_CREDENTIALS"
        payload = await sign_in(guesser, "acme", "owner@acme.example", PASSWORD)
        assert (payload["token"], [e["code"] for e in payload["errors"]]) == (
            None,
            ["TOO_MANY_ATTEMPTS"],
        )
