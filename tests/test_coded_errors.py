"""Every top-level error carries extensions.code (the contract's amendment): parse errors
and the token limit GRAPHQL_PARSE_FAILED, documents the schema refuses
GRAPHQL_VALIDATION_FAILED, the depth and alias limits QUERY_TOO_COMPLEX like the work
budget, variables that do not fit BAD_USER_INPUT; over HTTP and WebSocket alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from portico.settings import Settings
from tests.support.api import Api, chained_document
from tests.support.websocket import LEGACY_WS, TRANSPORT_WS, Served, serving, socket

PARSE = "GRAPHQL_PARSE_FAILED"
VALIDATION = "GRAPHQL_VALIDATION_FAILED"
TOO_COMPLEX = "QUERY_TOO_COMPLEX"
INPUT = "BAD_USER_INPUT"

CREATE = "mutation($i: CreateAccountInput!) { createAccount(input: $i) { errors { code } } }"
PAGE = "query($n: Int) { accounts(first: $n) { totalCount } }"
REQUIRED = "query($n: Int!) { accounts(first: $n) { totalCount } }"


# kind: (document, variables, code)
CASES: dict[str, tuple[str, dict[str, Any] | None, str]] = {
    "syntax": ("{ viewer { ", None, PARSE),
    "bad character": ("{ viewer ^ }", None, PARSE),
    "tokens": ("{ " + " ".join(["__typename"] * 2000) + " }", None, PARSE),
    "unknown field": ("{ accountz { totalCount } }", None, VALIDATION),
    "unknown argument": ("{ accounts(bogus: 1) { totalCount } }", None, VALIDATION),
    "unknown type": (
        "query($t: AccountTyp) { accounts(type: $t) { totalCount } }",
        None,
        VALIDATION,
    ),
    "wrong literal type": ('{ accounts(first: "x") { totalCount } }', None, VALIDATION),
    "unknown enum literal": (
        'mutation { createAccount(input: {name: "X", type: FAMLY}) { errors { code } } }',
        None,
        VALIDATION,
    ),
    "unknown fragment": ("{ ...F }", None, VALIDATION),
    "unused variable": ("query($x: Int) { __typename }", None, VALIDATION),
    "no subselection": ("{ accounts }", None, VALIDATION),
    "depth": (chained_document(11), None, TOO_COMPLEX),
    "aliases": (" ".join(["{", *(f"a{i}: __typename" for i in range(40)), "}"]), None, TOO_COMPLEX),
    "variable of the wrong type": (PAGE, {"n": "x"}, INPUT),
    "variable out of range": (PAGE, {"n": 2**40}, INPUT),
    "missing required variable": (REQUIRED, {}, INPUT),
    "null required variable": (REQUIRED, {"n": None}, INPUT),
    "unknown enum value in a variable": (CREATE, {"i": {"name": "X", "type": "FAMLY"}}, INPUT),
    "unknown input field in a variable": (CREATE, {"i": {"nme": "X", "type": "FAMILY"}}, INPUT),
    "object for an ID variable": ("query($id: ID!) { node(id: $id) { id } }", {"id": {}}, INPUT),
}


def _codes(body: dict[str, Any]) -> list[str | None]:
    return [e.get("extensions", {}).get("code") for e in body["errors"]]


@pytest.mark.parametrize("kind", list(CASES))
async def test_each_kind_of_refusal_carries_its_code_over_http(kind, anon, settings):
    document, variables, code = CASES[kind]
    assert settings.max_aliases < 40 and settings.max_query_depth == 10
    body = await anon.post(document, variables)
    assert body.get("data") is None, body
    assert _codes(body) == [code] * len(body["errors"]), body


async def test_depth_at_the_limit_is_answered(acme):
    assert "errors" not in await acme.api.post(chained_document(10))


async def test_a_code_already_given_is_kept(anon):
    # The work budget and the control-character rule refuse before validation, with theirs.
    nested = (
        "{ accounts(first: 50) { edges { node { contacts { accounts { contacts { id } } } } } } }"
    )
    over_budget = await anon.post(nested)
    assert _codes(over_budget) == [TOO_COMPLEX]
    control = await anon.post(CREATE, {"i": {"name": "X\x00", "type": "FAMILY"}})
    assert _codes(control) == [INPUT]


async def test_access_errors_keep_their_code(anon):
    assert _codes(await anon.post("{ accounts { totalCount } }")) == ["UNAUTHENTICATED"]


# Guard: no bad document may answer an error without a code -------------------------------

BAD_DOCUMENTS: list[tuple[str, dict[str, Any] | None]] = [
    ("", None),
    ("}", None),
    ('{ viewer(x: "unterminated) }', None),
    ("query { viewer } query { viewer }", None),
    ("query A { __typename } query A { __typename }", None),
    ("fragment F on Query { ...F } { ...F }", None),
    ("fragment F on Nope { id } { ...F }", None),
    ("{ viewer { ... on Account { id } } }", None),
    ("{ __typename @nope }", None),
    ("{ __typename @skip }", None),
    ("query($x: Int, $x: Int) { accounts(first: $x) { totalCount } }", None),
    ("query($x: String) { accounts(first: $x) { totalCount } }", {"x": "1"}),
    ("{ accounts(first: $y) { totalCount } }", None),
    ("subscription { messageSynced { id } messageSynced { id } }", None),
    ("{ accounts(first: 1, first: 2) { totalCount } }", None),
    ('mutation { createAccount(input: {name: "X"}) { errors { code } } }', None),
    ("query($i: CreateAccountInput!) { __typename }", {"i": 1}),
    (CREATE, {"i": "not an object"}),
    (CREATE, {"i": {"name": ["X"], "type": "FAMILY"}}),
    (PAGE, {"n": 1.5}),
    (PAGE, {"n": True}),
    ("query($id: ID!) { node(id: $id) { id } }", {"id": True}),
]


@pytest.mark.parametrize("document, variables", BAD_DOCUMENTS)
async def test_no_refusal_lacks_a_code(document, variables, anon, client):
    response = await client.post("/graphql", json={"query": document, "variables": variables})
    body = response.json()
    assert body["errors"], body
    assert None not in _codes(body), body


# The same codes over WebSocket (the same shaping) ----------------------------------------


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[Served]:
    async with serving(settings) as served:
        yield served


async def _refusal_over_socket(
    live: Served, protocol: str, document: str, variables: dict[str, Any] | None
) -> list[dict[str, Any]]:
    async with socket(live.url, protocol=protocol) as sock:
        await sock.subscribe("1", document, variables)
        message = await sock.receive()
    assert message.get("id") == "1", message
    if message["type"] == "error":
        payload = message["payload"]
        return payload if isinstance(payload, list) else [payload]
    return message["payload"]["errors"]


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
@pytest.mark.parametrize("kind", ["syntax", "unknown field", "depth", "variable of the wrong type"])
async def test_websocket_answers_the_same_codes(live, protocol, kind):
    document, variables, code = CASES[kind]
    over_http = await Api(live.http).post(document, variables)
    errors = await _refusal_over_socket(live, protocol, document, variables)
    assert [e["extensions"]["code"] for e in errors] == [code]
    assert [e["extensions"]["code"] for e in over_http["errors"]] == [code]
