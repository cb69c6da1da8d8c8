"""The GraphQL-over-HTTP spec (issue 12, item 5): the media type the client accepts, its
status rules (application/graphql-response+json: 400 for a request error; application/json:
200, the legacy watershed), 406 for what cannot be served, request errors as `errors`
without `data`, one operation chosen by name, 405 for a mutation over GET, 415 for a body
Portico cannot read; CORS headers on every answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.websocket import serving, socket

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
VITE = "http://localhost:5173"  # a dev server CORS allows in development

# kind: (document, variables, code), each refused before it runs
REQUEST_ERRORS: dict[str, tuple[str, dict[str, Any] | None, str]] = {
    "parse": ("{ viewer { ", None, "GRAPHQL_PARSE_FAILED"),
    "validation": ("{ accountz { totalCount } }", None, "GRAPHQL_VALIDATION_FAILED"),
    "limit": (
        " ".join(["{", *(f"a{i}: __typename" for i in range(40)), "}"]),
        None,
        "QUERY_TOO_COMPLEX",
    ),
    "variables": (
        "query($n: Int) { accounts(first: $n) { totalCount } }",
        {"n": "x"},
        "BAD_USER_INPUT",
    ),
}


async def post(http: httpx.AsyncClient, body: dict[str, Any], accept: str | None) -> httpx.Response:
    headers = {"Origin": VITE}
    if accept is not None:
        headers["Accept"] = accept
    request = http.build_request("POST", "/graphql", json=body, headers=headers)
    if accept is None:
        del request.headers["accept"]
    return await http.send(request)


def codes(response: httpx.Response) -> list[str]:
    return [e["extensions"]["code"] for e in response.json()["errors"]]


def cors_allowed(response: httpx.Response) -> bool:
    return response.headers.get("access-control-allow-origin") == VITE


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        (None, JSON),
        ("*/*", JSON),
        (JSON, JSON),
        ("application/*", JSON),
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE}, {JSON}", GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE},{JSON};q=0.9", GRAPHQL_RESPONSE),  # Apollo Client 4
        (f"{JSON}, {GRAPHQL_RESPONSE};q=0.5", JSON),
        (f"{GRAPHQL_RESPONSE};q=0, */*", JSON),
        (f"text/html, {GRAPHQL_RESPONSE};charset=utf-8", GRAPHQL_RESPONSE),
    ],
)
async def test_the_answer_comes_in_the_media_type_accepted(client, accept, media):
    response = await post(client, {"query": "{ __typename }"}, accept)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == media
    assert response.json() == {"data": {"__typename": "Query"}}
    assert cors_allowed(response)


@pytest.mark.parametrize("accept", ["application/xml", "text/html", f"{JSON};q=0"])
async def test_what_cannot_be_served_is_406(client, accept):
    response = await post(client, {"query": "{ __typename }"}, accept)
    assert response.status_code == 406, response.text
    assert codes(response) == ["BAD_REQUEST"]
    assert "data" not in response.json()
    assert cors_allowed(response)


@pytest.mark.parametrize("kind", list(REQUEST_ERRORS))
@pytest.mark.parametrize(("accept", "status"), [(GRAPHQL_RESPONSE, 400), (JSON, 200), (None, 200)])
async def test_request_errors_have_no_data_and_the_media_types_status(client, kind, accept, status):
    document, variables, code = REQUEST_ERRORS[kind]
    response = await post(client, {"query": document, "variables": variables}, accept)
    assert response.status_code == status, response.text
    body = response.json()
    assert "data" not in body, body
    assert codes(response) == [code] * len(body["errors"])
    assert cors_allowed(response)


@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, JSON])
async def test_an_execution_error_keeps_data_and_200(client, accept):
    response = await post(client, {"query": "{ accounts { totalCount } }"}, accept)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "data" in body, body
    assert codes(response) == ["UNAUTHENTICATED"]


@pytest.mark.parametrize(("accept", "status"), [(GRAPHQL_RESPONSE, 400), (JSON, 200)])
async def test_several_operations_need_an_operation_name(client, accept, status):
    # Strawberry ran the first. A request error once the document validated: the status is
    # the media type's, as for a validation error.
    document = "query A { a: __typename } mutation B { signOut }"
    response = await post(client, {"query": document}, accept)
    assert response.status_code == status, response.text
    assert codes(response) == ["BAD_REQUEST"]
    assert "operationName" in response.json()["errors"][0]["message"]
    assert "data" not in response.json()

    chosen = await post(client, {"query": document, "operationName": "A"}, accept)
    assert chosen.json() == {"data": {"a": "Query"}}

    unknown = await post(client, {"query": document, "operationName": "C"}, accept)
    assert unknown.status_code == 400
    assert codes(unknown) == ["BAD_REQUEST"]


async def test_fragments_are_not_operations(client):
    document = "query A { ...F } fragment F on Query { __typename }"
    response = await post(client, {"query": document}, JSON)
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, JSON])
async def test_a_mutation_over_get_is_405(client, accept):
    response = await client.get(
        "/graphql",
        params={"query": "mutation { signOut }"},
        headers={"Accept": accept, "Origin": VITE},
    )
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "POST"
    assert codes(response) == ["BAD_REQUEST"]
    assert cors_allowed(response)


async def test_a_query_over_get_works(client):
    response = await client.get(
        "/graphql", params={"query": "{ __typename }"}, headers={"Accept": GRAPHQL_RESPONSE}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_no_answer_is_kept_by_a_cache(client, acme):
    # The URL of a GET is the same for every viewer: a shared cache must never keep one
    # firm's answer for another's (persisted queries make GETs common).
    signed_in = {"Authorization": f"Bearer {acme.api.token}"}
    answers = [
        await client.get(
            "/graphql", params={"query": "{ viewer { __typename } }"}, headers=signed_in
        ),
        await client.get("/graphql", params={"query": "{ viewer { "}),
        await client.get("/graphql", params={"query": "mutation { signOut }"}),
        await client.post("/graphql", json={"query": "{ __typename }"}, headers=signed_in),
    ]
    assert [a.status_code for a in answers] == [200, 200, 405, 200]
    assert all(a.headers["cache-control"] == "no-store" for a in answers)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/xml"])
async def test_a_body_of_another_media_type_is_415(client, content_type):
    headers = {"Origin": VITE, "GraphQL-Require-Preflight": "1"}
    if content_type:
        headers["Content-Type"] = content_type
    response = await client.post(
        "/graphql", content=b'{"query": "{ __typename }"}', headers=headers
    )
    assert response.status_code == 415, response.text
    assert codes(response) == ["BAD_REQUEST"]
    assert cors_allowed(response)


@pytest.mark.parametrize(("accept", "media"), [(GRAPHQL_RESPONSE, GRAPHQL_RESPONSE), (JSON, JSON)])
async def test_a_malformed_body_is_400_in_the_media_type_accepted(client, accept, media):
    response = await client.post(
        "/graphql", content=b"{", headers={"Content-Type": JSON, "Accept": accept}
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].split(";")[0] == media
    assert "data" not in response.json()


async def test_several_operations_need_an_operation_name_over_websocket_too(settings):
    document = "query A { a: __typename } mutation B { signOut }"
    async with serving(settings) as served, socket(served.url) as sock:
        await sock.subscribe("1", document)
        [error] = await sock.refused("1")
        assert error["extensions"]["code"] == "BAD_REQUEST"
        assert "operationName" in error["message"]
