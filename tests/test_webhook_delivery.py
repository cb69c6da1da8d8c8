"""Webhook deliveries end to end: changes made through the API queue events in their own
transaction, the sender POSTs them signed to a real receiver on loopback (verified with the
Standard Webhooks reference library), failures retry on the schedule and then fail, an
endpoint failing for days is disabled and the admins told, redeliverWebhook replays one,
and a worker killed mid-POST costs the receiver nothing (it dedupes by webhook-id)."""

from __future__ import annotations

import asyncio
import gzip
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from models import (
    OutboundEmail,
    PortalUser,
    StaffRole,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from portico.settings import Settings
from schema import ids
from services.loops.webhooks import run_webhook_loop
from services.shared import metrics, network
from services.webhooks import claims, delivery, endpoints, queue, requests, retention
from services.webhooks.events import WebhookEvent
from tests.support.api import Api, Firm, add_staff, api_for, eventually
from tests.support.crm_ops import new_account
from tests.support.imap import ImapServer, imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.login import (
    FLAGS,
    SIGN_IN,
    STATUS,
    accept,
    deliver,
    invitee,
    login_on,
    token_in,
)
from tests.support.mail import add_mailbox
from tests.support.smtp import SmtpServer, smtp_fixture  # noqa: F401  (the `smtp` fixture)
from tests.support.sqlcount import count_sql
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.worker import start_worker
from tests.test_attachments import PDF, client_in, papers, sync
from tests.test_documents import upload

ALL_EVENTS = [e.name for e in WebhookEvent]
CREATE = """mutation ($input: WebhookEndpointInput!) { createWebhookEndpoint(input: $input) {
  errors { code } secret endpoint { id } } }"""
UPDATE = """mutation ($id: ID!, $input: WebhookEndpointInput!) {
  updateWebhookEndpoint(id: $id, input: $input) { errors { code } endpoint { enabled } } }"""
DELIVERIES = """{ webhookEndpoints { id enabled disabledReason deliveries(first: 50) { edges { node {
  id eventId event status attempts lastStatusCode lastError nextAttemptAt
  attemptLog { startedAt durationMs statusCode error succeeded } } } } } }"""
REDELIVER = """mutation ($id: ID!) { redeliverWebhook(deliveryId: $id) {
  errors { code field message } delivery { id eventId status attempts nextAttemptAt } } }"""
REMOVE_ACCESS = (
    """mutation($id: ID!) { removePortalAccess(portalAccessId: $id) { errors { code } } }"""
)
UNLINKED = "query($id: ID!) { account(id: $id) { unlinkedEmails { portalAccess { id } } } }"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
async def sender() -> AsyncIterator[httpx.AsyncClient]:
    async with requests.new_client() as client:
        yield client


async def register(api: Api, receiver: WebhookReceiver, events: list[str] = ALL_EVENTS) -> str:
    """An endpoint at the receiver, which now holds its secret; the endpoint's id."""
    variables = {"input": {"url": receiver.url, "events": events}}
    payload = (await api.data(CREATE, variables))["createWebhookEndpoint"]
    assert payload["errors"] == []
    receiver.secret = payload["secret"]
    return payload["endpoint"]["id"]


async def send_all(
    settings: Settings, sender: httpx.AsyncClient, now: datetime | None = None
) -> int:
    """Runs the sender until nothing is due (at `now`); how many deliveries it claimed."""
    total = 0
    while claimed := await delivery.send_due(settings, sender, now=now):
        total += claimed
    return total


async def deliveries(api: Api) -> list[dict]:
    """Every delivery of the firm's endpoints as the API shows them, oldest first."""
    endpoints = (await api.data(DELIVERIES))["webhookEndpoints"]
    found = [e["node"] for endpoint in endpoints for e in endpoint["deliveries"]["edges"]]
    return sorted(found, key=lambda d: ids.decode(d["id"], "WebhookDelivery") or 0)


def attempts_counted() -> dict[str, float]:
    """portico_webhook_attempts_total by outcome, as /metrics shows it (process-wide)."""
    return {
        o: REGISTRY.get_sample_value("portico_webhook_attempts_total", {"outcome": o}) or 0.0
        for o in metrics.WEBHOOK_OUTCOMES
    }


def gid(type_name: str, pk: int) -> str:
    return ids.encode(type_name, pk)


# ---------------------------------------------------------------- every event, signed, once


async def test_access_events_reach_the_receiver_signed_with_their_data(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, smtp: SmtpServer, receiver, sender
) -> None:
    await register(acme.api, receiver)
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)  # email_flags.changed, invitation.sent
    [mail] = await deliver(settings, smtp)
    accepted = await accept(Api(client), token_in(mail))  # invitation.accepted, signed_in
    assert accepted["errors"] == []
    signed_in = await Api(client).data(
        SIGN_IN, {"firm": "acme", "email": "anna@miller.example", "password": "client-password-9"}
    )
    assert signed_in["signIn"]["errors"] == []  # client.signed_in
    answer = await upload(client, acme.api.token, anna.account_id, "return.pdf", PDF)
    document = answer.json()["data"]["uploadDocument"]["document"]  # document.uploaded
    off = {"input": {"accountEmailId": anna.account_email_id, "login": False}}
    await acme.api.ok(FLAGS, off)  # email_flags.changed, portal_access.revoked

    assert await send_all(settings, sender) == 8
    received = receiver.wait_for(8)
    assert all(r.verified for r in received), [r.headers for r in received]
    assert len({r.id for r in received}) == 8 and all(r.id.startswith("msg_") for r in received)
    assert all(r.headers["content-type"] == "application/json" for r in received)
    assert all(r.headers["user-agent"] == requests.USER_AGENT for r in received)
    assert all(r.path == "/hooks" for r in received)

    account, account_email = anna.account_id, anna.account_email_id
    [sent] = receiver.events("invitation.sent")
    [invitation] = (await acme.api.data(STATUS, {"id": account}))["account"]["invitations"]
    assert sent["data"]["accountId"] == account and sent["data"]["email"] == "anna@miller.example"
    assert ids.decode(sent["data"]["invitationId"], "Invitation")
    [taken] = receiver.events("invitation.accepted")
    assert taken["data"]["invitationId"] == sent["data"]["invitationId"]
    assert ids.decode(taken["data"]["portalUserId"], "PortalUser")
    assert invitation["email"] == taken["data"]["email"]
    [on, off_event] = receiver.events("email_flags.changed")
    assert on["data"]["accountEmailId"] == account_email
    assert on["data"]["before"] == {"login": False, "notify": False, "emailSync": False}
    assert on["data"]["after"] == {"login": True, "notify": False, "emailSync": False}
    assert off_event["data"]["after"]["login"] is False
    by_link, by_password = receiver.events("client.signed_in")  # accepting signs in too
    for signed in (by_link, by_password):
        assert signed["data"]["accountIds"] == [account]
        assert signed["data"]["portalUserId"] == taken["data"]["portalUserId"]
    [uploaded] = receiver.events("document.uploaded")
    assert uploaded["data"]["documentId"] == document["id"]
    assert uploaded["data"]["source"] == "STAFF" and uploaded["data"]["size"] == len(PDF)
    [revoked] = receiver.events("portal_access.revoked")
    assert revoked["data"] == {
        "accountId": account,
        "portalUserId": taken["data"]["portalUserId"],
        "email": "anna@miller.example",
        "reason": "LOGIN_TURNED_OFF",
    }
    for event in receiver.processed.values():
        assert set(event) == {"type", "timestamp", "data"} and event["timestamp"].endswith("Z")

    shown = await deliveries(acme.api)
    assert [d["status"] for d in shown] == ["SUCCEEDED"] * 8
    assert {d["eventId"] for d in shown} == {r.id for r in received}
    for d in shown:
        assert d["attempts"] == 1 and d["lastStatusCode"] == 204 and d["nextAttemptAt"] is None
        [attempt] = d["attemptLog"]
        assert attempt["succeeded"] and attempt["statusCode"] == 204 and attempt["error"] is None
        assert attempt["durationMs"] >= 0


async def test_a_deleted_account_and_an_erased_person_end_access_without_the_address(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, smtp: SmtpServer, receiver, sender
) -> None:
    await register(acme.api, receiver, ["INVITATION_SENT", "PORTAL_ACCESS_REVOKED"])
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    bob = await invitee(acme.api, "Smith Co", "bob@smith.example", first="Bob")
    for person in (anna, bob):
        await login_on(acme.api, person.account_email_id)
    for mail in await deliver(settings, smtp):
        assert (await accept(Api(client), token_in(mail)))["errors"] == []
    users = {u.email: u.pk for u in await PortalUser.all()}
    receiver.echo, receiver.default = True, 500  # the attempt logs keep what it answered
    assert await send_all(settings, sender) == 2
    assert "anna@" in str(await WebhookAttempt.all().values_list("error", flat=True))
    receiver.echo, receiver.default = False, 204

    delete = "mutation($id: ID!) { deleteAccount(id: $id) { errors { code } } }"
    await acme.api.ok(delete, {"id": bob.account_id})
    erase = "mutation($id: ID!) { eraseContact(id: $id) { errors { code } } }"
    await acme.api.ok(erase, {"id": anna.contact_id})
    # Nothing queued or kept for replay names the erased address any more.
    payloads = await WebhookDelivery.all().values_list("payload", flat=True)
    assert len(payloads) == 4 and "anna@" not in str(payloads) and "bob@" in str(payloads)
    answers = await WebhookAttempt.all().values_list("error", flat=True)
    assert "anna@" not in str(answers) and "bob@" in str(answers)

    assert await send_all(settings, sender, datetime.now(UTC) + timedelta(minutes=1)) == 4
    receiver.wait_for(6)
    revoked = receiver.events("portal_access.revoked")  # sent side by side: in any order
    deleted, erased = sorted(revoked, key=lambda event: event["data"]["reason"])
    assert deleted["data"] == {
        "accountId": bob.account_id,
        "portalUserId": gid("PortalUser", users["bob@smith.example"]),
        "email": "bob@smith.example",
        "reason": "ACCOUNT_DELETED",
    }
    assert erased["data"]["reason"] == "CONTACT_ERASED"
    assert erased["data"]["accountId"] == anna.account_id
    assert erased["data"]["portalUserId"] == gid("PortalUser", users["anna@miller.example"])
    assert erased["data"]["email"].endswith("@erased.invalid")
    assert all(b"anna@" not in r.body for r in receiver.received[2:])  # after the erasure


async def test_synced_mail_and_its_saved_attachments_are_announced(
    acme: Firm, settings: Settings, imap: ImapServer, receiver, sender
) -> None:
    anna = await client_in(acme.api, ("Miller Family", True))
    await register(acme.api, receiver, ["MESSAGE_SYNCED", "DOCUMENT_UPLOADED"])
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    imap.append(mailbox.username, papers("Papers", [("Bescheid.pdf", "application/pdf", PDF)]))
    await sync(acme.api, mailbox)

    assert await send_all(settings, sender) == 2
    receiver.wait_for(2)
    [synced] = receiver.events("message.synced")
    assert synced["data"]["accountIds"] == anna.account_ids
    assert synced["data"]["mailboxId"] == gid("Mailbox", mailbox.pk)
    assert synced["data"]["direction"] == "INBOUND"
    assert ids.decode(synced["data"]["messageId"], "Message")
    [saved] = receiver.events("document.uploaded")
    assert saved["data"]["source"] == "MAIL" and saved["data"]["filename"] == "Bescheid.pdf"
    assert saved["data"]["accountId"] == anna.account_ids[0]
    assert "Papers" not in str(receiver.processed)  # ids only: no subject, no content

    # Synced again: nothing new, no new event.
    await sync(acme.api, mailbox)
    assert await send_all(settings, sender) == 0


async def test_client_mail_that_fails_for_good_is_announced(
    acme: Firm, settings: Settings, smtp: SmtpServer, receiver, sender
) -> None:
    await register(acme.api, receiver, ["DELIVERY_FAILED"])
    smtp.refuse_rcpt("550 5.1.1 no such user")
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)
    await deliver(settings, smtp)
    [mail] = await OutboundEmail.all()
    assert mail.status == "FAILED"
    assert await send_all(settings, sender) == 1
    receiver.wait_for(1)
    [failed] = receiver.events("delivery.failed")
    assert failed["data"] == {
        "deliveryId": gid("Delivery", mail.pk),
        "accountId": anna.account_id,
        "email": "anna@miller.example",
        "kind": "INVITATION",
        "reason": mail.last_error,
    }
    assert "550" in failed["data"]["reason"]


async def test_only_subscribed_enabled_endpoints_of_the_firm_get_an_event(
    acme: Firm, globex: Firm, receiver, settings, sender
) -> None:
    await register(acme.api, receiver, ["DOCUMENT_UPLOADED"])  # not email_flags.changed
    with WebhookReceiver() as other:
        other_id = await register(acme.api, other, ["EMAIL_FLAGS_CHANGED"])
        await acme.api.ok(
            UPDATE,
            {
                "id": other_id,
                "input": {"url": other.url, "events": ["EMAIL_FLAGS_CHANGED"], "enabled": False},
            },
        )
        with WebhookReceiver() as globex_receiver:
            await register(globex.api, globex_receiver, ["EMAIL_FLAGS_CHANGED"])
            anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
            await acme.api.ok(
                FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}}
            )
            assert await WebhookDelivery.all().count() == 0
            assert await send_all(settings, sender) == 0
            assert other.received == [] and globex_receiver.received == []
    assert receiver.received == []


async def test_a_change_that_fails_queues_no_event(acme: Firm, receiver) -> None:
    await register(acme.api, receiver)
    account = await new_account(acme.api, "Archived Ltd")
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    archive = "mutation($id: ID!) { archiveAccount(id: $id) { errors { code } } }"
    await acme.api.ok(archive, {"id": anna.account_id})
    variables = {"input": {"accountEmailId": anna.account_email_id, "login": True}}
    refused = (await acme.api.data(FLAGS, variables))["setEmailFlags"]
    assert [e["code"] for e in refused["errors"]] == ["ACCOUNT_ARCHIVED"]
    assert account["id"] and await WebhookDelivery.all().count() == 0  # flags rolled back too


# ---------------------------------------------------------------- failures and the schedule


async def test_failures_retry_on_the_schedule_then_fail_with_every_attempt_kept(
    acme: Firm, settings: Settings, receiver, sender
) -> None:
    await register(acme.api, receiver, ["EMAIL_FLAGS_CHANGED"])
    receiver.default = 500
    before = attempts_counted()
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}})
    row = await WebhookDelivery.get()
    now = row.next_attempt_at
    waits = []
    for n in range(1, delivery.MAX_ATTEMPTS + 1):
        assert await send_all(settings, sender, now) == 1
        await row.refresh_from_db()
        assert row.attempts == n and row.last_status_code == 500
        assert row.last_error == "HTTP 500: status 500 from the receiver"
        if n < delivery.MAX_ATTEMPTS:
            assert row.status == "PENDING"
            waits.append(row.next_attempt_at - now)
            # Not due a moment before its time.
            assert await send_all(settings, sender, row.next_attempt_at - timedelta(seconds=1)) == 0
            now = row.next_attempt_at
    minutes = [w.total_seconds() / 60 for w in waits]
    assert minutes == [5 / 60, 5, 30, 120, 300, 600, 600]  # the 5 s, 5 min, … 10 h
    assert sum(waits, timedelta()) > timedelta(hours=24)  # "about a day"
    assert row.status == "FAILED" and row.next_attempt_at is None
    assert await send_all(settings, sender, now + timedelta(days=2)) == 0
    ids_seen = {r.id for r in receiver.wait_for(delivery.MAX_ATTEMPTS)}
    assert ids_seen == {row.event_id}  # the same webhook-id on every attempt
    assert receiver.processed == {}

    [shown] = await deliveries(acme.api)
    assert shown["status"] == "FAILED" and shown["attempts"] == delivery.MAX_ATTEMPTS
    log = shown["attemptLog"]
    assert len(log) == delivery.MAX_ATTEMPTS and not any(a["succeeded"] for a in log)
    assert [a["startedAt"] for a in log] == sorted((a["startedAt"] for a in log), reverse=True)
    after = attempts_counted()
    assert after["retry"] - before["retry"] == delivery.MAX_ATTEMPTS - 1
    assert after["failed"] - before["failed"] == 1


@pytest.mark.parametrize(
    ("answer", "error"),
    [(302, "HTTP 302"), (401, None), (None, "Could not connect")],
)
async def test_redirects_bad_signatures_and_dead_hosts_are_failed_attempts(
    acme: Firm, settings: Settings, receiver, sender, answer: int | None, error: str | None
) -> None:
    await register(acme.api, receiver, ["EMAIL_FLAGS_CHANGED"])
    if answer == 401:
        receiver.secret = "whsec_" + "A" * 43 + "="  # the receiver holds a wrong secret
    elif answer is not None:
        receiver.default = answer
    else:
        await WebhookEndpoint.all().update(url="http://127.0.0.1:9/hooks")  # nothing listens
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}})
    assert await send_all(settings, sender) == 1
    row = await WebhookDelivery.get()
    assert row.status == "PENDING" and row.attempts == 1
    assert row.last_status_code == answer
    assert (row.last_error or "").startswith(error or "HTTP 401")
    if answer == 302:
        assert len(receiver.received) == 1  # the redirect was not followed


async def test_production_vets_the_host_again_before_each_post(
    acme: Firm, settings: Settings, receiver, sender
) -> None:
    await register(acme.api, receiver, ["EMAIL_FLAGS_CHANGED"])  # development: loopback allowed
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}})
    production = settings.model_copy(update={"env": "production", "secret_key": "k" * 40})
    secret = endpoints.encrypt_secret(production, receiver.secret)  # under production's key
    await WebhookEndpoint.all().update(secret_encrypted=secret)
    assert await send_all(production, sender) == 1
    row = await WebhookDelivery.get()
    assert row.last_status_code is None and "public addresses" in (row.last_error or "")
    assert receiver.received == []  # nothing left the machine


async def test_the_request_goes_to_each_vetted_address_with_the_urls_host_and_tls_name() -> None:
    """DNS answers as a resolver would (a stand-in for the internet's); the request is pinned
    to its vetted addresses and keeps the URL's name, in ASCII, for Host and TLS."""
    asked = []

    async def resolve(host: str, port: int, *, allow_private: bool) -> network.Destination:
        asked.append((host, port, allow_private))
        answers = [(socket.AF_INET6, ("2606:2800:220:1::248", port, 0, 0))]
        answers.append((socket.AF_INET, ("93.184.215.14", port)))
        return network.Destination(host, port, tuple(answers))

    production = Settings(env="production", secret_key="k" * 40, _env_file=None)
    where = await requests.target("https://hooks.bücher.example:8443/in?x=1", production, resolve)
    assert asked == [("hooks.xn--bcher-kva.example", 8443, False)]
    assert where.urls == [
        "https://[2606:2800:220:1::248]:8443/in?x=1",
        "https://93.184.215.14:8443/in?x=1",
    ]
    assert where.host == "hooks.xn--bcher-kva.example:8443"
    assert where.sni_hostname == "hooks.xn--bcher-kva.example"
    development = Settings(_env_file=None)
    assert await requests.target("http://localhost:1/x", development, resolve) == (
        requests.Target(["http://localhost:1/x"])
    )
    assert len(asked) == 1  # development sends where the URL says, unresolved


async def test_no_cookie_goes_back_and_a_compressed_error_is_not_unpacked(
    acme: Firm, settings: Settings, receiver, sender
) -> None:
    await register(acme.api, receiver, ["EMAIL_FLAGS_CHANGED"])
    receiver.cookie = "track=firm-a; Path=/"
    receiver.answers.extend([500])
    receiver.gzip_body = gzip.compress(b"x" * 5_000_000)  # 5 MB unpacked, a few KB sent
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}})
    row = await WebhookDelivery.get()
    await send_all(settings, sender, row.next_attempt_at)
    await row.refresh_from_db()
    assert row.last_error == "HTTP 500: (a compressed answer, not shown)"
    await send_all(settings, sender, row.next_attempt_at)
    first, second = receiver.wait_for(2)
    assert first.headers["accept-encoding"] == "identity"
    assert "cookie" not in first.headers and "cookie" not in second.headers
    await row.refresh_from_db()
    assert row.status == "SUCCEEDED"


async def test_a_secret_portico_cannot_read_is_no_attempt_and_blames_nobody(
    acme: Firm, settings: Settings, receiver, sender
) -> None:
    await register(acme.api, receiver, ["EMAIL_FLAGS_CHANGED"])
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}})
    other_key = settings.model_copy(update={"secret_key": "a-different-secret-key"})
    now = datetime.now(UTC)
    assert await send_all(other_key, sender, now) == 1
    row = await WebhookDelivery.get()
    assert row.status == "PENDING" and row.attempts == 0 and row.lease_until is None
    assert row.next_attempt_at == now + delivery.NOT_SENT_DELAY
    assert (await WebhookEndpoint.get()).failing_since is None and receiver.received == []
    assert await send_all(settings, sender, row.next_attempt_at) == 1  # the right key again
    await row.refresh_from_db()
    assert row.status == "SUCCEEDED" and row.attempts == 1


async def test_a_slow_receiver_holds_only_its_own_slots(
    acme: Firm, settings: Settings, receiver, sender
) -> None:
    await register(acme.api, receiver, ["EMAIL_FLAGS_CHANGED"])
    receiver.hold.set()  # answers nothing until released
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    for notify in (True, False, True, False, True, False):
        flags = {"input": {"accountEmailId": anna.account_email_id, "notify": notify}}
        await acme.api.ok(FLAGS, flags)
    with WebhookReceiver() as quick:
        await register(acme.api, quick, ["DOCUMENT_UPLOADED"])
        await upload(acme.api.http, acme.api.token, anna.account_id, "return.pdf", PDF)
        worker = delivery.Sender(settings, sender)
        assert await worker.fill() == claims.PER_ENDPOINT + 1  # 4 of the slow one's 6, 1 quick
        assert await worker.fill() == 0  # the slow one's others wait for its slots
        await asyncio.to_thread(quick.wait_for, 1)
        await eventually(
            lambda: WebhookDelivery.filter(event="document.uploaded", status="SUCCEEDED").exists(),
            "the quick receiver's event is delivered while the slow one's hang",
        )
        assert len(worker.tasks) == claims.PER_ENDPOINT
        receiver.released.set()
        await worker.finish()
        while await worker.fill():
            await worker.finish()
    assert await WebhookDelivery.filter(status="SUCCEEDED").count() == 7


async def test_an_outcome_is_written_only_under_its_own_lease(
    acme: Firm, settings: Settings, receiver, sender
) -> None:
    await register(acme.api, receiver, ["EMAIL_FLAGS_CHANGED"])
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}})
    now = datetime.now(UTC)
    [row], lease = await claims.claim(5, now, 1.0)
    endpoint = await WebhookEndpoint.get()
    # The lease ran out and another worker claimed the row: the first one's outcome is dropped.
    [again], second = await claims.claim(5, now + timedelta(seconds=2), 60.0)
    failed = requests.Outcome(now, 1, 500, "HTTP 500")
    assert not await delivery.record(settings, endpoint, row, lease, failed)
    await row.refresh_from_db()
    assert row.attempts == 0 and row.lease_until == second

    # Redelivered while the second worker's POST is under way: its failure retries at once
    # on the fresh schedule (5 s), not on the old one.
    anna_row = await WebhookDelivery.get()
    await WebhookDelivery.filter(pk=anna_row.pk).update(attempts=delivery.MAX_ATTEMPTS - 1)
    again.attempts = delivery.MAX_ATTEMPTS - 1  # the claimed copy: its last attempt
    answer = await acme.api.data(REDELIVER, {"id": gid("WebhookDelivery", row.pk)})
    assert answer["redeliverWebhook"]["errors"] == []
    at = now + timedelta(seconds=3)
    assert await delivery.record(settings, endpoint, again, second, failed, at)
    await row.refresh_from_db()
    assert row.status == "PENDING" and row.next_attempt_at == at + timedelta(seconds=5)


# ---------------------------------------------------------------- disabling, redelivering


async def test_an_endpoint_failing_for_days_is_disabled_and_the_admins_are_told(
    acme: Firm, client: httpx.AsyncClient, settings: Settings, receiver, sender
) -> None:
    admin = await add_staff(acme, "ada@acme.example", role=StaffRole.ADMIN)
    await add_staff(acme, "emil@acme.example", role=StaffRole.EMPLOYEE)
    endpoint_id = await register(acme.api, receiver, ["EMAIL_FLAGS_CHANGED"])
    receiver.default = 503
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    flags = {"input": {"accountEmailId": anna.account_email_id, "notify": True}}
    await acme.api.ok(FLAGS, flags)
    start = (await WebhookDelivery.get()).next_attempt_at
    assert await send_all(settings, sender, start) == 1
    endpoint = await WebhookEndpoint.get()
    assert endpoint.enabled and endpoint.failing_since is not None

    # Days later another event fails too: the endpoint has failed ever since.
    await acme.api.ok(FLAGS, {"input": {**flags["input"], "notify": False}})
    later = start + delivery.DISABLE_AFTER + timedelta(minutes=1)
    await send_all(settings, sender, later)
    shown = (await acme.api.data(DELIVERIES))["webhookEndpoints"][0]
    assert shown["enabled"] is False and "every delivery failed since" in shown["disabledReason"]
    told = await OutboundEmail.filter(kind=delivery.DISABLED_KIND).order_by("to_address")
    assert [m.to_address for m in told] == sorted([admin.email, acme.owner.email])
    assert all(m.account_id is None for m in told)

    # Disabled: nothing is sent, a redelivery is refused; enabled again, the waiting go out.
    received = len(receiver.received)
    assert await send_all(settings, sender, later + timedelta(days=1)) == 0
    first = (await deliveries(acme.api))[0]
    refused = (await acme.api.data(REDELIVER, {"id": first["id"]}))["redeliverWebhook"]
    assert [e["code"] for e in refused["errors"]] == ["ENDPOINT_DISABLED"]
    assert refused["delivery"] is None and len(receiver.received) == received
    receiver.default = 204
    enable = {"url": receiver.url, "events": ["EMAIL_FLAGS_CHANGED"], "enabled": True}
    await acme.api.ok(UPDATE, {"id": endpoint_id, "input": enable})
    assert await send_all(settings, sender, later + timedelta(days=1)) == 2
    assert len(receiver.processed) == 2
    endpoint = await WebhookEndpoint.get()
    assert endpoint.failing_since is None and endpoint.disabled_reason is None


async def test_redeliver_sends_the_same_event_again_on_a_fresh_schedule(
    acme: Firm, globex: Firm, client: httpx.AsyncClient, settings: Settings, receiver, sender
) -> None:
    await register(acme.api, receiver, ["EMAIL_FLAGS_CHANGED"])
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}})
    receiver.default = 500
    now = (await WebhookDelivery.get()).next_attempt_at
    for wait in (timedelta(0), *delivery.RETRY_SCHEDULE):
        now += wait
        await send_all(settings, sender, now)
    [failed] = await deliveries(acme.api)
    assert failed["status"] == "FAILED"

    receiver.default = 204
    again = (await acme.api.data(REDELIVER, {"id": failed["id"]}))["redeliverWebhook"]
    assert again["errors"] == []
    assert (
        again["delivery"]["status"] == "PENDING"
        and again["delivery"]["eventId"] == failed["eventId"]
    )
    assert await send_all(settings, sender) == 1
    [done] = await deliveries(acme.api)
    assert done["status"] == "SUCCEEDED" and done["attempts"] == delivery.MAX_ATTEMPTS + 1
    assert (
        len(done["attemptLog"]) == delivery.MAX_ATTEMPTS + 1 and done["attemptLog"][0]["succeeded"]
    )

    # Replayed after success: the receiver gets the same webhook-id and drops the repeat.
    again = (await acme.api.data(REDELIVER, {"id": failed["id"]}))["redeliverWebhook"]
    assert again["errors"] == [] and await send_all(settings, sender) == 1
    assert list(receiver.processed) == [failed["eventId"]]

    # A failure after a redelivery is retried on the schedule again, not given up at once.
    receiver.default = 500
    await acme.api.ok(REDELIVER, {"id": failed["id"]})
    await send_all(settings, sender)
    row = await WebhookDelivery.get()
    assert row.status == "PENDING" and row.next_attempt_at is not None

    # Who may: owners and admins of the firm; another firm's id is not found.
    employee = await add_staff(acme, "emil@acme.example", role=StaffRole.EMPLOYEE)
    refused = await (await api_for(client, employee)).post(REDELIVER, {"id": failed["id"]})
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    foreign = (await globex.api.data(REDELIVER, {"id": failed["id"]}))["redeliverWebhook"]
    assert [e["code"] for e in foreign["errors"]] == ["NOT_FOUND"]
    for bad in ("nonsense", gid("WebhookEndpoint", row.endpoint_id), gid("WebhookDelivery", 999)):
        answer = (await acme.api.data(REDELIVER, {"id": bad}))["redeliverWebhook"]
        assert [e["code"] for e in answer["errors"]] == ["NOT_FOUND"], bad
    unauthenticated = await Api(client).post(REDELIVER, {"id": failed["id"]})
    assert unauthenticated["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_attempt_logs_of_a_page_of_deliveries_take_one_statement(
    acme: Firm, settings: Settings, receiver, sender
) -> None:
    await register(acme.api, receiver, ["EMAIL_FLAGS_CHANGED"])
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    for notify in (True, False, True):
        flags = {"input": {"accountEmailId": anna.account_email_id, "notify": notify}}
        await acme.api.ok(FLAGS, flags)
    await send_all(settings, sender)
    with count_sql() as one:
        await acme.api.data(DELIVERIES)
    for notify in (False, True, False, True):
        flags = {"input": {"accountEmailId": anna.account_email_id, "notify": notify}}
        await acme.api.ok(FLAGS, flags)
    await send_all(settings, sender)
    with count_sql() as many:
        shown = await deliveries(acme.api)
    assert len(shown) == 7 and all(len(d["attemptLog"]) == 1 for d in shown)
    assert len(many) == len(one) == 5  # session, endpoints, page, its rows, their attempts


# ---------------------------------------------------------------- retention


async def test_deliveries_finished_30_days_ago_are_deleted_pending_ones_never(
    acme: Firm, settings: Settings, receiver, sender
) -> None:
    await register(acme.api, receiver, ["EMAIL_FLAGS_CHANGED"])
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    for notify in (True, False, True, False, True, False):
        variables = {"input": {"accountEmailId": anna.account_email_id, "notify": notify}}
        await acme.api.ok(FLAGS, variables)
    assert await send_all(settings, sender) == 6
    rows = await WebhookDelivery.all().order_by("id")
    # Rows 0 and 1 stay SUCCEEDED; `replayed` was queued long ago but sent again today.
    failed, pending, replayed, young = rows[2], rows[3], rows[4], rows[5]
    now = datetime.now(UTC)
    await WebhookDelivery.filter(id=failed.pk).update(status="FAILED")
    retrying = {"status": "PENDING", "next_attempt_at": now + timedelta(hours=10)}
    await WebhookDelivery.filter(id=pending.pk).update(**retrying)
    aged = now - retention.KEEP - timedelta(minutes=1)

    async def age(*keep_recent: int) -> None:
        await WebhookDelivery.filter(id__not=young.pk).update(created_at=aged)
        await WebhookAttempt.filter(delivery_id__not_in=keep_recent).update(started_at=aged)

    await age(replayed.pk, young.pk)
    assert await retention.prune(now, batch=2) == 3  # in batches smaller than the work
    kept = [pending.pk, replayed.pk, young.pk]
    shown = [d["id"] for d in await deliveries(acme.api)]
    assert shown == [gid("WebhookDelivery", pk) for pk in kept]
    assert set(await WebhookAttempt.all().values_list("delivery_id", flat=True)) == set(kept)
    assert await retention.prune(now) == 0

    # The worker's loop does it on its own, beside its sending, at its start and then every
    # PRUNE_EVERY.
    await WebhookDelivery.filter(id=young.pk).update(created_at=aged)
    await age(replayed.pk)

    async def pruned() -> bool:
        return not await WebhookDelivery.filter(id=young.pk).exists()

    stop = asyncio.Event()
    loop = asyncio.create_task(run_webhook_loop(settings, stop))
    try:
        await eventually(pruned, "the loop deleted the aged delivery")
    finally:
        stop.set()
        await loop
    remaining = await WebhookDelivery.all().order_by("id").values_list("id", flat=True)
    assert remaining == [pending.pk, replayed.pk]


# ---------------------------------------------------------------- a worker killed mid-POST


def worker_settings(settings: Settings) -> dict[str, str | Path | float]:
    return {
        "database_url": settings.resolved_database_url,
        "var_dir": settings.var_dir,  # the generated key the secret is under
        "worker_poll_seconds": 0.1,
    }


async def test_a_worker_killed_mid_post_costs_the_receiver_nothing(
    acme: Firm, settings: Settings, receiver, tmp_path: Path
) -> None:
    await register(acme.api, receiver, ["EMAIL_FLAGS_CHANGED"])
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    receiver.hold.set()  # the first request gets no answer: the worker dies waiting
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}})
    log = tmp_path / "worker.log"
    worker = start_worker(log, **worker_settings(settings))
    try:
        await asyncio.to_thread(receiver.wait_for, 1, 30)
        worker.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(worker.wait, 10) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    row = await WebhookDelivery.get()
    assert row.status == "PENDING" and row.attempts == 0 and row.lease_until is not None
    receiver.hold.clear()
    receiver.released.set()
    # The receiver took the first request after all (it answered nobody).
    assert [r.id for r in receiver.received] == [row.event_id]

    # The lease runs out (moved, not waited for) and another worker sends it again.
    await WebhookDelivery.filter(pk=row.pk).update(
        lease_until=datetime.now(UTC) - timedelta(seconds=1)
    )
    worker = start_worker(tmp_path / "worker-2.log", **worker_settings(settings))
    try:
        for _ in range(300):
            await row.refresh_from_db()
            if row.status == "SUCCEEDED":
                break
            assert worker.poll() is None, (tmp_path / "worker-2.log").read_text()
            await asyncio.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.to_thread(worker.wait, 20)
    assert row.status == "SUCCEEDED" and row.attempts == 1
    assert [r.id for r in receiver.received] == [row.event_id, row.event_id]  # at least once
    assert list(receiver.processed) == [row.event_id]  # exactly once for the receiver
    assert receiver.processed[row.event_id]["type"] == WebhookEvent.EMAIL_FLAGS_CHANGED.value


def test_global_ids_in_event_data_are_the_apis() -> None:
    assert queue.node_id("Account", 42) == ids.encode("Account", 42)
