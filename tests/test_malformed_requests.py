"""Requests Portico cannot read answer HTTP 400 with a GraphQL error body and BAD_REQUEST
(issue 10, finding 6): malformed or too deeply nested JSON, fields of the wrong type, bad
multipart uploads and maps, subscriptions over HTTP. Never a 500, nothing logged as an
error, nothing written."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from models import Document

PREFLIGHT = {"GraphQL-Require-Preflight": "1"}
JSON = {"content-type": "application/json"}
UPLOAD = """mutation($a: ID!, $f: Upload!) { uploadDocument(accountId: $a, file: $f) {
  errors { code } document { id } } }"""
OPERATIONS = json.dumps({"query": UPLOAD, "variables": {"a": "QWNjb3VudDox", "f": None}})
FILE = {"0": ("return.pdf", b"%PDF-1.4\n", "application/pdf")}


def refused(response: httpx.Response, status: int = 400) -> str:
    """The message of the one BAD_REQUEST error of a 400 (or `status`) answer."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    [error] = response.json()["errors"]
    assert error["extensions"] == {"code": "BAD_REQUEST"}, error
    assert error["message"]
    return error["message"]


@pytest.fixture(autouse=True)
def no_error_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    with caplog.at_level(logging.INFO):
        yield
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def nested(depth: int, closed: bool = True) -> str:
    return "[" * depth + ("]" * depth if closed else "")


async def test_variables_nested_100000_deep(client):
    body = '{"query": "{ __typename }", "variables": {"a": ' + nested(100_000, False) + "}}"
    message = refused(await client.post("/graphql", content=body, headers=JSON))
    assert "depth" in message


async def test_json_nested_just_under_the_limit_is_an_ordinary_graphql_answer(client):
    """1000 levels parse: what follows (coercion, the schema's extensions, error logging)
    must not recurse on them."""
    query = "query($a: [String]) { __typename @include(if: true) ok: __typename }"
    for variables in ('{"a": ' + nested(1000) + "}", '{"a": [' + nested(999) + "]}"):
        body = '{"query": "' + query + '", "variables": ' + variables + "}"
        response = await client.post("/graphql", content=body, headers=JSON)
        assert response.status_code == 200, response.text
        assert "INTERNAL" not in response.text


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{", "JSON"),
        (b"", "JSON"),
        (b'{"query": "\xff"}', "JSON"),
        (b"5", "object"),
        (b'"{ __typename }"', "object"),
        (b"null", "object"),
        (b"true", "object"),
        (b'[{"query": "{ __typename }"}]', "Batching"),
        (b"{}", "No GraphQL query"),
        (b'{"query": ""}', "No GraphQL query"),
        (b'{"query": 5}', "`query`"),
        (b'{"query": ["{ __typename }"]}', "`query`"),
        (b'{"query": "{ __typename }", "variables": [1]}', "`variables`"),
        (b'{"query": "{ __typename }", "variables": "{}"}', "`variables`"),
        (b'{"query": "{ __typename }", "extensions": "x"}', "`extensions`"),
        (b'{"query": "{ __typename }", "operationName": 5}', "`operationName`"),
        (b'{"query": "{ __typename }", "operationName": {}}', "`operationName`"),
        (b'{"query": "query A { __typename }", "operationName": "B"}', "Unknown operation"),
    ],
)
async def test_json_bodies(client, body, says):
    assert says in refused(await client.post("/graphql", content=body, headers=JSON))


async def test_an_unsupported_content_type(client):
    # The GraphQL-over-HTTP spec: 415 Unsupported Media Type, with or without a Content-Type.
    response = await client.post("/graphql", content=b"{ __typename }", headers=PREFLIGHT)
    assert "content type" in refused(response, 415)
    plain = {**PREFLIGHT, "content-type": "text/plain"}
    response = await client.post("/graphql", content=b'{"query": "{ __typename }"}', headers=plain)
    assert "content type" in refused(response, 415)


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"variables": "{"}, "JSON"),
        ({"variables": nested(2000)}, "depth"),
        ({"variables": "5"}, "object"),
        ({"variables": "[1]"}, "`variables`"),
        ({"extensions": "x"}, "JSON"),
        ({"operationName": "B"}, "Unknown operation"),
    ],
)
async def test_get_with_bad_parameters(client, params, says):
    params = {"query": "query A { __typename }", **params}
    response = await client.get("/graphql", params=params, headers={"Accept": "application/json"})
    assert says in refused(response)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_subscriptions_are_for_websockets(client, method):
    query = "subscription { messageSynced { id } }"
    if method == "GET":
        response = await client.get("/graphql", params={"query": query})
    else:
        response = await client.post("/graphql", json={"query": query})
    assert "WebSocket" in refused(response)


def multipart(operations: Any = OPERATIONS, files_map: Any = '{"0": ["variables.f"]}') -> dict:
    data = {"operations": operations, "map": files_map}
    return {"data": {k: v for k, v in data.items() if v is not None}, "files": FILE}


@pytest.mark.parametrize(
    ("request_parts", "says"),
    [
        # The two, which need no sign-in.
        (multipart(files_map="[1]"), "`map` must be a JSON object"),
        (multipart(files_map='{"0": ["variables.f.x"]}'), "'variables.f.x'"),
        # Paths that do not exist or point through what is no object.
        (multipart(files_map='{"0": ["variables.nope"]}'), "does not lead"),
        (multipart(files_map='{"0": ["variables.a.b"]}'), "does not lead"),
        (multipart(files_map='{"0": ["query.0"]}'), "does not lead"),
        (multipart(files_map='{"0": ["variables.f", "nothing.at.all"]}'), "does not lead"),
        (multipart(files_map='{"0": [""]}'), "does not lead"),
        (
            multipart(
                json.dumps({"query": UPLOAD, "variables": {"f": [None]}}),
                '{"0": ["variables.f.1"]}',
            ),
            "does not lead",
        ),
        (
            multipart(
                json.dumps({"query": UPLOAD, "variables": {"f": [None]}}),
                '{"0": ["variables.f.-1"]}',
            ),
            "does not lead",
        ),
        # A map of the wrong shape, or naming files the request does not carry.
        (multipart(files_map='{"0": "variables.f"}'), "as strings"),
        (multipart(files_map='{"0": [5]}'), "as strings"),
        (multipart(files_map='{"1": ["variables.f"]}'), "does not carry: '1'"),
        (multipart(files_map='{"operations": ["variables.f"]}'), "does not carry"),
        (multipart(files_map="{"), "JSON"),
        (multipart(files_map=nested(100_000, False)), "depth"),
        # Operations that are no JSON object, too deep, or absent; map absent.
        (multipart(operations="{"), "JSON"),
        (multipart(operations="5"), "object"),
        (multipart(operations="[1]", files_map="{}"), "Batching"),
        (multipart(operations='{"query": ' + nested(100_000, False) + "}"), "depth"),
        (
            multipart(
                '{"query": "{ __typename }", "variables": {"f": ' + nested(1000) + "}}",
                '{"0": ["variables.f' + ".0" * 1000 + '"]}',
            ),
            "does not lead",  # the innermost list is empty
        ),
        (multipart(operations=None), "`operations`"),
        (multipart(files_map=None), "`map`"),
        ({"data": {"map": "{}"}, "files": {"operations": ("o.json", b"{}")}}, "`operations`"),
    ],
)
async def test_multipart_uploads_need_only_the_preflight_header_to_be_refused(
    client, request_parts, says
):
    response = await client.post("/graphql", headers=PREFLIGHT, **request_parts)
    assert says in refused(response)


@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary=b"])
async def test_an_unreadable_multipart_body(client, content_type):
    headers = {**PREFLIGHT, "content-type": content_type}
    assert "multipart" in refused(await client.post("/graphql", content=b"xx", headers=headers))


async def test_a_signed_in_upload_with_a_bad_map_writes_nothing(acme, client, settings):
    account = await acme.api.ok(
        'mutation { createAccount(input: {name: "Miller", type: FAMILY}) { errors { code } account { id } } }'
    )
    operations = json.dumps(
        {"query": UPLOAD, "variables": {"a": account["account"]["id"], "f": None}}
    )
    headers = {"Authorization": f"Bearer {acme.api.token}"}
    for files_map in ['{"0": ["variables.f.x"]}', '{"0": ["variables.a", "variables.g"]}']:
        response = await client.post(
            "/graphql", headers=headers, **multipart(operations, files_map)
        )
        refused(response)
    assert await Document.all().count() == 0
    assert not list(settings.resolved_files_dir.glob("**/*"))
