"""Abuse limits: depth, aliases, tokens, page size, GET mutations, batching, body size;
masked internal errors; production hides introspection and suggestions."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from portico.app import create_app
from portico.settings import Settings
from services.crm import records
from tests.support.api import Api


@contextlib.asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app of its own, for settings other than the fixtures'."""
    app = create_app(settings, manage_db=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://p") as http:
        yield http


def _codes(body: dict) -> list[str | None]:
    return [e.get("extensions", {}).get("code") for e in body["errors"]]


def _nested(levels: int) -> str:
    """accounts > edges > node, then `levels` of contacts/accounts, then id: depth levels + 3."""
    inner = "id"
    for level in reversed(range(levels)):  # from the outside: contacts, accounts, contacts...
        field = "contacts" if level % 2 == 0 else "accounts"
        inner = f"{field} {{ {inner} }}"
    return f"{{ accounts {{ edges {{ node {{ {inner} }} }} }} }}"


async def test_depth_over_ten_is_refused(acme, settings):
    assert settings.max_query_depth == 10
    # Seven nested lists are far over the result budget (tests/test_query_budget.py): lift it.
    unbudgeted = settings.model_copy(update={"max_result_size": 10**12})
    async with app_client(unbudgeted) as http:
        api = Api(http, acme.api.token)
        at_limit = await api.post(_nested(7))  # depth 10
        assert "errors" not in at_limit, at_limit
        over = await api.post(_nested(8))  # depth 11
    assert over.get("data") is None
    assert "exceeds maximum operation depth" in over["errors"][0]["message"]
    assert _codes(over) == ["QUERY_TOO_COMPLEX"]  # a limit on work, like the budget


async def test_introspection_is_not_counted_as_depth(acme):
    query = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } }"
    assert "errors" not in await acme.api.post(query)


async def test_too_many_aliases(acme, settings):
    aliases = " ".join(f"a{i}: viewer {{ __typename }}" for i in range(settings.max_aliases + 1))
    body = await acme.api.post(f"{{ {aliases} }}")
    assert "aliases" in body["errors"][0]["message"].lower()
    assert _codes(body) == ["QUERY_TOO_COMPLEX"]
    ok = " ".join(f"a{i}: viewer {{ __typename }}" for i in range(settings.max_aliases))
    assert "errors" not in await acme.api.post(f"{{ {ok} }}")


async def test_too_many_tokens(acme, settings):
    fields = " ".join("__typename" for _ in range(settings.max_tokens))
    body = await acme.api.post(f"{{ {fields} }}")
    assert "token" in body["errors"][0]["message"].lower()
    assert _codes(body) == ["GRAPHQL_PARSE_FAILED"]  # the parser stops reading


@pytest.mark.parametrize("first", [101, -1, 1000000])
async def test_page_size_is_bounded(acme, first):
    body = await acme.api.post(
        "query($f: Int) { accounts(first: $f) { totalCount } }", {"f": first}
    )
    assert _codes(body) == ["BAD_USER_INPUT"]
    assert "between 0 and 100" in body["errors"][0]["message"]


async def test_bad_cursor_is_a_clear_error(acme):
    for cursor in ["nonsense", "YXJyYXljb25uZWN0aW9uOi01"]:  # garbage; "arrayconnection:-5"
        body = await acme.api.post(
            "query($a: String) { contacts(after: $a) { totalCount } }", {"a": cursor}
        )
        assert _codes(body) == ["BAD_USER_INPUT"]


async def test_queries_over_get_but_never_mutations(acme, client):
    headers = {"Authorization": f"Bearer {acme.api.token}", "Accept": "application/json"}
    response = await client.get("/graphql", params={"query": "{ firm { slug } }"}, headers=headers)
    assert response.json() == {"data": {"firm": {"slug": "acme"}}}
    mutation = (
        'mutation { createAccount(input: {name: "Via GET", type: FAMILY}) { errors { code } } }'
    )
    response = await client.get("/graphql", params={"query": mutation}, headers=headers)
    assert response.status_code in (400, 405)
    total = await acme.api.data("{ accounts { totalCount } }")
    assert total["accounts"]["totalCount"] == 0


async def test_no_batching(acme, client):
    headers = {"Authorization": f"Bearer {acme.api.token}"}
    batch = [{"query": "{ firm { slug } }"}, {"query": "{ viewer { __typename } }"}]
    response = await client.post("/graphql", json=batch, headers=headers)
    assert response.status_code == 400
    assert "batch" in response.text.lower()


async def test_request_body_is_bounded(acme, client, settings):
    big = "x" * (settings.max_body_bytes + 1)
    headers = {"Authorization": f"Bearer {acme.api.token}"}
    response = await client.post(
        "/graphql", json={"query": "{ firm { slug } }", "variables": {"pad": big}}, headers=headers
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_unexpected_errors_are_masked_and_logged(acme, monkeypatch, caplog):
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail: connection string postgres://admin:pw@db")

    monkeypatch.setattr(records, "create_account", broken)
    with caplog.at_level(logging.ERROR):
        body = await acme.api.post(
            'mutation { createAccount(input: {name: "X", type: FAMILY}) { errors { code } } }'
        )
    assert body["errors"][0]["message"] == "Internal server error"
    assert _codes(body) == ["INTERNAL"]
    assert "secret" not in str(body)
    assert "secret detail" in caplog.text  # the log keeps the traceback


@pytest.fixture
async def production(clean_db, tmp_path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        env="production",
        database_url=clean_db.url,
        var_dir=tmp_path,
        secret_key="test-secret-key-of-enough-length",
        _env_file=None,
    )
    async with app_client(settings) as http:
        yield http


async def test_production_hides_introspection_and_graphiql(production):
    body = await Api(production).post("{ __schema { types { name } } }")
    assert "introspection" in body["errors"][0]["message"].lower()
    assert set(_codes(body)) == {"GRAPHQL_VALIDATION_FAILED"}
    page = await production.get("/graphql", headers={"Accept": "text/html"})
    assert "graphiql" not in page.text.lower()


CREATE = "mutation($i: CreateAccountInput!) { createAccount(input: $i) { errors { code } } }"

# Each names something close to a real name: graphql-core would suggest it.
MISSPELT = {
    "field": ("{ acounts { totalCount } }", None),
    "argument": ("{ accounts(frist: 1) { totalCount } }", None),
    "enum value": (
        'mutation { createAccount(input: {name: "X", type: FAMLY}) { errors { code } } }',
        None,
    ),
    "input field": (
        'mutation { createAccount(input: {nme: "X", type: FAMILY}) { errors { code } } }',
        None,
    ),
    "type": ("query($t: AccountTyp) { accounts(type: $t) { totalCount } }", None),
    "enum value in variables": (CREATE, {"i": {"name": "X", "type": "FAMLY"}}),
    "input field in variables": (CREATE, {"i": {"nme": "X", "type": "FAMILY"}}),
}


@pytest.mark.parametrize("kind", MISSPELT)
async def test_suggestions_only_in_development(kind, anon, production):
    document, variables = MISSPELT[kind]
    developing = await anon.post(document, variables)
    assert any("Did you mean" in e["message"] for e in developing["errors"]), developing
    body = await Api(production).post(document, variables)
    assert body["errors"], body
    assert not any("Did you mean" in e["message"] for e in body["errors"]), body
    assert None not in _codes(body), body
