"""Automatic persisted queries, Apollo's protocol (issue 12, item 2): an unknown hash answers
PERSISTED_QUERY_NOT_FOUND as Apollo Server does (200, so Apollo's link sends the query), a
hash with its query is checked and kept once the document parsed and validated, then the
hash alone works, by GET and POST; the store is bounded, and shared through Redis."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from portico.app import create_app
from portico.settings import Settings
from services.shared.persisted_queries import (
    MAX_DOCUMENT_BYTES,
    REDIS_PREFIX,
    RedisStore,
    entry_size,
)
from tests.support.services import need_redis
from tests.support.websocket import serving, socket

NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
GRAPHQL_RESPONSE = "application/graphql-response+json"


def sha(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def extension(document: str, version: Any = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": sha(document)}}


async def send(
    http: httpx.AsyncClient,
    method: str,
    digest_of: str,
    query: str | None = None,
    *,
    version: Any = 1,
    accept: str = "application/json",
) -> httpx.Response:
    """A persisted-query request as Apollo's link sends it: by GET the extensions are a
    URL-encoded JSON parameter."""
    extensions = extension(digest_of, version)
    headers = {"Accept": accept}
    if method == "GET":
        params = {"extensions": json.dumps(extensions)}
        if query is not None:
            params["query"] = query
        return await http.get("/graphql", params=params, headers=headers)
    body: dict[str, Any] = {"extensions": extensions}
    if query is not None:
        body["query"] = query
    return await http.post("/graphql", json=body, headers=headers)


def only_error(response: httpx.Response, status: int, code: str) -> str:
    """The message of a request error: one error with `code`, and no `data` key."""
    assert response.status_code == status, response.text
    body = response.json()
    assert "data" not in body, body
    [error] = body["errors"]
    assert error["extensions"]["code"] == code, error
    return error["message"]


@contextlib.asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(settings, manage_db=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://portico.test") as http:
        yield http


def fresh_document() -> str:
    """A document no earlier run registered (Redis outlives a test)."""
    return f"query Q{uuid.uuid4().hex} {{ __typename }}"


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_unknown_hash_then_register_then_the_hash_alone_works(client, method):
    document = fresh_document()
    response = await send(client, method, document)
    assert only_error(response, 200, NOT_FOUND) == "PersistedQueryNotFound"
    assert response.headers["cache-control"] == "private, no-cache, must-revalidate"

    registered = await send(client, method, document, document)
    assert registered.status_code == 200, registered.text
    assert registered.json() == {"data": {"__typename": "Query"}}

    for _ in range(2):
        again = await send(client, method, document)
        assert again.json() == {"data": {"__typename": "Query"}}, again.text


async def test_registered_by_post_runs_by_get(client):
    document = fresh_document()
    await send(client, "POST", document, document)
    assert (await send(client, "GET", document)).json() == {"data": {"__typename": "Query"}}


async def test_not_found_is_200_under_the_spec_media_type_too(client):
    # Apollo Client 4 asks for application/graphql-response+json first; the 200 keeps older
    # links (which give up hashing after a 400) retrying too.
    response = await send(client, "POST", fresh_document(), accept=GRAPHQL_RESPONSE)
    only_error(response, 200, NOT_FOUND)
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_hash_that_is_not_the_querys_is_refused_and_not_stored(client, method):
    document, other = fresh_document(), fresh_document()
    response = await send(client, method, other, document)
    assert "SHA-256" in only_error(response, 400, "BAD_REQUEST")
    only_error(await send(client, method, other), 200, NOT_FOUND)


@pytest.mark.parametrize("version", [2, 0, "1", None])
async def test_an_unsupported_version_is_refused(client, version):
    document = fresh_document()
    response = await send(client, "POST", document, document, version=version)
    assert "version" in only_error(response, 400, "BAD_REQUEST")


@pytest.mark.parametrize(
    "persisted",
    [
        "not an object",
        {"version": 1},
        {"version": 1, "sha256Hash": 5},
        {"version": 1, "sha256Hash": "abc"},
        {"version": 1, "sha256Hash": "A" * 64},
    ],
)
async def test_a_malformed_extension_is_refused(client, persisted):
    body = {"extensions": {"persistedQuery": persisted}}
    response = await client.post("/graphql", json=body)
    only_error(response, 400, "BAD_REQUEST")


@pytest.mark.parametrize(
    ("document", "code"),
    [
        ("{ viewer { ", "GRAPHQL_PARSE_FAILED"),
        ("{ " + " ".join(["__typename"] * 2000) + " }", "GRAPHQL_PARSE_FAILED"),
        ("{ accountz { totalCount } }", "GRAPHQL_VALIDATION_FAILED"),
        (" ".join(["{", *(f"a{i}: __typename" for i in range(40)), "}"]), "QUERY_TOO_COMPLEX"),
        ("query A { __typename } query B { __typename }", "BAD_REQUEST"),  # no operationName
    ],
)
async def test_a_document_that_is_refused_is_never_stored(client, document, code):
    only_error(await send(client, "POST", document, document), 200, code)
    only_error(await send(client, "POST", document), 200, NOT_FOUND)


async def test_a_document_with_bad_variables_is_stored(client):
    # The document parsed and validated: only its variables were wrong this time.
    document = f"query Q{uuid.uuid4().hex}($b: Boolean!) {{ __typename @include(if: $b) }}"
    ext = extension(document)
    bad = await client.post(
        "/graphql", json={"query": document, "variables": {"b": "x"}, "extensions": ext}
    )
    only_error(bad, 200, "BAD_USER_INPUT")
    good = await client.post("/graphql", json={"variables": {"b": True}, "extensions": ext})
    assert good.json() == {"data": {"__typename": "Query"}}


async def test_a_stored_mutation_is_refused_over_get(client):
    document = "mutation { signOut }"
    registered = await send(client, "POST", document, document)
    assert "signOut" in registered.json()["data"], registered.text
    response = await send(client, "GET", document)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "POST"


async def test_off_answers_not_supported(settings):
    async with app_client(settings.model_copy(update={"persisted_queries": "off"})) as http:
        document = fresh_document()
        for query in (None, document):
            response = await send(http, "POST", document, query)
            message = only_error(response, 200, "PERSISTED_QUERY_NOT_SUPPORTED")
            assert message == "PersistedQueryNotSupported"
        plain = await http.post("/graphql", json={"query": document})
        assert plain.json() == {"data": {"__typename": "Query"}}


async def test_the_memory_store_forgets_the_least_recently_used(settings):
    first, second, third = (f"query Q{n}{'x' * 100} {{ __typename }}" for n in range(3))
    room = 10 + sum(entry_size(sha(d), d) for d in (first, second))  # for two documents
    async with app_client(
        settings.model_copy(update={"persisted_queries_cache_bytes": room})
    ) as http:
        for document in (first, second):
            await send(http, "POST", document, document)
        await send(http, "POST", first)  # first is now the most recently used
        await send(http, "POST", third, third)
        only_error(await send(http, "POST", second), 200, NOT_FOUND)
        for document in (first, third):
            assert (await send(http, "POST", document)).json() == {"data": {"__typename": "Query"}}


async def test_a_document_over_the_size_cap_runs_but_is_not_kept(settings):
    # Anyone may register documents: comments cost no tokens, so without a cap one request
    # could park megabytes in every process (or in the Redis the event bus shares).
    padding = "#" + "x" * MAX_DOCUMENT_BYTES + "\n"
    big = f"{padding}{fresh_document()}"
    async with app_client(settings) as http:
        answered = await send(http, "POST", big, big)
        assert answered.json() == {"data": {"__typename": "Query"}}
        only_error(await send(http, "POST", big), 200, NOT_FOUND)


async def test_over_websocket_the_extension_changes_nothing(settings):
    # Apollo's link is HTTP only: over WebSocket a query runs as sent (nothing registered),
    # and a hash alone is a request without a query.
    document = fresh_document()
    async with serving(settings) as served, socket(served.url) as sock:
        await sock.start("1", {"query": document, "extensions": extension(document)})
        assert (await sock.receive())["payload"] == {"data": {"__typename": "Query"}}
        assert (await sock.receive())["type"] == "complete"
        await sock.start("2", {"extensions": extension(document)})
        [error] = await sock.refused("2")
        assert error["extensions"]["code"] == "BAD_REQUEST"
        only_error(await send(served.http, "POST", document), 200, NOT_FOUND)


async def test_redis_shares_documents_between_processes(settings):
    url = need_redis()
    shared = settings.model_copy(update={"redis_url": url})
    document = fresh_document()
    async with app_client(shared) as one, app_client(shared) as two:
        only_error(await send(two, "GET", document), 200, NOT_FOUND)
        await send(one, "POST", document, document)
        assert (await send(two, "GET", document)).json() == {"data": {"__typename": "Query"}}
    redis = Redis.from_url(url)
    try:
        stored = await redis.hget(f"{REDIS_PREFIX}documents", sha(document))
        assert stored.decode() == document
    finally:
        await redis.aclose()


async def test_the_redis_store_keeps_within_its_byte_budget():
    url = need_redis()
    prefix = f"portico:test-apq:{secrets.token_hex(4)}:"  # this test's own namespace
    documents = [f"query Q{n}{'x' * 500} {{ __typename }}" for n in range(6)]
    room = 10 + sum(entry_size(sha(d), d) for d in documents[:2])  # for two documents
    store = RedisStore(url, room, prefix)
    redis = Redis.from_url(url)
    try:
        for document in documents:
            await store.put(sha(document), document)
        assert [await store.get(sha(d)) for d in documents] == [None] * 4 + documents[4:]
        assert int(await redis.get(f"{prefix}bytes")) <= room
        assert await redis.hlen(f"{prefix}documents") == 2
        big = "#" + "x" * MAX_DOCUMENT_BYTES + "\n{ __typename }"
        await store.put(sha(big), big)
        assert await store.get(sha(big)) is None  # over the cap: not kept
    finally:
        await redis.delete(*(f"{prefix}{name}" for name in ("documents", "order", "bytes")))
        await redis.aclose()
        await store.aclose()


# Allow-list mode: only the operations of a manifest run ------------------------------------

LISTED = "query Listed { __typename }"


def allow_list(settings: Settings, tmp_path: Path) -> Settings:
    manifest = {
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [{"id": sha(LISTED), "name": "Listed", "type": "query", "body": LISTED}],
    }
    path = tmp_path / "persisted-query-manifest.json"
    path.write_text(json.dumps(manifest))
    return settings.model_copy(
        update={"persisted_queries": "allowlist", "persisted_queries_manifest": path}
    )


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_allow_list_runs_listed_documents_by_hash_or_text(settings, tmp_path, method):
    async with app_client(allow_list(settings, tmp_path)) as http:
        assert (await send(http, method, LISTED)).json() == {"data": {"__typename": "Query"}}
        assert (await send(http, method, LISTED, LISTED)).json()["data"] == {"__typename": "Query"}
        plain = await http.post("/graphql", json={"query": LISTED})
        assert plain.json() == {"data": {"__typename": "Query"}}


async def test_allow_list_refuses_everything_else(settings, tmp_path):
    other = fresh_document()
    async with app_client(allow_list(settings, tmp_path)) as http:
        refused = await http.post("/graphql", json={"query": other})
        assert "manifest" in only_error(refused, 403, "OPERATION_NOT_ALLOWED")
        only_error(await send(http, "POST", other, other), 403, "OPERATION_NOT_ALLOWED")
        only_error(await send(http, "POST", other), 200, NOT_FOUND)  # and nothing registered


async def test_allow_list_applies_over_websocket(settings, tmp_path):
    async with serving(allow_list(settings, tmp_path)) as served, socket(served.url) as sock:
        await sock.subscribe("1", "{ __typename }")
        [error] = await sock.refused("1")
        assert error["extensions"]["code"] == "OPERATION_NOT_ALLOWED"
        assert await sock.answer("2", LISTED) == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    "manifest",
    [
        None,
        "not json",
        {"format": "other"},
        {
            "format": "apollo-persisted-query-manifest",
            "version": 1,
            "operations": [{"id": "x", "body": LISTED}],
        },
    ],
)
async def test_allow_list_without_a_good_manifest_fails_at_start(settings, tmp_path, manifest):
    path = tmp_path / "manifest.json"
    if manifest is not None:
        path.write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    bad = settings.model_copy(
        update={"persisted_queries": "allowlist", "persisted_queries_manifest": path}
    )
    with pytest.raises(ValueError):
        create_app(bad, manage_db=False)
