"""Delivery against a real SMTP server (aiosmtpd): retries, permanent failures, leases."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from models import DeliveryStatus, Firm, OutboundEmail
from portico.settings import Settings
from portico.worker import run_worker
from services.loops.delivery import claim_due, deliver_due, retry_delay
from services.outbound import outbox
from services.outbound.transport import (
    PermanentFailure,
    SmtpConfig,
    SmtpTransport,
    transport_for,
)
from tests.support.smtp import SmtpServer, free_port, smtp_fixture  # noqa: F401

LINK = "https://portal.example/invitation?token=abc"


async def queue(settings: Settings, firm: Firm, to: str = "client@example.com") -> OutboundEmail:
    return await outbox.enqueue(
        firm_id=firm.pk,
        firm_name=firm.name,
        to=to,
        template="invitation",
        context={
            "firm_name": firm.name,
            "account_name": "Miller Family",
            "link": LINK,
            "expires_at": datetime(2030, 1, 1, tzinfo=UTC),
        },
        kind="invitation",
        settings=settings,
    )


@pytest.fixture
async def firm(settings: Settings) -> Firm:
    return await Firm.create(name="Acme LLP", slug="acme")


@pytest.fixture
def smtp_settings(settings: Settings, smtp: SmtpServer) -> Settings:
    return settings.model_copy(
        update={"smtp_url": smtp.url, "mail_from": "Portico <mail@portico.example>"}
    )


def within(value: datetime, start: datetime, low: float, high: float) -> bool:
    return start + timedelta(seconds=low) <= value <= start + timedelta(seconds=high)


async def test_smtp_delivery_end_to_end(smtp_settings, smtp, firm):
    row = await queue(smtp_settings, firm)
    assert await deliver_due(smtp_settings, transport_for(smtp_settings)) == 1
    [received] = smtp.wait_for(1)
    assert received["Message-ID"] == row.message_id
    assert received["From"] == "Acme LLP <mail@portico.example>"
    assert received["To"] == "client@example.com"
    assert received["Subject"] == "Acme LLP invites you to the Miller Family client portal"
    assert LINK in received.get_body(("plain",)).get_content()
    assert LINK in received.get_body(("html",)).get_content()

    sent = await OutboundEmail.get(pk=row.pk)
    assert sent.status == DeliveryStatus.SENT and sent.attempts == 1
    assert sent.sent_at is not None and sent.lease_until is None and sent.last_error is None
    # Nothing left: another round claims nothing and sends nothing.
    assert await deliver_due(smtp_settings, transport_for(smtp_settings)) == 0
    assert len(smtp.messages) == 1


async def test_451_then_accepted_is_delivered_exactly_once(smtp_settings, smtp, firm):
    transport = transport_for(smtp_settings)
    smtp.fail_data("451 4.3.0 try later")
    row = await queue(smtp_settings, firm)
    now = datetime.now(UTC)
    assert await deliver_due(smtp_settings, transport, now=now) == 1
    retrying = await OutboundEmail.get(pk=row.pk)
    assert retrying.status == DeliveryStatus.QUEUED and retrying.attempts == 1
    assert retrying.last_error == "451 4.3.0 try later"
    base = smtp_settings.mail_retry_base_seconds
    assert within(retrying.next_attempt_at, now, base * 0.8, base * 1.2)
    assert smtp.messages == [] and retrying.lease_until is None

    # Not due yet: nothing happens.
    assert await deliver_due(smtp_settings, transport, now=now + timedelta(seconds=1)) == 0
    later = retrying.next_attempt_at
    assert await deliver_due(smtp_settings, transport, now=later) == 1
    assert await deliver_due(smtp_settings, transport, now=later + timedelta(days=1)) == 0
    [received] = smtp.wait_for(1)
    assert received["Message-ID"] == row.message_id
    sent = await OutboundEmail.get(pk=row.pk)
    assert sent.status == DeliveryStatus.SENT and sent.attempts == 2
    assert sent.sent_at == later
    assert smtp.data_commands == 2 and len(smtp.messages) == 1


@pytest.mark.parametrize("refuse", ["rcpt", "data"], ids=["550-recipient", "554-data"])
async def test_5xx_fails_permanently_with_the_reason(smtp_settings, smtp, firm, refuse):
    if refuse == "rcpt":
        smtp.refuse_rcpt("550 5.1.1 no such user")
        reason = "550 5.1.1 no such user"
    else:
        smtp.fail_data("554 5.7.1 message refused", times=5)
        reason = "554 5.7.1 message refused"
    row = await queue(smtp_settings, firm)
    transport = transport_for(smtp_settings)
    assert await deliver_due(smtp_settings, transport) == 1
    failed = await OutboundEmail.get(pk=row.pk)
    assert failed.status == DeliveryStatus.FAILED and failed.last_error == reason
    assert failed.attempts == 1 and failed.lease_until is None and failed.sent_at is None
    # FAILED is final: no later round touches it.
    assert (
        await deliver_due(smtp_settings, transport, now=datetime.now(UTC) + timedelta(days=9)) == 0
    )
    assert smtp.messages == []


async def test_international_addresses(smtp_settings, smtp, firm):
    idn = await queue(smtp_settings, firm, "client@bücher.example")
    utf8_local = await queue(smtp_settings, firm, "jörg@example.com")
    malformed = await queue(smtp_settings, firm, "dot.@example.com")
    assert await deliver_due(smtp_settings, transport_for(smtp_settings)) == 3
    [received] = smtp.wait_for(1)
    assert received["To"] == "client@xn--bcher-kva.example"
    assert (await OutboundEmail.get(pk=idn.pk)).status == DeliveryStatus.SENT
    failed = await OutboundEmail.get(pk=utf8_local.pk)
    assert failed.status == DeliveryStatus.FAILED and "SMTPUTF8" in failed.last_error
    # What no server could take fails at once with the reason, instead of 12 retries.
    bad = await OutboundEmail.get(pk=malformed.pk)
    assert bad.status == DeliveryStatus.FAILED and "not a valid address" in bad.last_error


async def test_connection_refused_backs_off_then_fails(settings, firm):
    settings = settings.model_copy(
        update={
            "smtp_url": f"smtp://127.0.0.1:{free_port()}",  # nobody listens there
            "mail_retry_base_seconds": 10,
            "mail_retry_max_seconds": 15,
            "mail_max_attempts": 3,
        }
    )
    transport = transport_for(settings)
    row = await queue(settings, firm)
    now = datetime.now(UTC)
    assert await deliver_due(settings, transport, now=now) == 1
    first = await OutboundEmail.get(pk=row.pk)
    assert first.status == DeliveryStatus.QUEUED and first.attempts == 1
    assert "connect" in first.last_error.lower()
    assert within(first.next_attempt_at, now, 8, 12)  # 10 s ± 20%

    second_try = first.next_attempt_at
    assert await deliver_due(settings, transport, now=second_try) == 1
    second = await OutboundEmail.get(pk=row.pk)
    assert second.attempts == 2
    assert within(second.next_attempt_at, second_try, 12, 15)  # 20 s ± 20%, at most 15 s

    assert await deliver_due(settings, transport, now=second.next_attempt_at) == 1
    third = await OutboundEmail.get(pk=row.pk)
    assert third.status == DeliveryStatus.FAILED and third.attempts == 3
    assert "connect" in third.last_error.lower()


def test_retry_delay_doubles_within_jitter_and_cap():
    settings = Settings(mail_retry_base_seconds=30, mail_retry_max_seconds=3600, _env_file=None)
    rng = random.Random(7)
    for attempts, nominal in [(1, 30), (2, 60), (3, 120), (7, 1920)]:
        delays = [retry_delay(settings, attempts, rng) for _ in range(500)]
        assert nominal * 0.8 <= min(delays) and max(delays) <= nominal * 1.2
        assert max(delays) - min(delays) > nominal * 0.3  # really spread
    capped = [retry_delay(settings, 12, rng) for _ in range(500)]
    assert min(capped) >= 3600 * 0.8 and max(capped) <= 3600


async def test_an_expired_lease_is_reclaimed(smtp_settings, smtp, firm):
    row = await queue(smtp_settings, firm)
    now = datetime.now(UTC)
    # A worker claims the row and dies before sending it.
    dead = await claim_due(smtp_settings, limit=10, now=now)
    assert [r.pk for r in dead.rows] == [row.pk]
    transport = transport_for(smtp_settings)
    assert await deliver_due(smtp_settings, transport, now=now + timedelta(seconds=60)) == 0
    assert smtp.messages == []
    # Once its lease has run out, another worker sends it, with the same Message-ID.
    expired = now + timedelta(seconds=smtp_settings.mail_lease_seconds + 2)
    assert await deliver_due(smtp_settings, transport, now=expired) == 1
    [received] = smtp.wait_for(1)
    assert received["Message-ID"] == row.message_id
    assert (await OutboundEmail.get(pk=row.pk)).status == DeliveryStatus.SENT


class SlowTransport:
    """Stands for a worker stuck in a send past its lease, then failing."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, message: EmailMessage) -> None:
        self.started.set()
        await self.release.wait()
        raise PermanentFailure("550 too late")


async def test_a_worker_past_its_lease_changes_nothing(smtp_settings, smtp, firm):
    row = await queue(smtp_settings, firm)
    now = datetime.now(UTC)
    slow = SlowTransport()
    stuck = asyncio.create_task(deliver_due(smtp_settings, slow, now=now))
    await asyncio.wait_for(slow.started.wait(), 5)
    # Meanwhile the lease ran out; a second worker reclaims and delivers the row.
    expired = now + timedelta(seconds=smtp_settings.mail_lease_seconds + 2)
    assert await deliver_due(smtp_settings, transport_for(smtp_settings), now=expired) == 1
    slow.release.set()
    assert await stuck == 1
    final = await OutboundEmail.get(pk=row.pk)
    assert final.status == DeliveryStatus.SENT and final.attempts == 1
    assert final.last_error is None and len(smtp.wait_for(1)) == 1


async def test_a_late_outcome_does_not_touch_the_new_claim(smtp_settings, firm):
    row = await queue(smtp_settings, firm)
    now = datetime.now(UTC)
    slow = SlowTransport()
    stuck = asyncio.create_task(deliver_due(smtp_settings, slow, now=now))
    await asyncio.wait_for(slow.started.wait(), 5)
    # A second worker reclaims the expired lease and is still sending when the first answers.
    expired = now + timedelta(seconds=smtp_settings.mail_lease_seconds + 2)
    second = await claim_due(smtp_settings, limit=10, now=expired)
    assert [r.pk for r in second.rows] == [row.pk]
    slow.release.set()
    assert await stuck == 1
    current = await OutboundEmail.get(pk=row.pk)
    assert current.status == DeliveryStatus.QUEUED and current.attempts == 0
    assert current.last_error is None and current.lease_until == second.lease


async def test_claims_do_not_overlap(smtp_settings, firm):
    rows = [await queue(smtp_settings, firm, f"c{i}@example.com") for i in range(5)]
    now = datetime.now(UTC)
    first = await claim_due(smtp_settings, limit=3, now=now)
    second = await claim_due(smtp_settings, limit=10, now=now)
    assert len(first.rows) == 3 and len(second.rows) == 2
    assert {r.pk for r in first.rows} | {r.pk for r in second.rows} == {r.pk for r in rows}
    assert first.lease != second.lease


async def test_worker_loop_delivers_promptly_and_stops(smtp_settings, smtp, firm):
    settings = smtp_settings.model_copy(update={"worker_poll_seconds": 30})
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop))
    await asyncio.sleep(0.1)
    # A long poll interval: only the in-process wake-up can make this quick.
    row = await queue(settings, firm)
    for _ in range(100):
        if (await OutboundEmail.get(pk=row.pk)).status == DeliveryStatus.SENT:
            break
        await asyncio.sleep(0.05)
    assert (await OutboundEmail.get(pk=row.pk)).status == DeliveryStatus.SENT
    assert [m["Message-ID"] for m in smtp.wait_for(1)] == [row.message_id]
    stop.set()
    await asyncio.wait_for(worker, 5)


async def test_worker_survives_a_bad_row(smtp_settings, smtp, firm):
    bad = await queue(smtp_settings, firm, "bad@example.com")
    await OutboundEmail.filter(pk=bad.pk).update(body_encrypted="not a fernet token")
    good = await queue(smtp_settings, firm, "good@example.com")
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(smtp_settings, stop))
    [received] = await asyncio.to_thread(smtp.wait_for, 1)
    stop.set()
    await asyncio.wait_for(worker, 5)
    assert received["To"] == "good@example.com"
    assert (await OutboundEmail.get(pk=good.pk)).status == DeliveryStatus.SENT
    broken = await OutboundEmail.get(pk=bad.pk)
    assert broken.status == DeliveryStatus.QUEUED and broken.attempts == 1
    assert "decrypt" in broken.last_error


async def test_worker_survives_a_failing_round(smtp_settings, smtp, firm, monkeypatch):
    import portico.worker

    calls = []

    async def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database went away")
        return await deliver_due(*args, **kwargs)

    monkeypatch.setattr(portico.worker, "deliver_due", flaky)
    row = await queue(smtp_settings, firm)
    stop = asyncio.Event()
    settings = smtp_settings.model_copy(update={"worker_poll_seconds": 0.05})
    worker = asyncio.create_task(run_worker(settings, stop))
    [received] = await asyncio.to_thread(smtp.wait_for, 1)
    stop.set()
    await asyncio.wait_for(worker, 5)
    assert received["Message-ID"] == row.message_id and len(calls) >= 2


async def test_a_silent_server_times_out_and_is_retried(settings, firm):
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts the connection, never greets

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{port}?timeout=0.3"})
    try:
        row = await queue(settings, firm)
        assert await deliver_due(settings, transport_for(settings)) == 1
    finally:
        server.close()
    retrying = await OutboundEmail.get(pk=row.pk)
    assert retrying.status == DeliveryStatus.QUEUED and retrying.attempts == 1
    assert "in time" in retrying.last_error


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example", SmtpConfig("mail.example", 25)),
        (
            "smtp://user%40corp:p%40ss%3Aw%2Fd@mail.example:2525?starttls=1",
            SmtpConfig("mail.example", 2525, "user@corp", "p@ss:w/d", start_tls=True),
        ),
        ("smtp://mail.example?starttls=1", SmtpConfig("mail.example", 587, start_tls=True)),
        ("smtp://mail.example?starttls=0", SmtpConfig("mail.example", 25, start_tls=False)),
        (
            "smtps://u:p@mail.example",
            SmtpConfig("mail.example", 465, "u", "p", use_tls=True, start_tls=False),
        ),
        (
            "smtps://mail.example:1465?verify=0&timeout=5",
            SmtpConfig(
                "mail.example", 1465, use_tls=True, start_tls=False, validate_certs=False, timeout=5
            ),
        ),
    ],
)
def test_smtp_url_parsing(url, expected):
    assert SmtpConfig.from_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://mail.example",
        "smtp://",
        "smtps://mail.example?starttls=1",
        "smtp://h?starttls=maybe",
    ],
)
def test_bad_smtp_urls_are_refused(url):
    with pytest.raises(ValueError):
        SmtpConfig.from_url(url)


def test_smtp_transport_never_logs_credentials():
    transport = SmtpTransport(SmtpConfig.from_url("smtps://user:hunter2@mail.example"))
    assert str(transport) == "SMTP to mail.example:465 (TLS)"
