"""Webhook endpoints through the API (owners and admins): registering, changing, deleting,
the secret shown once and rotated with an overlap, tenancy, permissions and refused input;
the signer checked against the Standard Webhooks reference library (standardwebhooks)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import re
import string
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from models import StaffRole, WebhookDelivery, WebhookEndpoint
from portico.app import create_app
from portico.settings import Settings
from services.shared import sessions
from services.webhooks import emit, endpoints, signing
from tests.support.api import Api, Firm, add_staff, api_for, make_firm
from tests.support.databases import Database
from tests.support.login import portal_user
from tests.support.sqlcount import count_sql

FIELDS = "id url events enabled disabledReason createdAt"
PAYLOAD = f"errors {{ code field message }} secret endpoint {{ {FIELDS} }}"
CREATE = f"""
mutation ($input: WebhookEndpointInput!) {{ createWebhookEndpoint(input: $input) {{ {PAYLOAD} }} }}
"""
UPDATE = f"""
mutation ($id: ID!, $input: WebhookEndpointInput!) {{
  updateWebhookEndpoint(id: $id, input: $input) {{ {PAYLOAD} }}
}}"""
DELETE = f"mutation ($id: ID!) {{ deleteWebhookEndpoint(id: $id) {{ {PAYLOAD} }} }}"
ROTATE = f"mutation ($id: ID!) {{ rotateWebhookSecret(id: $id) {{ {PAYLOAD} }} }}"
LIST = f"{{ webhookEndpoints {{ {FIELDS} }} }}"
NODE = "query ($id: ID!) { node(id: $id) { __typename id ... on WebhookEndpoint { url } } }"
DELIVERIES = """
query ($first: Int, $after: String) { webhookEndpoints { id deliveries(first: $first, after: $after) {
  totalCount pageInfo { hasNextPage endCursor }
  edges { node { id eventId event status attempts lastStatusCode lastError nextAttemptAt } }
} } }"""

SECRET = re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")  # 32 bytes in base64
PUBLIC_IP = "93.184.215.14"  # an address on the public internet: no DNS lookup needed
HOOK = {"url": "https://hooks.example/portico", "events": ["INVITATION_SENT", "MESSAGE_SYNCED"]}


def codes(payload: dict) -> list[tuple[str, str | None]]:
    return [(e["code"], e["field"][-1] if e["field"] else None) for e in payload["errors"]]


def refusal(body: dict) -> str | None:
    return next((e.get("extensions", {}).get("code") for e in body.get("errors", [])), None)


async def create(api: Api, **values: object) -> dict:
    return (await api.data(CREATE, {"input": {**HOOK, **values}}))["createWebhookEndpoint"]


async def client_api(firm: Firm, http: httpx.AsyncClient) -> Api:
    user = await portal_user(firm.owner.firm_id)
    token, _ = await sessions.start_client_session(user, timedelta(hours=1), None)
    return Api(http, token)


# ---------------------------------------------------------------- the secret, shown once


async def test_create_answers_the_secret_once_and_stores_it_encrypted(acme, settings, caplog):
    with caplog.at_level(logging.DEBUG):  # the SQL statements and their parameters too
        payload = await create(acme.api, url="http://127.0.0.1:9/hook")  # development: http
    assert payload["errors"] == []
    secret = payload["secret"]
    assert SECRET.match(secret) and len(signing.key_of(secret)) == signing.KEY_BYTES
    endpoint = payload["endpoint"]
    assert endpoint["url"] == "http://127.0.0.1:9/hook"
    assert endpoint["events"] == ["INVITATION_SENT", "MESSAGE_SYNCED"]
    assert endpoint["enabled"] is True and endpoint["disabledReason"] is None

    # Nowhere in the row in clear, but readable with the derived key.
    [row] = await WebhookEndpoint.all()
    assert row.firm_id == acme.owner.firm_id
    assert row.events == ["invitation.sent", "message.synced"]  # the wire names
    [raw] = await WebhookEndpoint.filter(pk=row.pk).values()
    key = secret.removeprefix("whsec_")
    assert "webhook endpoint" in caplog.text and key not in caplog.text
    assert all(key not in str(value) and secret not in str(value) for value in raw.values())
    assert endpoints.decrypt_secret(settings, row.secret_encrypted) == secret
    assert endpoints.signing_secrets(settings, row) == [secret]

    # Never readable again: the list, the node and an update do not carry it.
    listed = await acme.api.data(LIST)
    assert listed["webhookEndpoints"] == [endpoint]
    node = await acme.api.data(NODE, {"id": endpoint["id"]})
    assert node["node"] == {
        "__typename": "WebhookEndpoint",
        "id": endpoint["id"],
        "url": endpoint["url"],
    }
    updated = await acme.api.data(UPDATE, {"id": endpoint["id"], "input": HOOK})
    assert updated["updateWebhookEndpoint"]["secret"] is None
    assert refusal(await acme.api.post("{ webhookEndpoints { secret } }")) == (
        "GRAPHQL_VALIDATION_FAILED"
    )
    for body in (listed, node, updated):
        assert key not in json.dumps(body)

    # Each endpoint has its own secret.
    other = await create(acme.api)
    assert other["secret"] != secret


async def test_rotation_signs_with_both_secrets_for_a_day(acme, settings):
    made = await create(acme.api)
    old, endpoint_id = made["secret"], made["endpoint"]["id"]
    before = datetime.now(UTC)
    rotated = (await acme.api.data(ROTATE, {"id": endpoint_id}))["rotateWebhookSecret"]
    assert rotated["errors"] == [] and rotated["endpoint"] == made["endpoint"]
    new = rotated["secret"]
    assert SECRET.match(new) and new != old

    [row] = await WebhookEndpoint.all()
    assert endpoints.decrypt_secret(settings, row.secret_encrypted) == new
    expires = row.previous_secret_expires_at
    assert expires is not None
    assert before + timedelta(hours=24) <= expires <= datetime.now(UTC) + timedelta(hours=24)
    assert endpoints.signing_secrets(settings, row) == [new, old]
    assert endpoints.signing_secrets(settings, row, expires - timedelta(seconds=1)) == [new, old]
    assert endpoints.signing_secrets(settings, row, expires) == [new]

    # During the overlap a receiver holding either secret verifies the same request.
    body = json.dumps({"type": "invitation.sent", "timestamp": "now", "data": {}})
    headers = signing.headers(
        endpoints.signing_secrets(settings, row), "msg_1", int(time.time()), body
    )
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert Webhook(secret).verify(body, headers) == json.loads(body)

    # Rotating again: the first secret stops signing at once.
    newest = (await acme.api.data(ROTATE, {"id": endpoint_id}))["rotateWebhookSecret"]["secret"]
    [row] = await WebhookEndpoint.all()
    assert endpoints.signing_secrets(settings, row) == [newest, new]
    headers = signing.headers(
        endpoints.signing_secrets(settings, row), "msg_2", int(time.time()), body
    )
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers)


# ---------------------------------------------------------------- the signer


def _bodies(count: int) -> list[str]:
    """JSON bodies as the sender makes them, with unicode, quotes and nesting."""
    rng = random.Random(16)
    alphabet = string.printable + "éß€😀\u2028"
    bodies = []
    for i in range(count):
        data = {
            "".join(rng.choices(string.ascii_letters, k=5)): "".join(
                rng.choices(alphabet, k=rng.randrange(0, 200))
            )
            for _ in range(rng.randrange(0, 6))
        }
        event = {"type": "message.synced", "timestamp": f"2026-11-30T12:00:{i % 60:02}Z"}
        bodies.append(json.dumps({**event, "data": data}, ensure_ascii=rng.random() < 0.5))
    return bodies


def test_the_reference_library_verifies_our_signatures_and_refuses_tampering():
    rng = random.Random(7)
    for n, body in enumerate(_bodies(60)):
        secret = signing.new_secret()
        msg_id = f"msg_{n}_{rng.getrandbits(64):x}"
        now = int(time.time())
        headers = signing.headers([secret], msg_id, now, body)
        assert Webhook(secret).verify(body, headers) == json.loads(body)
        assert Webhook(secret).verify(body.encode(), headers) == json.loads(body)
        # Their signer and ours write the same signature.
        when = datetime.fromtimestamp(now, UTC)
        assert Webhook(secret).sign(msg_id, when, body) == signing.sign(secret, msg_id, now, body)

        tampered = [
            (body + " ", headers),
            (body, {**headers, "webhook-id": msg_id + "x"}),
            (body, {**headers, "webhook-timestamp": str(now - 1)}),
            (body, {**headers, "webhook-signature": _flip(headers["webhook-signature"])}),
        ]
        for data, sent in tampered:
            with pytest.raises(WebhookVerificationError):
                Webhook(secret).verify(data, sent)
        with pytest.raises(WebhookVerificationError):  # another endpoint's secret
            Webhook(signing.new_secret()).verify(body, headers)


def test_a_signature_is_v1_and_the_base64_hmac_of_id_timestamp_and_body():
    key = bytes(range(32))
    secret = "whsec_" + base64.b64encode(key).decode()
    expected = hmac.new(key, b"msg_1.1674087231.{}", hashlib.sha256).digest()
    assert (
        signing.sign(secret, "msg_1", 1674087231, "{}")
        == "v1," + base64.b64encode(expected).decode()
    )
    for bad in ("", "whsec_", "whsec_not base64!", base64.b64encode(key).decode()):
        with pytest.raises(signing.BadSecret):
            signing.key_of(bad)


def _flip(signature: str) -> str:
    version, value = signature.split(",", 1)
    raw = bytearray(base64.b64decode(value))
    raw[0] ^= 1
    return f"{version},{base64.b64encode(bytes(raw)).decode()}"


# ---------------------------------------------------------------- update and delete


async def test_update_replaces_url_events_and_enabled_and_keeps_the_secret(acme, settings):
    made = await create(acme.api)
    endpoint_id = made["endpoint"]["id"]
    changed = {"url": "https://other.example/in", "events": ["CLIENT_SIGNED_IN"], "enabled": False}
    payload = (await acme.api.data(UPDATE, {"id": endpoint_id, "input": changed}))[
        "updateWebhookEndpoint"
    ]
    assert payload["errors"] == [] and payload["secret"] is None
    assert payload["endpoint"] == {
        **made["endpoint"],
        "url": "https://other.example/in",
        "events": ["CLIENT_SIGNED_IN"],
        "enabled": False,
    }
    [row] = await WebhookEndpoint.all()
    assert endpoints.decrypt_secret(settings, row.secret_encrypted) == made["secret"]

    # Enabling an endpoint Portico disabled clears the reason.
    await WebhookEndpoint.filter(pk=row.pk).update(disabled_reason="failing since Monday")
    again = (await acme.api.data(UPDATE, {"id": endpoint_id, "input": HOOK}))[
        "updateWebhookEndpoint"
    ]
    assert again["endpoint"]["enabled"] is True and again["endpoint"]["disabledReason"] is None


async def test_delete_removes_the_endpoint_and_its_deliveries(acme):
    made = await create(acme.api)
    keep = await create(acme.api, url="https://keep.example/")
    row = await WebhookEndpoint.get(url=HOOK["url"])
    await _delivery(row, "evt_1")
    kept = await _delivery(await WebhookEndpoint.get(url="https://keep.example/"), "evt_2")

    payload = (await acme.api.data(DELETE, {"id": made["endpoint"]["id"]}))["deleteWebhookEndpoint"]
    assert payload["errors"] == [] and payload["endpoint"] == made["endpoint"]
    assert payload["secret"] is None
    assert [e["id"] for e in (await acme.api.data(LIST))["webhookEndpoints"]] == [
        keep["endpoint"]["id"]
    ]
    assert [d.pk for d in await WebhookDelivery.all()] == [kept.pk]
    assert (await acme.api.data(NODE, {"id": made["endpoint"]["id"]}))["node"] is None
    for document in (DELETE, ROTATE):
        gone = await acme.api.data(document, {"id": made["endpoint"]["id"]})
        [payload] = gone.values()
        assert codes(payload) == [("NOT_FOUND", "id")] and payload["endpoint"] is None


# ---------------------------------------------------------------- tenancy and permissions


async def test_another_firms_endpoint_is_not_found(acme, globex, settings):
    made = await create(acme.api)
    endpoint_id = made["endpoint"]["id"]
    for document, variables in (
        (UPDATE, {"id": endpoint_id, "input": {**HOOK, "url": "https://globex.example/"}}),
        (ROTATE, {"id": endpoint_id}),
        (DELETE, {"id": endpoint_id}),
    ):
        [payload] = (await globex.api.data(document, variables)).values()
        assert codes(payload) == [("NOT_FOUND", "id")]
        assert payload["endpoint"] is None and payload["secret"] is None
    assert (await globex.api.data(NODE, {"id": endpoint_id}))["node"] is None
    assert (await globex.api.data(LIST))["webhookEndpoints"] == []
    # An id of another type is not an endpoint either.
    firm_id = (await acme.api.data("{ firm { id } }"))["firm"]["id"]
    [payload] = (await acme.api.data(ROTATE, {"id": firm_id})).values()
    assert codes(payload) == [("NOT_FOUND", "id")]

    [row] = await WebhookEndpoint.all()
    assert (row.url, row.previous_secret_encrypted) == (HOOK["url"], None)
    assert endpoints.decrypt_secret(settings, row.secret_encrypted) == made["secret"]


async def test_only_owners_and_admins_see_or_change_endpoints(acme, client, anon):
    made = await create(acme.api)
    endpoint_id = made["endpoint"]["id"]
    delivery = await _delivery(await WebhookEndpoint.get(), "evt_1")
    delivery_id = _global_id("WebhookDelivery", delivery.pk)

    admin = await api_for(client, await add_staff(acme, "ada@acme.example", StaffRole.ADMIN))
    assert [e["id"] for e in (await admin.data(LIST))["webhookEndpoints"]] == [endpoint_id]
    assert (await admin.data(NODE, {"id": delivery_id}))["node"]["id"] == delivery_id
    assert (await admin.data(ROTATE, {"id": endpoint_id}))["rotateWebhookSecret"]["secret"]

    employee = await api_for(
        client,
        await add_staff(acme, "erin@acme.example", can_manage_accounts=True, can_use_inbox=True),
    )
    portal = await client_api(acme, client)
    writes = (
        (CREATE, {"input": HOOK}),
        (UPDATE, {"id": endpoint_id, "input": {**HOOK, "url": "https://evil.example/"}}),
        (ROTATE, {"id": endpoint_id}),
        (DELETE, {"id": endpoint_id}),
    )
    for api, expected in (
        (employee, "FORBIDDEN"),
        (portal, "FORBIDDEN"),
        (anon, "UNAUTHENTICATED"),
    ):
        assert refusal(await api.post(LIST)) == expected
        for document, variables in writes:
            body = await api.post(document, variables)
            assert refusal(body) == expected and body["data"] is None
        for node_id in (endpoint_id, delivery_id):
            assert (await api.data(NODE, {"id": node_id}))["node"] is None
    assert await WebhookEndpoint.all().count() == 1
    assert (await WebhookEndpoint.get()).url == HOOK["url"]


# ---------------------------------------------------------------- refused input


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "hooks.example/in",
        "ftp://hooks.example/in",
        "javascript:alert(1)",
        "https://",
        "https://user:pw@hooks.example/in",
        "https://hooks.example/in#part",
        "https://hooks.example:99999/in",
        "https://hooks.example/a b",
        "https://hooks.example/a\tb",
        "https://" + "a" * 2050 + ".example/",
    ],
)
async def test_a_bad_url_is_invalid_url_and_saves_nothing(acme, url):
    payload = await create(acme.api, url=url)
    assert codes(payload) == [("INVALID_URL", "url")]
    assert payload["endpoint"] is None and payload["secret"] is None
    assert await WebhookEndpoint.all().count() == 0


async def test_events_must_be_given_once_each(acme):
    empty = await create(acme.api, events=[])
    assert codes(empty) == [("INVALID_EVENTS", "events")]
    twice = await create(
        acme.api, events=["INVITATION_SENT", "CLIENT_SIGNED_IN", "INVITATION_SENT"]
    )
    assert codes(twice) == [("INVALID_EVENTS", "events")]
    assert "INVITATION_SENT" in twice["errors"][0]["message"]
    # Every problem at once.
    both = await create(acme.api, url="ftp://x", events=[])
    assert codes(both) == [("INVALID_EVENTS", "events"), ("INVALID_URL", "url")]
    assert await WebhookEndpoint.all().count() == 0


async def test_a_failed_update_changes_nothing(acme, settings):
    made = await create(acme.api)
    bad = {"url": "ftp://x", "events": ["CLIENT_SIGNED_IN"], "enabled": False}
    [payload] = (await acme.api.data(UPDATE, {"id": made["endpoint"]["id"], "input": bad})).values()
    assert codes(payload) == [("INVALID_URL", "url")] and payload["endpoint"] is None
    assert (await acme.api.data(LIST))["webhookEndpoints"] == [made["endpoint"]]


async def test_a_firm_has_at_most_the_endpoint_limit(acme, globex):
    for i in range(endpoints.MAX_ENDPOINTS):
        assert (await create(acme.api, url=f"https://hooks.example/{i}"))["errors"] == []
    over = await create(acme.api, url="https://hooks.example/over")
    assert codes(over) == [("WEBHOOK_LIMIT_REACHED", None)]
    assert str(endpoints.MAX_ENDPOINTS) in over["errors"][0]["message"]
    assert over["secret"] is None
    assert (
        await WebhookEndpoint.filter(firm_id=acme.owner.firm_id).count() == endpoints.MAX_ENDPOINTS
    )
    # Another firm has its own places; a deleted endpoint frees one.
    assert (await create(globex.api))["errors"] == []
    first = (await acme.api.data(LIST))["webhookEndpoints"][0]["id"]
    await acme.api.ok(DELETE, {"id": first})
    assert (await create(acme.api, url="https://hooks.example/again"))["errors"] == []


async def test_a_bad_page_in_the_payload_refuses_before_anything_is_written(acme):
    document = """mutation ($input: WebhookEndpointInput!) { createWebhookEndpoint(input: $input) {
      secret endpoint { deliveries(first: -1) { totalCount } } } }"""
    body = await acme.api.post(document, {"input": HOOK})
    assert refusal(body) == "BAD_USER_INPUT"
    assert await WebhookEndpoint.all().count() == 0


# ---------------------------------------------------------------- production


@pytest.fixture
async def production(clean_db: Database, tmp_path: Path) -> AsyncIterator[Firm]:
    """A firm served by an app with production settings."""
    settings = Settings(
        env="production",
        secret_key="test-secret-key-for-production",
        database_url=clean_db.url,
        var_dir=tmp_path / "var",
        _env_file=None,
    )
    app = create_app(settings, manage_db=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://portico.test") as http:
        yield await make_firm(http, "prod")


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://localhost:8443/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:192.168.0.1]/hook",
        "https://0.0.0.0/hook",
    ],
)
async def test_production_refuses_hosts_off_the_public_internet(production, url):
    payload = await create(production.api, url=url)
    assert codes(payload) == [("HOST_NOT_ALLOWED", "url")]
    assert "public internet" in payload["errors"][0]["message"]
    assert await WebhookEndpoint.all().count() == 0


async def test_production_wants_https_and_a_public_host(production):
    plain = await create(production.api, url=f"http://{PUBLIC_IP}/hook")
    assert codes(plain) == [("INVALID_URL", "url")] and "https://" in plain["errors"][0]["message"]
    made = await create(production.api, url=f"https://{PUBLIC_IP}:8443/hook")
    assert made["errors"] == [] and made["endpoint"]["url"] == f"https://{PUBLIC_IP}:8443/hook"
    # An update to a private host is refused and changes nothing.
    moved = {**HOOK, "url": "https://192.168.1.10/hook"}
    [payload] = (
        await production.api.data(UPDATE, {"id": made["endpoint"]["id"], "input": moved})
    ).values()
    assert codes(payload) == [("HOST_NOT_ALLOWED", "url")]
    assert (await WebhookEndpoint.get()).url == f"https://{PUBLIC_IP}:8443/hook"


# ---------------------------------------------------------------- deliveries and SQL counts


async def _delivery(endpoint: WebhookEndpoint, event_id: str, **values: object) -> WebhookDelivery:
    return await WebhookDelivery.create(
        firm_id=endpoint.firm_id,
        endpoint=endpoint,
        event_id=event_id,
        event="invitation.sent",
        payload={"type": "invitation.sent"},
        **values,
    )


def _global_id(type_name: str, pk: int) -> str:
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode()


async def test_deliveries_page_newest_first(acme, globex):
    await create(acme.api)
    endpoint = await WebhookEndpoint.get()
    made = [await _delivery(endpoint, f"evt_{i}", attempts=i) for i in range(5)]
    await _delivery(
        await WebhookEndpoint.get(id=endpoint.pk),
        "evt_failed",
        status="FAILED",
        last_status_code=500,
        last_error="Internal Server Error",
    )
    first = (await acme.api.data(DELIVERIES, {"first": 4}))["webhookEndpoints"][0]["deliveries"]
    assert first["totalCount"] == 6 and first["pageInfo"]["hasNextPage"] is True
    nodes = [edge["node"] for edge in first["edges"]]
    assert [n["eventId"] for n in nodes] == ["evt_failed", "evt_4", "evt_3", "evt_2"]
    assert nodes[0] == {
        "id": _global_id("WebhookDelivery", made[-1].pk + 1),
        "eventId": "evt_failed",
        "event": "INVITATION_SENT",
        "status": "FAILED",
        "attempts": 0,
        "lastStatusCode": 500,
        "lastError": "Internal Server Error",
        "nextAttemptAt": None,
    }
    rest = await acme.api.data(DELIVERIES, {"first": 4, "after": first["pageInfo"]["endCursor"]})
    rest_page = rest["webhookEndpoints"][0]["deliveries"]
    assert [e["node"]["eventId"] for e in rest_page["edges"]] == ["evt_1", "evt_0"]
    assert rest_page["pageInfo"]["hasNextPage"] is False
    # A delivery of another firm is not found by id.
    assert (await globex.api.data(NODE, {"id": nodes[0]["id"]}))["node"] is None
    assert refusal(await acme.api.post(DELIVERIES, {"first": 1000})) == "BAD_USER_INPUT"


async def test_the_list_costs_the_same_statements_for_1_and_for_10_endpoints(acme):
    async def statements() -> tuple[int, dict]:
        with count_sql() as found:
            data = await acme.api.data(DELIVERIES, {"first": 2})
        return len(found), data

    await create(acme.api, url="https://hooks.example/0")
    await _delivery(await WebhookEndpoint.get(), "evt_0")
    small, data = await statements()
    assert len(data["webhookEndpoints"]) == 1
    for i in range(1, endpoints.MAX_ENDPOINTS):
        await create(acme.api, url=f"https://hooks.example/{i}")
    for i, row in enumerate(await WebhookEndpoint.all()):
        await _delivery(row, f"evt_more_{i}")
    large, data = await statements()
    assert len(data["webhookEndpoints"]) == endpoints.MAX_ENDPOINTS
    assert all(e["deliveries"]["totalCount"] >= 1 for e in data["webhookEndpoints"])
    # session, endpoints, one ranked page of every endpoint's deliveries, their rows
    assert small == large == 4, (small, large)
    with count_sql() as found:
        await acme.api.data(LIST)
    assert len(found) == 2, found  # session, endpoints


async def test_creates_at_once_never_pass_the_limit(acme):
    for i in range(endpoints.MAX_ENDPOINTS - 2):
        assert (await create(acme.api, url=f"https://hooks.example/{i}"))["errors"] == []
    racing = [create(acme.api, url=f"https://hooks.example/race/{i}") for i in range(6)]
    answers = await asyncio.gather(*racing)
    assert sorted(len(a["errors"]) for a in answers) == [0, 0, 1, 1, 1, 1]
    refused = [a for a in answers if a["errors"]]
    assert all(codes(a) == [("WEBHOOK_LIMIT_REACHED", None)] for a in refused)
    assert await WebhookEndpoint.all().count() == endpoints.MAX_ENDPOINTS


async def test_synced_messages_data_is_built_for_the_linked_ones_when_an_endpoint_wants_it(
    acme, settings
):
    """messages_synced: no statement when no message was linked, one SELECT when no endpoint
    receives message.synced (and nothing queued), and the data of each linked message (ids,
    direction, time) when one does."""
    firm = acme.owner.firm_id
    at = datetime(2026, 3, 2, 11, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    synced = [(1, 2, [3, 4], "INBOUND", at), (5, None, [], "INBOUND", at)]
    synced.append((6, None, [7], "OUTBOUND", at))
    with count_sql() as none_linked:
        await emit.messages_synced(firm, [(5, None, [], "INBOUND", at)])
    assert none_linked == []
    with count_sql() as unwanted:
        await emit.messages_synced(firm, synced)
    assert len(unwanted) == 1 and await WebhookDelivery.filter(firm_id=firm).count() == 0

    assert (await create(acme.api, url="http://127.0.0.1:9/hook"))["errors"] == []
    await emit.messages_synced(firm, synced)
    rows = await WebhookDelivery.filter(firm_id=firm).order_by("id")
    assert [(r.event, r.payload["type"], r.payload["data"]) for r in rows] == [
        (
            "message.synced",
            "message.synced",
            {
                "messageId": base64.b64encode(b"Message:1").decode(),
                "mailboxId": base64.b64encode(b"Mailbox:2").decode(),
                "accountIds": [base64.b64encode(f"Account:{n}".encode()).decode() for n in (3, 4)],
                "direction": "INBOUND",
                "sentAt": "2026-03-02T09:00:00.123Z",
            },
        ),
        (
            "message.synced",
            "message.synced",
            {
                "messageId": base64.b64encode(b"Message:6").decode(),
                "mailboxId": None,
                "accountIds": [base64.b64encode(b"Account:7").decode()],
                "direction": "OUTBOUND",
                "sentAt": "2026-03-02T09:00:00.123Z",
            },
        ),
    ]
