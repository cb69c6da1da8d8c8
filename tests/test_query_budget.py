"""The work budget (fields after fragment expansion, the answer's estimated size) and one
sign-in per request: refused before validation and execution, over HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from portico.app import create_app
from portico.settings import Settings
from schema.budget import MAX_MERGE_PAIRS, PLAIN_LIST_SIZE
from schema.sign_ins import SIGN_IN_FIELDS
from tests.support import server
from tests.support.api import PASSWORD, Api, Firm
from tests.support.server import LiveServer
from tests.support.websocket import serving, socket

TOO_COMPLEX = "QUERY_TOO_COMPLEX"


def chain(levels: int, on: str = "Query", leaf: str = "__typename", prefix: str = "F") -> str:
    """Fragments each spreading the previous one twice: 2^levels fields once expanded."""
    fragments = [f"fragment {prefix}0 on {on} {{ {leaf} }}"] + [
        f"fragment {prefix}{i} on {on} {{ ...{prefix}{i - 1} ...{prefix}{i - 1} }}"
        for i in range(1, levels + 1)
    ]
    return " ".join(fragments)


def chain_query(levels: int) -> str:
    return f"{{ ...F{levels} }} {chain(levels)}"


def cycle(length: int) -> str:
    """Fragments spreading the next one twice, the last spreading the first: a cycle."""
    return "{ ...C0 } " + " ".join(
        f"fragment C{i} on Query {{ ...C{(i + 1) % length} ...C{(i + 1) % length} }}"
        for i in range(length)
    )


def codes(body: dict) -> list[str | None]:
    return [e.get("extensions", {}).get("code") for e in body["errors"]]


def refused(body: dict) -> str:
    """The one error's message, asserting it is the budget's and nothing ran."""
    assert body.get("data") is None, body
    assert codes(body) == [TOO_COMPLEX], body
    return body["errors"][0]["message"]


# Fields after expansion --------------------------------------------------------------------


async def test_fields_are_counted_after_expansion(anon, settings):
    assert settings.max_query_fields == 2000
    # F9 expands to 1534 selections (fields and spreads); F10 to 3070.
    assert (await anon.data(chain_query(9))) == {"__typename": "Query"}
    message = refused(await anon.post(chain_query(10)))
    assert "more than 2000 fields" in message


async def test_the_limits_are_settings(settings):
    tight = settings.model_copy(update={"max_query_fields": 100, "max_result_size": 50})
    app = create_app(tight, manage_db=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://p"
    ) as http:
        anon = Api(http)
        refused(await anon.post(chain_query(6)))  # 190 selections
        assert "errors" not in await anon.post(chain_query(4))  # 46
        assert "errors" not in await anon.post("{ __schema { types { name } } }")  # 21 values
        refused(await anon.post("{ __schema { types { fields { name } } } }"))  # 221


async def test_unknown_fragments_and_cycles_get_graphql_errors(anon):
    body = await anon.post("{ ...Missing }")
    assert body["errors"][0]["message"] == "Unknown fragment 'Missing'."
    body = await anon.post(cycle(2))
    assert body["errors"][0]["message"] == "Cannot spread fragment 'C0' within itself via 'C1'."


# The answer's estimated size ---------------------------------------------------------------

# Plain lists nested three deep under a page: about 2112 values per account.
NESTED = """query($n: Int) { accounts(first: $n) { edges { node {
  contacts { accounts { contacts { id } } } } } } }"""


async def test_page_sizes_multiply_down_plain_lists(acme, settings):
    assert settings.max_result_size == 100_000 and PLAIN_LIST_SIZE == 10
    assert "errors" not in await acme.api.post(NESTED)  # first's default, 20: ~42,000
    assert "errors" not in await acme.api.post(NESTED, {"n": 40})  # ~84,000
    message = refused(await acme.api.post(NESTED, {"n": 50}))  # ~105,000
    assert "over the limit of 100000" in message
    refused(await acme.api.post(NESTED.replace("$n: Int", "$n: Int = 50")))
    refused(await acme.api.post(NESTED.replace("($n: Int)", "").replace("$n", "50")))


async def test_nested_pages_multiply(acme):
    query = """query($outer: Int, $inner: Int) { accounts(first: $outer) { edges { node {
      messages(first: $inner) { edges { node { accounts { contacts { id } } } } } } } } }"""
    refused(await acme.api.post(query, {"outer": 100, "inner": 100}))
    assert "errors" not in await acme.api.post(query, {"outer": 10, "inner": 10})


async def test_a_page_too_large_is_the_fields_own_error(acme):
    """first is counted as at most max_page_size: the field itself says what is wrong."""
    body = await acme.api.post("{ accounts(first: 1000000) { totalCount } }")
    assert codes(body) == ["BAD_USER_INPUT"]


# What validation compares: copies of one field, fragments side by side -------------------
# graphql-core's field-merging rule compares every pair of same-named fields and of
# fragments in one selection set: 490 copies of one field took most of a second.


def copies(count: int, field: str = "viewer { __typename }") -> str:
    return "{ " + " ".join(field for _ in range(count)) + " }"


def side_by_side(count: int, on: str = "Query", body: str = "__typename") -> str:
    spreads = " ".join(f"...F{i}" for i in range(count))
    fragments = " ".join(f"fragment F{i} on {on} {{ {body} }}" for i in range(count))
    return f"{{ {spreads} }} {fragments}"


async def test_copies_of_one_field_are_refused_before_validation(anon):
    message = refused(await anon.post(copies(490)))
    assert "selects 'viewer' 490 times" in message
    assert f"over the limit of {MAX_MERGE_PAIRS}" in message


async def test_copies_just_under_the_limit_pass(anon):
    assert MAX_MERGE_PAIRS == 5000
    # Each pair of copies weighs two: the viewers and their __typename.
    assert await anon.data(copies(71)) == {"viewer": None}  # 4970 pairs
    refused(await anon.post(copies(72)))  # 5112


async def test_fragments_side_by_side_are_refused(anon):
    message = refused(await anon.post(side_by_side(150)))
    assert "150 distinct fragments" in message
    # Fifty, each with __typename as Apollo adds: about 2,500 pairs, fine.
    query = side_by_side(50).replace("{ ", "{ __typename ", 1)
    assert await anon.data(query) == {"__typename": "Query"}


async def test_copies_nested_in_copies_are_refused(anon):
    """12 copies of a field holding 10 copies each: 120 merge into one level."""
    inner = " ".join("name" for _ in range(10))
    message = refused(await anon.post(copies(12, f"__schema {{ queryType {{ {inner} }} }}")))
    assert "selects 'name' 120 times" in message


async def test_arguments_make_pairs_dearer(anon):
    """Comparing arguments is the dearest part: each value adds to a pair's weight."""
    field = '__type(name: "Query") { name }'
    assert "errors" not in await anon.post(copies(40, field))  # 780 pairs of weight 2
    refused(await anon.post(copies(60, field.replace('"Query"', '"Query", x: [1, 2, 3]'))))


async def test_every_operation_counts_not_only_the_one_run(anon):
    """graphql-core validates every operation in the document."""
    operations = " ".join(
        f"query Q{i} " + copies(20, "__schema { queryType { name } }") for i in range(10)
    )
    refused(await anon.post(f"query Run {{ __typename }} {operations}"))


async def test_unused_fragments_count_too(anon):
    """Fragments no operation spreads are validated too, and not counted by the field
    budget: nested ones that double per level are refused however unused."""
    nested = " ".join(
        f"fragment G{i} on Query {{ a: __schema {{ ...G{i - 1} }} b: __schema {{ ...G{i - 1} }} }}"
        for i in range(1, 20)
    )
    message = refused(
        await anon.post(f"{{ __typename }} fragment G0 on Query {{ __typename }} {nested}")
    )
    assert "unused ones included" in message
    refused(await anon.post("{ __typename } fragment U on Query " + copies(490)))


# One sign-in per request -------------------------------------------------------------------


def staff_sign_in(alias: str, password: str = "wrong-password") -> str:
    return (
        f'{alias}: staffSignIn(firm: "acme", email: "owner@acme.example", '
        f'password: "{password}") {{ token }}'
    )


async def test_aliased_sign_ins_are_refused_before_any_runs(acme, anon, settings):
    attempts = " ".join(staff_sign_in(f"a{i}") for i in range(settings.signin_max_failures + 1))
    body = await anon.post(f"mutation {{ {attempts} }}")
    assert body.get("data") is None
    assert codes(body) == ["BATCHED_SIGN_IN"]
    # None ran: the account is not locked out by the wrong passwords.
    data = await anon.data(f"mutation {{ {staff_sign_in('ok', PASSWORD)} }}")
    assert data["ok"]["token"]


@pytest.mark.parametrize(
    "document",
    [
        'mutation { ...S a: signIn(firm: "acme", email: "x@y.example", password: "p") '
        "{ token } } fragment S on Mutation { " + staff_sign_in("b") + " }",
        "mutation { ... on Mutation { " + staff_sign_in("a") + " } "
        'acceptInvitation(token: "t") { token } }',
        'mutation { setStaffPassword(token: "t", password: "p") { token } '
        + staff_sign_in("b")
        + " }",
    ],
)
async def test_sign_ins_through_fragments_count_too(acme, anon, document):
    body = await anon.post(document)
    assert codes(body) == ["BATCHED_SIGN_IN"]


async def test_one_sign_in_beside_other_fields_works(acme, anon):
    twice = f"...S ...S {staff_sign_in('ok', PASSWORD)}"  # one response name: one run
    data = await anon.data(
        f"mutation {{ {twice} __typename }} fragment S on Mutation {{ "
        f"{staff_sign_in('ok', PASSWORD)} }}"
    )
    assert data["ok"]["token"] and data["__typename"] == "Mutation"


async def test_every_field_that_starts_a_session_is_counted(anon):
    data = await anon.data(
        '{ __type(name: "Mutation") { fields { name type { ofType { name } } } } }'
    )
    starts_session = {
        f["name"]
        for f in data["__type"]["fields"]
        if f["type"]["ofType"]["name"] == "SignInPayload"
    }
    # Besides them, the authenticator's set-up, replacement and removal check a code: one
    # per request too.
    assert SIGN_IN_FIELDS - starts_session == {
        "startAuthenticatorEnrollment",
        "confirmAuthenticatorEnrollment",
        "removeAuthenticator",
    }


# WebSocket ---------------------------------------------------------------------------------


async def test_budget_applies_over_websocket(acme: Firm, settings: Settings):
    """Queries and subscriptions over graphql-transport-ws are measured alike."""
    message_chain = chain(12, on="Message", leaf="id", prefix="M")
    documents = [
        chain_query(12),
        f"subscription {{ messageSynced {{ ...M12 }} }} {message_chain}",
    ]
    async with serving(settings) as served, socket(served.url, acme.api.token) as sock:
        for number, document in enumerate(documents, start=1):
            await sock.subscribe(str(number), document)
            message = await sock.receive()
            assert message["id"] == str(number), message
            # An `error` message, or a result carrying the errors (either ends the operation).
            errors = (
                message["payload"] if message["type"] == "error" else message["payload"]["errors"]
            )
            assert errors[0]["extensions"]["code"] == TOO_COMPLEX, message


# A real server: the chain that froze the process ------------------------------------------

live_server_process = server.live_server_process

TIMEOUT = 20.0  # guards the test against a frozen server; the answers take milliseconds


@pytest.fixture
def live(live_server_process: LiveServer) -> Iterator[str]:
    yield live_server_process.url


async def test_a_thirty_level_chain_is_refused_at_once_and_healthz_answers(live):
    async with httpx.AsyncClient(base_url=live, timeout=TIMEOUT) as http:

        async def post(query: str) -> tuple[dict, float]:
            started = time.monotonic()
            response = await http.post("/graphql", json={"query": query})
            return response.json(), time.monotonic() - started

        async def healthz() -> int:
            return (await http.get("/healthz")).status_code

        (chained, took), (cyclic, _), health = await asyncio.wait_for(
            asyncio.gather(post(chain_query(30)), post(cycle(30)), healthz()), TIMEOUT
        )
    refused(chained)
    assert took < 2.0, took  # milliseconds in practice; generous for a busy machine
    assert cyclic["errors"][0]["message"].startswith("Cannot spread fragment 'C0' within itself")
    assert health == 200
