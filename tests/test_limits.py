"""Abuse limits: depth, aliases, tokens, page size, GET mutations, batching, body size;
masked internal errors; production hides introspection and suggestions."""

from __future__ import annotations

import logging

import httpx
import pytest

from portico.app import create_app
from portico.settings import Settings
from services.crm import records
from tests.support.api import Api


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
    at_limit = await acme.api.post(_nested(7))  # depth 10
    assert "errors" not in at_limit, at_limit
    over = await acme.api.post(_nested(8))  # depth 11
    assert over.get("data") is None
    assert "exceeds maximum operation depth" in over["errors"][0]["message"]


async def test_introspection_is_not_counted_as_depth(acme):
    query = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } }"
    assert "errors" not in await acme.api.post(query)


async def test_too_many_aliases(acme, settings):
    aliases = " ".join(f"a{i}: viewer {{ __typename }}" for i in range(settings.max_aliases + 1))
    body = await acme.api.post(f"{{ {aliases} }}")
    assert "aliases" in body["errors"][0]["message"].lower()
    ok = " ".join(f"a{i}: viewer {{ __typename }}" for i in range(settings.max_aliases))
    assert "errors" not in await acme.api.post(f"{{ {ok} }}")


async def test_too_many_tokens(acme, settings):
    fields = " ".join("__typename" for _ in range(settings.max_tokens))
    body = await acme.api.post(f"{{ {fields} }}")
    assert "token" in body["errors"][0]["message"].lower()


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


async def test_production_hides_introspection_and_suggestions(clean_db, tmp_path):
    settings = Settings(
        env="production",
        database_url=clean_db.url,
        var_dir=tmp_path,
        secret_key="test-secret-key-of-enough-length",
        _env_file=None,
    )
    app = create_app(settings, manage_db=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://p"
    ) as http:
        api = Api(http)
        body = await api.post("{ __schema { types { name } } }")
        assert "introspection" in body["errors"][0]["message"].lower()
        body = await api.post("{ acounts { totalCount } }")
        assert "Did you mean" not in body["errors"][0]["message"]
        page = await http.get("/graphql", headers={"Accept": "text/html"})
        assert "graphiql" not in page.text.lower()
