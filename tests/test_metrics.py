"""/metrics (Prometheus text format) and /readyz, over HTTP: counters that move with real
requests, database figures read at scrape time, bounded labels, the token, production's 404,
several processes adding up, and readiness that names what failed (Redis included)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from models import Account, Mailbox, OutboundEmail, SyncStatus
from portico.app import create_app
from portico.settings import Settings
from schema import metrics as graphql_metrics
from services.loops.delivery import deliver_due
from services.outbound.transport import transport_for
from services.shared.pubsub import PUBLISHED_AT, EventBus, InProcessBus, RedisBus, Subscription
from services.shared.sessions import now
from tests.support import server
from tests.support.api import eventually
from tests.support.login import invitee, login_on
from tests.support.services import need_redis
from tests.support.smtp import smtp_fixture  # noqa: F401
from tests.support.sqlcount import count_sql
from tests.support.websocket import SYNCED, serving, socket

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(http: httpx.AsyncClient, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@contextlib.asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(settings, manage_db=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://portico.test") as http:
        yield http


async def test_graphql_and_http_counters_move_with_requests(client, acme):
    before = await scrape(client)
    await acme.api.data("query ListAccounts { accounts { totalCount } }")
    failed = await acme.api.post("query BrokenList { accounts { noSuchField } }")
    assert failed["errors"]
    assert (await client.get("/documents/RG9jdW1lbnQ6OTk5")).status_code == 404
    assert (await client.get("/no/such/page/4711")).status_code == 404
    after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ops = "portico_graphql_operations_total"
    assert moved(ops, operation="ListAccounts", outcome="ok") == 1
    assert moved(ops, operation="ListAccounts", outcome="error") == 0
    assert moved(ops, operation="BrokenList", outcome="error") == 1
    latency = "portico_graphql_operation_duration_seconds_count"
    assert moved(latency, operation="ListAccounts") == 1
    assert moved(latency, operation="BrokenList") == 1
    http = "portico_http_requests_total"
    assert moved(http, route="/graphql", method="POST", status="200") == 2
    # Routes by their template, never the raw path: an id or a scanner's path adds no series.
    assert moved(http, route="/documents/{id}", method="GET", status="404") == 1
    assert moved(http, route="unmatched", method="GET", status="404") == 1
    paths = {dict(labels).get("route") for (name, labels) in after if name == http}
    assert not any(path and ("4711" in path or "RG9j" in path) for path in paths)
    assert moved("portico_http_request_duration_seconds_count", route="/graphql") == 2


@pytest.fixture(autouse=True)
def fresh_operation_names() -> Iterator[None]:
    """The names a process has labelled so far are its own: each test starts with none."""
    graphql_metrics._operation_names.clear()
    yield
    graphql_metrics._operation_names.clear()


async def test_names_from_strangers_take_no_label(client, acme):
    """Made-up names (no session, or a name the document does not define) never use up the
    labels; a staff member's operation is still labelled by its name afterwards."""
    before = await scrape(client)
    for n in range(graphql_metrics.MAX_OPERATION_NAMES + 5):
        await client.post("/graphql", json={"query": f"query Junk{n} {{ __typename }}"})
    await client.post(
        "/graphql",
        json={"query": "query A { __typename }", "operationName": "NotInIt"},
        headers={"Authorization": f"Bearer {acme.api.token}"},
    )
    assert not graphql_metrics._operation_names
    await acme.api.data("query ListAccounts { accounts { totalCount } }")
    after = await scrape(client)
    ops = "portico_graphql_operations_total"

    def more(operation: str) -> float:
        return value(after, ops, operation=operation, outcome="ok") - value(
            before, ops, operation=operation, outcome="ok"
        )

    assert more("ListAccounts") == 1
    assert more("other") == graphql_metrics.MAX_OPERATION_NAMES + 5
    assert not any(dict(labels).get("operation", "").startswith("Junk") for _, labels in after)


async def test_anonymous_and_unbounded_operation_names(client, acme):
    before = await scrape(client)
    await acme.api.data("{ accounts { totalCount } }")
    await acme.api.data(f"query {'Long' * 20} {{ accounts {{ totalCount }} }}")
    for n in range(graphql_metrics.MAX_OPERATION_NAMES + 50):  # more names than labels allowed
        await acme.api.data(f"query Probe{n} {{ __typename }}")
    after = await scrape(client)
    ops = "portico_graphql_operations_total"
    anonymous = value(after, ops, operation="anonymous", outcome="ok")
    assert anonymous - value(before, ops, operation="anonymous", outcome="ok") == 1
    other = value(after, ops, operation="other", outcome="ok")
    assert other - value(before, ops, operation="other", outcome="ok") >= 51
    names = {dict(labels)["operation"] for (name, labels) in after if name == ops}
    names -= {dict(labels)["operation"] for (name, labels) in before if name == ops}
    names -= {"anonymous", "other"}
    assert (
        len(names) <= graphql_metrics.MAX_OPERATION_NAMES
    )  # new labels: at most the names allowed
    assert "Long" * 20 not in names


async def test_outbox_depth_follows_a_real_mutation(client, acme):
    empty = await scrape(client)
    assert value(empty, "portico_outbox_messages", status="QUEUED") == 0
    assert value(empty, "portico_outbox_oldest_queued_age_seconds") == 0
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)  # queues the invitation
    queued = await scrape(client)
    assert value(queued, "portico_outbox_messages", status="QUEUED") == 1
    assert 0 <= value(queued, "portico_outbox_oldest_queued_age_seconds") < 60
    await OutboundEmail.all().update(created_at=now() - timedelta(hours=1))
    aged = await scrape(client)
    assert 3590 < value(aged, "portico_outbox_oldest_queued_age_seconds") < 3700


async def test_mailbox_states_and_the_oldest_sync(client, acme):
    moment = now()
    for n, (state, synced) in enumerate(
        [
            (SyncStatus.IDLE, moment - timedelta(minutes=10)),
            (SyncStatus.FAILED, moment - timedelta(hours=2)),
            (SyncStatus.IDLE, None),
        ]
    ):
        address = f"office{n}@acme.example"
        await Mailbox.create(
            firm_id=acme.owner.firm_id,
            address=address,
            address_normalized=address,
            imap_host="imap.invalid",
            imap_port=993,
            smtp_host="smtp.invalid",
            smtp_port=465,
            username=address,
            password_encrypted="not-used",
            sync_status=state,
            last_synced_at=synced,
        )
    samples = await scrape(client)
    assert value(samples, "portico_mailboxes", state="IDLE") == 2
    assert value(samples, "portico_mailboxes", state="FAILED") == 1
    assert value(samples, "portico_mailboxes_never_synced") == 1
    assert 7190 < value(samples, "portico_mailbox_oldest_sync_age_seconds") < 7300
    # No mailbox's id or address in any label.
    assert not any("acme.example" in str(labels) for (_, labels) in samples)


async def test_the_token_is_required_when_set(settings):
    guarded = settings.model_copy(update={"metrics_token": "scrape-secret-1"})
    async with app_client(guarded) as http:
        refused = await http.get("/metrics")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer scrape-secret-2"})
        assert wrong.status_code == 401
        basic = await http.get("/metrics", headers={"Authorization": "Basic scrape-secret-1"})
        assert basic.status_code == 401
        assert "portico_outbox_messages" in str(await scrape(http, "scrape-secret-1"))


async def test_production_serves_metrics_only_with_a_token(settings):
    production = settings.model_copy(update={"env": "production", "secret_key": "k" * 44})
    async with app_client(production) as http:
        assert (await http.get("/metrics")).status_code == 404
    with_token = production.model_copy(update={"metrics_token": "scrape-secret-1"})
    async with app_client(with_token) as http:
        assert (await http.get("/metrics")).status_code == 401
        await scrape(http, "scrape-secret-1")


async def test_live_subscriptions_are_counted(acme, settings):
    gauge = "portico_live_subscriptions"
    async with serving(settings) as live:
        before = value(await scrape(live.http), gauge)
        async with socket(live.url, acme.api.token) as sock:
            await sock.subscribe("1", SYNCED)
            await live.subscribed(acme.owner.firm_id)
            assert value(await scrape(live.http), gauge) == before + 1
            await sock.send({"id": "1", "type": "complete"})

            async def back() -> bool:
                return value(await scrape(live.http), gauge) == before

            await eventually(back, "the ended subscription is no longer counted")


async def test_readiness_checks_redis_when_configured(settings):
    async with app_client(settings.model_copy(update={"redis_url": need_redis()})) as http:
        response = await http.get("/readyz")
        assert (response.status_code, response.json()) == (200, {"status": "ready"})


async def test_readiness_names_a_redis_that_refuses(settings):
    closed = f"redis://127.0.0.1:{server.free_port()}/0"
    async with app_client(settings.model_copy(update={"redis_url": closed})) as http:
        started = time.monotonic()
        response = await http.get("/readyz")
        assert time.monotonic() - started < 3
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable" and response.json()["failed"] == "redis"


async def test_readiness_does_not_hang_on_a_redis_that_never_answers(settings):
    # Accepts the connection and says nothing: a dead or wedged Redis behind a live port.
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        wedged = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
        async with app_client(wedged) as http:
            started = time.monotonic()
            response = await http.get("/readyz")
            assert time.monotonic() - started < 3
        assert response.status_code == 503 and response.json()["failed"] == "redis"
    finally:
        for writer in held:
            writer.close()
        listener.close()
        await listener.wait_closed()


def test_several_processes_add_up_in_multiprocess_mode(tmp_path: Path):
    """A `portico serve` process and another process sharing PROMETHEUS_MULTIPROC_DIR: a
    scrape of the server counts the other's operations too."""
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    live = _start_server(tmp_path / "api", env)
    try:
        query = {"query": "{ __typename }"}
        assert httpx.post(f"{live.url}/graphql", json=query).status_code == 200
        other = (
            "from schema import metrics; metrics.GRAPHQL_OPERATIONS.labels('anonymous', 'ok').inc()"
        )
        subprocess.run([sys.executable, "-c", other], env={**os.environ, **env}, check=True)
        samples = parse(httpx.get(f"{live.url}/metrics").text)
        ops = "portico_graphql_operations_total"
        assert value(samples, ops, operation="anonymous", outcome="ok") == 2
        assert value(samples, "portico_outbox_messages", status="QUEUED") == 0  # read once
        assert ("portico_outbox_messages", (("status", "QUEUED"),)) in samples
    finally:
        live.stop()


def _start_server(folder: Path, env: dict[str, str]) -> server.LiveServer:
    """server.start_server's process, given more time to get ready: a loaded CI machine
    takes its 30 s to import, migrate and seed."""
    port = server.free_port()
    (folder / "var").mkdir(parents=True)
    clean = {key: value for key, value in os.environ.items() if not key.startswith("PORTICO_")}
    clean.update(env, PORTICO_VAR_DIR=str(folder / "var"), PORTICO_ENV="development")
    log_path = folder / "portico.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*server.portico_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=folder,
            env=clean,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    live = server.LiveServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        live.wait_ready(timeout=120)
    except BaseException:
        live.stop()
        raise
    return live


DELIVERIES = "portico_deliveries_total"
STATEMENTS = "portico_sql_statements_per_request"


async def test_deliveries_are_counted_by_outcome(client, acme, settings, smtp):
    """Each attempt's outcome: a 451 is a retry, a refused recipient (bad input) and a last
    attempt that fails are failed, the retried message is sent in the end."""
    mail = settings.model_copy(update={"smtp_url": smtp.url})
    transport = transport_for(mail)
    before = await scrape(client)
    try:
        anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
        await login_on(acme.api, anna.account_email_id)
        smtp.fail_data("451 4.3.0 try later")
        assert await deliver_due(mail, transport) == 1
        smtp.refuse_rcpt("550 5.1.1 no such user")
        bob = await invitee(acme.api, "Jones Family", "bob@jones.example", "Bob")
        await login_on(acme.api, bob.account_email_id)
        assert await deliver_due(mail, transport) == 1
        smtp.refuse_rcpt(None)
        carol = await invitee(acme.api, "Brown Family", "carol@brown.example", "Carol")
        await login_on(acme.api, carol.account_email_id)
        smtp.fail_data("451 4.3.0 try later")
        assert await deliver_due(mail.model_copy(update={"mail_max_attempts": 1}), transport) == 1
        assert await deliver_due(mail, transport, now=now() + timedelta(days=1)) == 1
    finally:
        await transport.aclose()
    assert [str(m["To"]) for m in smtp.messages] == ["anna@miller.example"]
    after = await scrape(client)
    moved = {
        outcome: value(after, DELIVERIES, outcome=outcome)
        - value(before, DELIVERIES, outcome=outcome)
        for outcome in ("sent", "retry", "failed")
    }
    assert moved == {"sent": 1, "retry": 1, "failed": 2}
    outcomes = {dict(labels)["outcome"] for (name, labels) in after if name == DELIVERIES}
    assert outcomes == {"sent", "retry", "failed"}
    assert not any("example" in str(labels) for (_, labels) in after)


async def test_sql_statements_per_request_are_the_statements_sent(client, acme):
    """The histogram counts what Tortoise sent for each request (the same statements as its
    debug log, which tests/support/sqlcount.py reads), by route; nothing outside a request."""
    start = await scrape(client)
    query = "query Nested { accounts { edges { node { name contacts { firstName } } } } }"
    await acme.api.data(
        'mutation { createAccount(input: {name: "Lee", type: FAMILY}) { errors { code } } }'
    )
    before = await scrape(client)
    with count_sql() as sent:
        await acme.api.data(query)
    read = await scrape(client)
    with count_sql() as refused:
        malformed = await client.post(
            "/graphql", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert malformed.status_code == 400
        assert (await client.get("/no/such/page/4711")).status_code == 404
    bad = await scrape(client)
    with count_sql() as outside:
        await Account.all().count()  # no request: counted by the log only
    end = await scrape(client)

    def moved(a: Samples, b: Samples, suffix: str, route: str) -> float:
        name = f"{STATEMENTS}_{suffix}"
        return value(b, name, route=route) - value(a, name, route=route)

    assert len(sent) >= 3  # the session, the accounts, their contacts
    assert moved(before, read, "count", "/graphql") == 1
    assert moved(before, read, "sum", "/graphql") == len(sent)
    assert moved(read, bad, "count", "/graphql") == 1
    assert moved(read, bad, "count", "unmatched") == 1
    assert moved(read, bad, "sum", "/graphql") + moved(read, bad, "sum", "unmatched") == len(
        refused
    )
    assert len(outside) == 1 and moved(bad, end, "sum", "/graphql") == 0
    # Each scrape is counted too (after it answered): its two statements of outbox and mailboxes.
    assert moved(start, before, "count", "/metrics") >= 1
    assert moved(bad, end, "count", "/metrics") == 1
    assert moved(bad, end, "sum", "/metrics") == 2
    routes = {dict(labels)["route"] for (name, labels) in end if name.startswith(STATEMENTS)}
    assert not any("4711" in route for route in routes)


@pytest.mark.parametrize("backend", ["in-process", "redis"])
async def test_event_bus_lag_is_observed_once_per_event_received(client, backend):
    """The lag histogram counts each event a process receives for its subscribers; the
    publish time travels with the event but never reaches a subscriber."""
    lag = "portico_event_bus_lag_seconds"
    channel = f"metrics-test-{uuid.uuid4().hex}"
    here: EventBus
    there: EventBus
    if backend == "redis":
        here, there = RedisBus(need_redis()), RedisBus(need_redis())
    else:
        here = there = InProcessBus()
    try:
        async with here.subscribe(channel) as events:
            before = await scrape(client)
            event = {"kind": "message.synced", "messageId": 7, "accountIds": [1, 2]}
            await there.publish(channel, event)
            assert await _next(events) == event  # exactly what was published
            with pytest.raises(ValueError):  # the bus's own key is refused
                await there.publish(channel, {"n": 1, PUBLISHED_AT: 0})
            after = await scrape(client)
    finally:
        await here.close()
        await there.close()
    assert value(after, f"{lag}_count") - value(before, f"{lag}_count") == 1
    assert value(after, f"{lag}_sum") >= value(before, f"{lag}_sum")
    assert not any(channel in str(labels) for (_, labels) in after)


async def test_event_bus_lag_ignores_events_without_a_publish_time(client):
    """Through Redis, what another publisher sent: junk is dropped, an event without a
    publish time (an older process) or with one that is not a number is delivered and not
    observed, one from a clock ahead of ours counts as no lag at all."""
    lag = "portico_event_bus_lag_seconds"
    channel = f"metrics-test-{uuid.uuid4().hex}"
    bus = RedisBus(need_redis())
    raw = Redis.from_url(need_redis())
    try:
        async with bus.subscribe(channel) as events:
            before = await scrape(client)
            await raw.publish(channel, b"not json")
            await raw.publish(channel, b'{"n": 1}')
            await raw.publish(channel, b'{"n": 2, "%s": "yesterday"}' % PUBLISHED_AT.encode())
            await raw.publish(channel, b'{"n": 3, "%s": true}' % PUBLISHED_AT.encode())
            assert [await _next(events) for _ in range(3)] == [{"n": 1}, {"n": 2}, {"n": 3}]
            unobserved = await scrape(client)
            ahead = time.time() + 3600
            await raw.publish(channel, orjson.dumps({"n": 4, PUBLISHED_AT: ahead}))
            assert await _next(events) == {"n": 4}
            after = await scrape(client)
    finally:
        await bus.close()
        await raw.aclose()
    assert value(unobserved, f"{lag}_count") == value(before, f"{lag}_count")
    assert value(after, f"{lag}_count") - value(unobserved, f"{lag}_count") == 1
    assert value(after, f"{lag}_sum") == value(unobserved, f"{lag}_sum")


async def _next(events: Subscription) -> dict:
    async with asyncio.timeout(10):
        return await anext(events)
