"""Rate limits over HTTP and WebSocket: a bucket per client address without a session, one per
live session, 429 with Retry-After before anything runs, probes never refused, buckets shared
through Redis by every process, and the proxy's address header."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from models import SignInThrottle
from portico.app import create_app
from portico.rate_limit import address_key
from portico.settings import Settings
from services.shared.token_buckets import BucketPolicy, MemoryBuckets, RedisBuckets
from tests.support.api import api_for, make_firm
from tests.support.services import need_redis
from tests.support.sqlcount import count_sql
from tests.support.websocket import LEGACY_WS, TRANSPORT_WS, serving, socket

TYPENAME = {"query": "{ __typename }"}


def limited(settings: Settings, **overrides: Any) -> Settings:
    """`settings` with rate limits on: 3 anonymous requests at once, 5 per session."""
    values = {
        "rate_limit": True,
        "rate_limit_anonymous_burst": 3,
        "rate_limit_anonymous_per_second": 0.5,
        "rate_limit_session_burst": 5,
        "rate_limit_session_per_second": 0.5,
        **overrides,
    }
    return settings.model_copy(update=values)


@contextlib.asynccontextmanager
async def from_address(
    settings: Settings, address: str, app: Any = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app whose requests come from `address`."""
    app = app or create_app(settings, manage_db=False)
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://portico.test") as http:
        yield http


def random_address() -> str:
    """An address (a documentation /64 of its own) no other test run shares in Redis."""
    return f"2001:db8:{secrets.randbelow(65536):x}:{secrets.randbelow(65536):x}::1"


def refused(response: httpx.Response) -> int:
    """The Retry-After seconds of a 429, after checking its shape."""
    assert response.status_code == 429, response.text
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert "data" not in response.json()
    return int(response.headers["retry-after"])


async def test_an_address_gets_its_burst_then_429_with_retry_after(settings):
    async with from_address(limited(settings), "203.0.113.7") as http:
        for _ in range(3):
            assert (await http.post("/graphql", json=TYPENAME)).status_code == 200
        # Emptied at 0.5 a second: the next token is about 2 s away.
        assert refused(await http.post("/graphql", json=TYPENAME)) == 2
    async with from_address(limited(settings), "203.0.113.8") as other:
        assert (await other.post("/graphql", json=TYPENAME)).status_code == 200


async def test_a_refused_request_runs_nothing(settings):
    """A sign-in refused by the limit counts no failed attempt (nothing was written)."""
    sign_in = {
        "query": 'mutation { signIn(firm: "acme", email: "a@b.example", password: "wrong-one") '
        "{ errors { code } } }"
    }
    async with from_address(limited(settings), "203.0.113.9") as http:
        for _ in range(3):
            assert (await http.post("/graphql", json=TYPENAME)).status_code == 200
        assert await SignInThrottle.all().count() == 0
        refused(await http.post("/graphql", json=sign_in))
        assert await SignInThrottle.all().count() == 0


async def test_a_session_has_its_own_bucket_and_made_up_tokens_count_as_the_address(settings):
    tight = limited(settings)
    app = create_app(tight, manage_db=False)
    async with from_address(tight, "203.0.113.10", app) as http:
        acme = await make_firm(http, "acme")
        for _ in range(3):
            assert (await http.post("/graphql", json=TYPENAME)).status_code == 200
        refused(await http.post("/graphql", json=TYPENAME))
        made_up = {"Authorization": "Bearer " + secrets.token_urlsafe(32)}
        refused(await http.post("/graphql", json=TYPENAME, headers=made_up))
        # The address is out of tokens; the signed-in staff member is not.
        signed_in = {"Authorization": f"Bearer {acme.api.token}"}
        for _ in range(5):
            response = await http.post("/graphql", json=TYPENAME, headers=signed_in)
            assert response.status_code == 200
        refused(await http.post("/graphql", json=TYPENAME, headers=signed_in))
        # A download is counted in the same session bucket.
        refused(await http.get("/documents/RG9jdW1lbnQ6MQ==", headers=signed_in))


async def test_signing_in_again_buys_no_fresh_bucket(settings):
    """The bucket is the person's: a second session of the same staff member shares it."""
    tight = limited(settings)
    app = create_app(tight, manage_db=False)
    async with from_address(tight, "203.0.113.16", app) as http:
        acme = await make_firm(http, "acme")
        again = await api_for(http, acme.owner)
        first = {"Authorization": f"Bearer {acme.api.token}"}
        second = {"Authorization": f"Bearer {again.token}"}
        for headers in (first, second, first, second, first):
            assert (await http.post("/graphql", json=TYPENAME, headers=headers)).status_code == 200
        refused(await http.post("/graphql", json=TYPENAME, headers=second))


async def test_made_up_tokens_stop_reaching_the_database(settings):
    """Each unknown token is looked up (a query) at most as often as the address's lookup
    bucket allows (5 at once here); past that it is refused without a query."""
    async with from_address(limited(settings), "203.0.113.17") as http:
        for _ in range(5):
            made_up = {"Authorization": "Bearer " + secrets.token_urlsafe(32)}
            with count_sql() as sql:
                await http.post("/graphql", json=TYPENAME, headers=made_up)
            assert len(sql) == 1  # the session lookup
        made_up = {"Authorization": "Bearer " + secrets.token_urlsafe(32)}
        with count_sql() as sql:
            refused(await http.post("/graphql", json=TYPENAME, headers=made_up))
        assert sql == []


async def test_a_refusal_is_counted_under_its_route(settings):
    refusals = (
        "portico_http_requests_total",
        {"method": "POST", "route": "/graphql", "status": "429"},
    )

    def counted(text: str) -> float:
        name, labels = refusals
        return next(
            (
                s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if s.name == name and s.labels == labels
            ),
            0.0,
        )

    async with from_address(limited(settings), "203.0.113.18") as http:
        before = counted((await http.get("/metrics")).text)
        for _ in range(3):
            await http.post("/graphql", json=TYPENAME)
        refused(await http.post("/graphql", json=TYPENAME))
        assert counted((await http.get("/metrics")).text) == before + 1


async def test_probes_and_scrapes_are_never_refused(settings):
    async with from_address(limited(settings), "203.0.113.11") as http:
        for _ in range(4):
            await http.post("/graphql", json=TYPENAME)
        refused(await http.post("/graphql", json=TYPENAME))
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await http.get(path)).status_code == 200, path


async def test_a_429_carries_cors_headers_and_preflights_are_free(settings):
    origin = {"Origin": "http://localhost:5173"}
    async with from_address(limited(settings), "203.0.113.12") as http:
        for _ in range(5):  # preflights: answered by CORS, never counted
            preflight = await http.options(
                "/graphql", headers={**origin, "Access-Control-Request-Method": "POST"}
            )
            assert preflight.status_code == 200
        for _ in range(3):
            response = await http.post("/graphql", json=TYPENAME, headers=origin)
            assert response.status_code == 200
        response = await http.post("/graphql", json=TYPENAME, headers=origin)
        refused(response)
        assert response.headers["access-control-allow-origin"] == origin["Origin"]
        assert "retry-after" in response.headers["access-control-expose-headers"].lower()


async def test_tokens_come_back_at_the_rate(settings):
    quick = limited(settings, rate_limit_anonymous_burst=1, rate_limit_anonymous_per_second=20)
    async with from_address(quick, "203.0.113.13") as http:
        assert (await http.post("/graphql", json=TYPENAME)).status_code == 200
        assert refused(await http.post("/graphql", json=TYPENAME)) == 1
        await asyncio.sleep(0.2)  # four tokens' worth at 20 a second; the bucket holds one
        assert (await http.post("/graphql", json=TYPENAME)).status_code == 200
        refused(await http.post("/graphql", json=TYPENAME))


async def test_the_session_lookup_is_shared_with_the_request(settings):
    """With limits on, a signed-in request makes as many statements as with them off."""

    async def statements(config: Settings) -> tuple[int, int]:
        async with from_address(config, "203.0.113.14") as http:
            acme = await make_firm(http, f"acme{secrets.randbelow(10**6)}")
            with count_sql() as sql:
                await acme.api.data("{ accounts { totalCount } }")
            with count_sql() as download_sql:
                response = await http.get(
                    "/documents/RG9jdW1lbnQ6MQ==",
                    headers={"Authorization": f"Bearer {acme.api.token}"},
                )
            assert response.status_code == 404
            return len(sql), len(download_sql)

    off = await statements(settings)
    assert off[0] >= 2 and off[1] >= 1  # the session, then the work
    assert await statements(limited(settings)) == off


async def test_every_process_counts_against_the_same_bucket_in_redis(settings):
    shared = limited(settings, redis_url=need_redis())
    address = random_address()
    async with (
        from_address(shared, address) as first,
        from_address(shared, address) as second,
    ):
        for http in (first, second, first):
            assert (await http.post("/graphql", json=TYPENAME)).status_code == 200
        refused(await second.post("/graphql", json=TYPENAME))
        refused(await first.post("/graphql", json=TYPENAME))


async def test_a_redis_that_fails_leaves_each_process_counting_on_its_own(settings, caplog):
    """A Redis that accepts connections and never answers: the first request waits out the
    timeout, then the process counts in memory for a while (limits stay on) without trying
    Redis again on every request."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    wedged = limited(settings, redis_url=f"redis://127.0.0.1:{port}/0")
    try:
        async with from_address(wedged, "203.0.113.15") as http:
            for _ in range(3):
                assert (await http.post("/graphql", json=TYPENAME)).status_code == 200
            refused(await http.post("/graphql", json=TYPENAME))
        assert len(held) == 1  # one connection tried, then no more during the pause
    finally:
        for writer in held:
            writer.close()
        listener.close()
        await listener.wait_closed()
    warnings = [r for r in caplog.records if r.name == "portico.rate_limit"]
    assert len(warnings) == 1 and "Redis failed (TimeoutError)" in warnings[0].getMessage()


async def test_redis_buckets_refill_and_expire():
    buckets = RedisBuckets(need_redis(), prefix=f"portico:test:{secrets.token_hex(8)}:")
    policy = BucketPolicy(rate=10, burst=2)
    try:
        assert [await buckets.take("k", policy) for _ in range(2)] == [0.0, 0.0]
        wait = await buckets.take("k", policy)
        assert 0 < wait <= 0.1
        ttl = await buckets._redis.pttl(buckets.prefix + "k")
        assert 0 < ttl <= 1200  # expires once it would be full again (0.2 s) plus a second
        await asyncio.sleep(wait + 0.05)
        assert await buckets.take("k", policy) == 0.0
    finally:
        await buckets._redis.delete(buckets.prefix + "k")
        await buckets.aclose()


async def test_a_websocket_handshake_over_the_limit_is_answered_429(settings):
    async with serving(limited(settings)) as served:
        for _ in range(3):
            assert (await served.http.post("/graphql", json=TYPENAME)).status_code == 200
        url = served.url.replace("http", "ws") + "/graphql"
        with pytest.raises(websockets.InvalidStatus) as caught:
            async with websockets.connect(url, subprotocols=[TRANSPORT_WS]):
                pass
        assert caught.value.response.status_code == 429
        assert int(caught.value.response.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_operations_over_one_websocket_take_tokens_too(settings, protocol):
    """An anonymous socket counts against its address (the handshake took one of the three);
    a signed-in socket against its session."""
    async with serving(limited(settings)) as served:
        async with socket(served.url, protocol=protocol) as anonymous:
            for op_id in ("1", "2"):
                assert (await anonymous.answer(op_id, "{ __typename }"))["data"]
            await anonymous.subscribe("3", "{ __typename }")
            [error] = await anonymous.refused("3")
            assert error["extensions"]["code"] == "RATE_LIMITED"
            assert "retry in 2 s" in error["message"]
        acme = await make_firm(served.http, "acme")
        bearer = {"Authorization": f"Bearer {acme.api.token}"}
        async with socket(served.url, protocol=protocol, headers=bearer) as signed_in:
            for op_id in "1234":  # the handshake took the session's fifth token
                assert (await signed_in.answer(op_id, "{ __typename }"))["data"]
            await signed_in.subscribe("5", "{ __typename }")
            [error] = await signed_in.refused("5")
            assert error["extensions"]["code"] == "RATE_LIMITED"


async def test_repeated_connection_inits_take_tokens(settings):
    """graphql-ws lets a client send connection_init again (each looks the session up):
    each one after the first is a request."""
    async with serving(limited(settings)) as served:
        acme = await make_firm(served.http, "acme")
        bearer = {"Authorization": f"Bearer {acme.api.token}"}
        async with socket(served.url, acme.api.token, LEGACY_WS, headers=bearer) as legacy:
            for _ in range(4):  # the handshake took the fifth
                await legacy.send({"type": "connection_init", "payload": {}})
                assert (await legacy.receive())["type"] == "connection_ack"
            await legacy.send({"type": "connection_init", "payload": {}})
            error = await legacy.receive()
            assert error["type"] == "connection_error", error
            assert error["payload"]["extensions"]["code"] == "RATE_LIMITED"


async def test_the_proxy_address_header_names_the_client(settings):
    behind = limited(settings, client_address_header="X-Real-IP")
    app = create_app(behind, manage_db=False)
    async with from_address(behind, "10.0.0.2", app) as proxy:
        for _ in range(3):
            ok = await proxy.post("/graphql", json=TYPENAME, headers={"X-Real-IP": "198.51.100.1"})
            assert ok.status_code == 200
        refused(await proxy.post("/graphql", json=TYPENAME, headers={"X-Real-IP": "198.51.100.1"}))
        other = await proxy.post("/graphql", json=TYPENAME, headers={"X-Real-IP": "198.51.100.2"})
        assert other.status_code == 200
        # Not an address: the connection's own (the proxy's) is counted.
        for _ in range(3):
            junk = await proxy.post("/graphql", json=TYPENAME, headers={"X-Real-IP": "nope"})
            assert junk.status_code == 200
        refused(await proxy.post("/graphql", json=TYPENAME))
        # A proxy that adds its copy after the client's: the last copy is the proxy's.
        forged = [("X-Real-IP", "198.51.100.1"), ("X-Real-IP", "198.51.100.3")]
        assert (await proxy.post("/graphql", json=TYPENAME, headers=forged)).status_code == 200


def test_ipv6_clients_are_counted_by_their_64():
    def key(host: str) -> str:
        return address_key({"client": (host, 1)})

    assert key("2001:db8:1:2::1") == key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert key("2001:db8:1:3::1") != key("2001:db8:1:2::1")
    assert key("::ffff:192.0.2.1") == "192.0.2.1"
    assert key("192.0.2.1") == "192.0.2.1"
    assert address_key({"client": None}) == "unknown"


async def test_memory_buckets_stay_bounded():
    buckets = MemoryBuckets(max_keys=3)
    policy = BucketPolicy(rate=0.001, burst=1)
    for key in "abcd":
        assert await buckets.take(key, policy) == 0.0
    assert len(buckets._buckets) == 3
    assert await buckets.take("d", policy) > 0  # the newest kept its state
    assert await buckets.take("a", policy) == 0.0  # the oldest was let go: a full bucket


def test_limits_are_on_in_production_and_bad_settings_refused(tmp_path):
    base = {"var_dir": tmp_path, "_env_file": None}
    assert Settings(**base).rate_limit_enabled is False
    production = Settings(**base, env="production", secret_key="k" * 32)
    assert production.rate_limit_enabled is True
    assert Settings(**base, env="production", rate_limit=False).rate_limit_enabled is False
    for bad in (
        {"rate_limit_anonymous_per_second": 0},
        {"rate_limit_session_burst": 0},
        {"rate_limit_session_per_second": -1},
        {"rate_limit_anonymous_per_second": 1e-9},  # a bucket that would never refill
    ):
        with pytest.raises(ValidationError):
            Settings(**base, **bad)
