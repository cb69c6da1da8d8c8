"""Parse and validate once (issue 13): a document seen before is served from the validation
cache (schema/validation.py), and answers exactly what its first request answered. What the
request decides (page sizes from variables, the operation chosen, control characters in
variables) is still decided for every request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from portico.app import create_app
from portico.settings import Settings
from schema.validation import MAX_KEPT_DOCUMENT, CacheStats, DocumentValidator
from tests.support.api import Api, make_firm


# 50 accounts, each with contacts' addresses: about 50 x 212 values; one account about 213.
def nested(first: str | int) -> str:
    return f"accounts(first: {first}) {{ edges {{ node {{ contacts {{ emailAddresses {{ address }} }} }} }} }}"


PAGED = "query($n: Int) { " + nested("$n") + " }"
TWO_OPERATIONS = (
    "query Small { accounts(first: 1) { totalCount } } query Big { " + nested(50) + " }"
)
SEARCH = "query($s: String) { accounts(search: $s) { totalCount } }"


@dataclass
class Served:
    api: Api  # signed in as a firm's owner
    validator: DocumentValidator

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, operation: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query, "variables": variables or {}}
        if operation is not None:
            body["operationName"] = operation
        headers = {"Authorization": f"Bearer {self.api.token}"}
        response = await self.api.http.post("/graphql", json=body, headers=headers)
        self.api.http.cookies.clear()
        return response.json()

    async def twice(
        self, query: str, variables: dict[str, Any] | None = None, operation: str | None = None
    ) -> dict[str, Any]:
        """Posts `query` twice, asserting the second was served from the cache and answered
        as the first did; the answer."""
        first = await self.post(query, variables, operation)
        before = self.validator.stats()
        second = await self.post(query, variables, operation)
        assert self.validator.stats() == hit(before)
        assert second == first
        return first


def hit(stats: CacheStats) -> CacheStats:
    return CacheStats(stats.hits + 1, stats.misses, stats.size)


def missed(stats: CacheStats, kept: bool = True) -> CacheStats:
    return CacheStats(stats.hits, stats.misses + 1, stats.size + int(kept))


def validator_of(app: Starlette) -> DocumentValidator:
    [endpoint] = [r.endpoint for r in app.routes if isinstance(r, Route) and r.path == "/graphql"]
    return endpoint.schema.validator


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[Served]:
    # A result budget one account's nested page fits and fifty do not.
    app = create_app(settings.model_copy(update={"max_result_size": 1000}), manage_db=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://portico.test") as http:
        firm = await make_firm(http, "acme")
        yield Served(firm.api, validator_of(app))


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


async def test_a_valid_document_is_validated_once(served: Served) -> None:
    query = "{ accounts(first: 5) { totalCount } }"
    before = served.validator.stats()
    body = await served.post(query)
    assert served.validator.stats() == missed(before)
    assert body == {"data": {"accounts": {"totalCount": 0}}}
    assert await served.twice(query) == body


async def test_an_invalid_document_answers_the_same_errors_from_the_cache(
    served: Served,
) -> None:
    body = await served.twice("{ accounts(first: 5) { totalCount nope } missing }")
    assert "data" not in body or body["data"] is None
    assert codes(body) == ["GRAPHQL_VALIDATION_FAILED"] * 2
    assert [e["message"] for e in body["errors"]] == [
        "Cannot query field 'nope' on type 'AccountConnection'.",
        "Cannot query field 'missing' on type 'Query'.",
    ]


async def test_an_over_budget_document_is_refused_from_the_cache(served: Served) -> None:
    body = await served.twice("{ " + nested(50) + " }")
    assert codes(body) == ["QUERY_TOO_COMPLEX"]
    assert "over the limit of 1000" in body["errors"][0]["message"]


async def test_a_control_character_in_a_literal_is_refused_from_the_cache(
    served: Served,
) -> None:
    body = await served.twice('{ accounts(search: "a\\u0000b") { totalCount } }')
    assert codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["argument"] == "search"
    assert body["errors"][0]["locations"] == [{"line": 1, "column": 20}]


async def test_a_control_character_in_a_variable_is_refused_on_a_cached_document(
    served: Served,
) -> None:
    clean = await served.post(SEARCH, {"s": "plain"})
    assert clean == {"data": {"accounts": {"totalCount": 0}}}
    before = served.validator.stats()
    refused = await served.post(SEARCH, {"s": "a\x00b"})
    assert served.validator.stats() == hit(before)
    assert codes(refused) == ["BAD_USER_INPUT"]
    assert refused["errors"][0]["extensions"]["variable"] == "$s"
    assert await served.post(SEARCH, {"s": "plain"}) == clean
    # Alongside graphql-core's errors, where it stood before there was a cache.
    invalid = SEARCH.replace("totalCount", "totalCount nope")
    first = await served.post(invalid, {"s": "a\x00b"})
    assert codes(first) == ["BAD_USER_INPUT", "GRAPHQL_VALIDATION_FAILED"]
    assert codes(await served.post(invalid, {"s": "ok"})) == ["GRAPHQL_VALIDATION_FAILED"]
    assert await served.post(invalid, {"s": "a\x00b"}) == first


async def test_variables_decide_the_budget_of_a_cached_document(served: Served) -> None:
    fits = await served.post(PAGED, {"n": 1})
    assert fits == {"data": {"accounts": {"edges": []}}}
    before = served.validator.stats()
    over = await served.post(PAGED, {"n": 50})
    assert served.validator.stats() == hit(before)
    assert codes(over) == ["QUERY_TOO_COMPLEX"]
    assert await served.post(PAGED, {"n": 1}) == fits
    assert await served.post(PAGED, {"n": 50}) == over
    # Absent, the variable's default counts; null or a string, the field's own default.
    defaulted = "query($n: Int = 1) { " + nested("$n") + " }"
    assert await served.twice(defaulted) == fits
    assert codes(await served.post(defaulted, {"n": None})) == ["QUERY_TOO_COMPLEX"]
    assert codes(await served.post(defaulted, {"n": "1"})) == ["QUERY_TOO_COMPLEX"]
    assert await served.post(defaulted, {"n": 1}) == fits


async def test_operation_name_picks_the_operation_measured_on_a_cached_document(
    served: Served,
) -> None:
    small = await served.post(TWO_OPERATIONS, operation="Small")
    assert small == {"data": {"accounts": {"totalCount": 0}}}
    before = served.validator.stats()
    big = await served.post(TWO_OPERATIONS, operation="Big")
    assert served.validator.stats() == hit(before)
    assert codes(big) == ["QUERY_TOO_COMPLEX"]
    assert await served.twice(TWO_OPERATIONS, operation="Small") == small
    assert await served.twice(TWO_OPERATIONS, operation="Big") == big


async def test_the_cache_is_bounded_by_count_and_document_size(served: Served) -> None:
    long = " " * MAX_KEPT_DOCUMENT + "{ __typename }"
    before = served.validator.stats()
    for _ in range(2):
        assert await served.post(long) == {"data": {"__typename": "Query"}}
    assert served.validator.stats() == CacheStats(before.hits, before.misses + 2, before.size)
    for i in range(served.validator.maxsize + 1):
        assert await served.post(f"{{ a{i}: __typename }}") == {"data": {f"a{i}": "Query"}}
    assert served.validator.stats().size == served.validator.maxsize
    # The oldest went first: asking for it again misses.
    before = served.validator.stats()
    await served.post("{ a0: __typename }")
    assert served.validator.stats() == CacheStats(before.hits, before.misses + 1, before.size)
