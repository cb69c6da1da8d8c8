"""Delivery when things go wrong, against a real SMTP server (aiosmtpd), through the API.

- the SMTP server down for a while, then back: every notification arrives exactly once;
- a worker process killed mid-batch (PostgreSQL): another delivers its claimed rows once the
  lease has expired; none is lost, and only a message the dead worker had already handed to
  the server, whose SENT it had not yet written (they are written in batches), may arrive a
  second time, with the same Message-ID (at least once, by design);
- a permanent refusal: FAILED with the server's reason, visible in `Account.deliveries`.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from models import DeliveryStatus, OutboundEmail
from portico.settings import Settings
from services.loops.delivery import deliver_due
from services.outbound.transport import transport_for
from services.shared.backoff import JITTER
from tests.support.api import Api
from tests.support.login import FLAGS, invitee
from tests.support.smtp import SmtpServer, smtp_fixture  # noqa: F401  (the `smtp` fixture)
from tests.support.worker import start_worker

EVENT = """mutation($input: ClientEventInput!) { notifyClientEvent(input: $input) { errors { code field } queued } }"""
SEND = """mutation($input: SendFirmEmailInput!) { sendFirmEmail(input: $input) { errors { code field } queued } }"""
DELIVERIES = """query($id: ID!) { account(id: $id) { deliveries { totalCount edges { node { to subject status lastError attempts sentAt } } } } }"""


async def notify_accounts(api: Api, count: int) -> list[str]:
    """`count` accounts, each with one client address with NOTIFY on; their ids."""
    account_ids = []
    for i in range(count):
        person = await invitee(api, f"Family {i}", f"client{i}@example.com", first=f"Client{i}")
        await api.ok(FLAGS, {"input": {"accountEmailId": person.account_email_id, "notify": True}})
        account_ids.append(person.account_id)
    return account_ids


async def notify_event(api: Api, account_id: str, title: str) -> None:
    variables = {
        "input": {"accountId": account_id, "category": "INVOICES_AND_PAYMENTS", "title": title}
    }
    assert (await api.ok(EVENT, variables))["queued"] == 1


def mail_settings(settings: Settings, smtp: SmtpServer, **changes: object) -> Settings:
    return settings.model_copy(update={"smtp_url": smtp.url, **changes})


def received_ids(messages: list[EmailMessage]) -> Counter[str]:
    return Counter(str(message["Message-ID"]) for message in messages)


async def deliveries(api: Api, account_id: str) -> list[dict]:
    data = await api.data(DELIVERIES, {"id": account_id})
    return [edge["node"] for edge in data["account"]["deliveries"]["edges"]]


async def test_smtp_down_then_back_delivers_each_notification_once(acme, settings, smtp):
    accounts = await notify_accounts(acme.api, 3)
    for account_id in accounts:
        for title in ("Invoice 1 is ready", "Payment received"):
            await notify_event(acme.api, account_id, title)
    queued = await OutboundEmail.all()
    assert len(queued) == 6

    # The server is down: every attempt is refused, and every row waits for a retry.
    smtp.stop()
    mail = mail_settings(settings, smtp)
    transport = transport_for(mail)
    now = datetime.now(UTC)
    assert await deliver_due(mail, transport, now=now) == 6
    waiting = await OutboundEmail.all()
    base = mail.mail_retry_base_seconds
    for row in waiting:
        assert row.status == DeliveryStatus.QUEUED and row.attempts == 1, row
        assert row.lease_until is None and row.sent_at is None
        assert "connect" in row.last_error.lower(), row.last_error
        assert now + timedelta(seconds=base * (1 - JITTER)) <= row.next_attempt_at
        assert row.next_attempt_at <= now + timedelta(seconds=base * (1 + JITTER))
    [shown, _] = await deliveries(acme.api, accounts[0])
    assert shown["status"] == "QUEUED" and shown["attempts"] == 1 and shown["lastError"]
    # Still down a little later: nothing is due yet, so nothing is tried.
    assert await deliver_due(mail, transport, now=now + timedelta(seconds=1)) == 0

    # The server is back on the same port; once the retry delay has passed, all go out.
    smtp.start()
    assert await deliver_due(mail, transport, now=now + timedelta(seconds=2)) == 0
    later = max(row.next_attempt_at for row in waiting)
    assert await deliver_due(mail, transport, now=later) == 6
    assert await deliver_due(mail, transport, now=later + timedelta(days=1)) == 0

    counts = received_ids(smtp.wait_for(6))
    rows = await OutboundEmail.all()
    assert counts == Counter({row.message_id: 1 for row in rows})  # each once, no extra
    assert smtp.data_commands == 6
    assert {row.status for row in rows} == {DeliveryStatus.SENT}
    assert {row.attempts for row in rows} == {2}
    assert sorted(m["To"] for m in smtp.messages) == sorted(row.to_address for row in rows)
    for account_id in accounts:
        shown = await deliveries(acme.api, account_id)
        assert [(d["status"], d["attempts"]) for d in shown] == [("SENT", 2), ("SENT", 2)]
        assert all(d["sentAt"] for d in shown)


def wait_for_ids(smtp: SmtpServer, expected: set[str], seconds: float = 5.0) -> Counter[str]:
    """Message-ID counts once every expected one has arrived (or after `seconds`)."""
    deadline = time.monotonic() + seconds
    while set(received_ids(smtp.messages)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return received_ids(smtp.messages)


async def test_a_worker_killed_mid_batch_loses_nothing(clean_db, acme, settings, smtp, tmp_path):
    if clean_db.backend != "postgres":
        pytest.skip("a worker process needs PostgreSQL (PORTICO_TEST_DATABASE=postgres)")
    lease = 10.0
    accounts = await notify_accounts(acme.api, 3)
    for n in range(8):
        variables = {
            "input": {"accountIds": accounts, "subject": f"Newsletter {n}", "body": "Hello"}
        }
        assert (await acme.api.ok(SEND, variables))["queued"] == 3
    total = 24  # all in the worker's first claim (50 rows)

    # A slow server: each DATA takes 0.25 s, two at a time, so the worker is killed in the
    # middle of sends, with some rows recorded SENT (a batch is written after a second).
    smtp.slow(0.25)
    log = tmp_path / "worker.log"
    worker = start_worker(
        log,
        database_url=clean_db.url,
        smtp_url=smtp.url,
        var_dir=settings.var_dir,  # the generated secret the API encrypted with
        worker_poll_seconds=0.1,
        mail_lease_seconds=lease,
        mail_send_concurrency=2,
    )
    try:
        deadline = time.monotonic() + 20
        while not await OutboundEmail.filter(status=DeliveryStatus.SENT).exists():
            assert worker.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            await asyncio.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(worker.wait, 10) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    killed_at = datetime.now(UTC)

    rows = await OutboundEmail.all()
    sent_before = {row.message_id for row in rows if row.status == DeliveryStatus.SENT}
    claimed = [row for row in rows if row.status == DeliveryStatus.QUEUED]
    assert len(rows) == total and sent_before and claimed
    assert len(sent_before) + len(claimed) == total
    # Still leased to the dead worker, for PORTICO_MAIL_LEASE_SECONDS (plus the token's random
    # microseconds). One of them may turn SENT just after this read: the worker's last UPDATE
    # can still commit after its death. Either way it is not sent again.
    for row in claimed:
        assert row.attempts == 0 and row.lease_until is not None
        assert killed_at < row.lease_until < killed_at + timedelta(seconds=lease + 1)

    # Another worker: nothing while the dead worker's lease holds; everything after it.
    smtp.slow(0)
    mail = mail_settings(settings, smtp, mail_lease_seconds=lease)
    transport = transport_for(mail)
    assert await deliver_due(mail, transport, now=datetime.now(UTC)) == 0
    expired = killed_at + timedelta(seconds=lease + 1)
    rounds = 0
    while await deliver_due(mail, transport, now=expired):
        rounds += 1
    assert rounds >= 1

    rows = await OutboundEmail.all()
    expected = {row.message_id for row in rows}
    counts = await asyncio.to_thread(wait_for_ids, smtp, expected)
    assert set(counts) == expected  # none lost, nothing foreign
    assert max(counts.values()) <= 2
    repeated = {message_id for message_id, n in counts.items() if n > 1}
    # A repeat is only ever a message the dead worker was sending when it died.
    assert repeated <= {row.message_id for row in claimed}
    assert all(counts[message_id] == 1 for message_id in sent_before)
    assert {row.status for row in rows} == {DeliveryStatus.SENT}
    assert all(row.lease_until is None for row in rows)
    assert {row.attempts for row in rows if row.message_id not in sent_before} == {1}


async def test_a_permanent_refusal_fails_with_the_reason_in_the_api(acme, settings, smtp):
    [account_id] = await notify_accounts(acme.api, 1)
    await notify_event(acme.api, account_id, "Your tax return is filed")
    smtp.refuse_rcpt("550 5.1.1 <client0@example.com>: no such user")
    mail = mail_settings(settings, smtp)
    transport = transport_for(mail)
    assert await deliver_due(mail, transport) == 1
    # FAILED is final: however much later, no round tries it again.
    later = datetime.now(UTC) + timedelta(days=30)
    assert await deliver_due(mail, transport, now=later) == 0

    [shown] = await deliveries(acme.api, account_id)
    assert shown == {
        "to": "client0@example.com",
        "subject": "Your tax return is filed",
        "status": "FAILED",
        "lastError": "550 5.1.1 <client0@example.com>: no such user",
        "attempts": 1,
        "sentAt": None,
    }
    assert smtp.messages == [] and smtp.data_commands == 0


async def test_temporary_refusals_end_failed_with_the_last_reason_in_the_api(acme, settings, smtp):
    """A server that answers 4xx every time: retried with the growing wait, each attempt
    shown, then FAILED after the last allowed attempt with the server's last words."""
    [account_id] = await notify_accounts(acme.api, 1)
    await notify_event(acme.api, account_id, "Your tax return is filed")
    mail = mail_settings(settings, smtp, mail_max_attempts=3)
    transport = transport_for(mail)
    now = datetime.now(UTC)
    for attempt in (1, 2, 3):
        smtp.refuse_rcpt(f"451 4.2.0 mailbox busy (try {attempt})")
        assert await deliver_due(mail, transport, now=now) == 1
        assert await deliver_due(mail, transport, now=now) == 0  # not due again at once
        [shown] = await deliveries(acme.api, account_id)
        status = "FAILED" if attempt == 3 else "QUEUED"
        assert (shown["status"], shown["attempts"]) == (status, attempt)
        assert shown["lastError"] == f"451 4.2.0 mailbox busy (try {attempt})"
        now += timedelta(seconds=mail.mail_retry_max_seconds * (1 + JITTER))  # past any wait
    assert await deliver_due(mail, transport, now=now + timedelta(days=30)) == 0  # final
    assert smtp.messages == []
