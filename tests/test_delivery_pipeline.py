"""Delivery at speed and under faults (issue 14), against a real SMTP server (aiosmtpd).

- the retry schedule: the defaults keep trying for at least 4 days, waits growing to hours;
- connections reused between messages; a connection the server closed while idle, or closes
  at MAIL FROM, does not fail the next message (a new one, within the same attempt);
- the classic duplicate: a server that takes the DATA and drops before its final reply. The
  send is a temporary failure, retried later with the same Message-ID: the recipient gets
  it twice (at least once, as the delivery module documents);
- at most PORTICO_MAIL_SEND_CONCURRENCY sends at once; SENT outcomes written in batches;
- stop (SIGTERM) mid-batch, in process and to a `portico worker` process: sends under way
  finish, rows not started are handed back at once; none lost, none sent twice;
- the platform's mail written directly (services/outbound/wire) reads as build_message's.
"""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from tortoise.exceptions import OperationalError

from models import DeliveryStatus, Firm, OutboundEmail
from portico.settings import Settings
from portico.worker import run_worker
from services.loops import delivery
from services.loops.delivery import deliver_due, retry_delay
from services.outbound import outbox
from services.outbound.outbox import Bodies
from services.outbound.transport import (
    SmtpConfig,
    SmtpTransport,
    TemporaryFailure,
    build_message,
    outgoing_message,
    transport_for,
)
from services.outbound.wire import WireMessage, build_wire
from services.shared.leases import lease_token
from tests.support.smtp import SmtpServer, free_port
from tests.support.sqlcount import count_sql
from tests.support.worker import start_worker

DAY = 24 * 3600


async def queue(settings: Settings, firm: Firm, count: int) -> list[OutboundEmail]:
    return [
        await outbox.enqueue(
            firm_id=firm.pk,
            firm_name=firm.name,
            to=f"client{i}@example.com",
            template="staff_password",
            context={
                "firm_name": firm.name,
                "member_name": f"Member {i}",
                "link": f"https://portal.example/p?token={i}",
                "expires_at": datetime(2030, 1, 1, tzinfo=UTC),
            },
            kind="STAFF_ONBOARDING",
            settings=settings,
        )
        for i in range(count)
    ]


class Server(SmtpServer):
    """SmtpServer with a few ways to misbehave, and a count of sessions and of the DATA
    commands being answered at once."""

    def __init__(self, **smtp_options: Any) -> None:
        super().__init__()
        self.smtp_options = smtp_options
        self.sessions: set[int] = set()
        self.transactions: Counter[int] = Counter()  # per session
        self.drop_after_data = 0  # keep the message, then hang up instead of answering
        self.close_at_second_mail = False  # 421 at the 2nd MAIL FROM of a session
        self.in_data = 0
        self.most_in_data = 0
        self._count_lock = threading.Lock()

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        if self._controller is not None:
            return
        if not self.port:
            self.port = free_port()
        controller = Controller(self, hostname=self.host, port=self.port, **self.smtp_options)
        controller.start()
        self._controller = controller

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self._count_lock:
            self.sessions.add(id(session))
            self.transactions[id(session)] += 1
            refuse = self.close_at_second_mail and self.transactions[id(session)] == 2
        if refuse:
            asyncio.get_running_loop().call_soon(server.transport.close)
            return "421 4.4.2 closing this connection"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._count_lock:
            self.in_data += 1
            self.most_in_data = max(self.most_in_data, self.in_data)
            drop = self.drop_after_data > 0
            self.drop_after_data -= drop
        try:
            reply = await super().handle_DATA(server, session, envelope)
        finally:
            with self._count_lock:
                self.in_data -= 1
        if drop:  # the message is kept: the client never hears so
            server.transport.abort()
        return reply


@pytest.fixture
def server() -> Any:
    server = Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def firm(settings: Settings) -> Firm:
    return await Firm.create(name="Acme LLP", slug="acme")


def mail_settings(settings: Settings, server: SmtpServer, **changes: Any) -> Settings:
    return settings.model_copy(update={"smtp_url": server.url, **changes})


def ids(server: SmtpServer) -> Counter[str]:
    return Counter(str(message["Message-ID"]) for message in server.messages)


# The retry schedule


class Lowest(random.Random):
    """The jitter at its lowest every time: the shortest schedule there can be."""

    def uniform(self, a: float, b: float) -> float:
        return a


def test_the_default_schedule_retries_for_at_least_four_days():
    settings = Settings(_env_file=None)
    waits = [
        retry_delay(settings, attempt, Lowest()) for attempt in range(1, settings.mail_max_attempts)
    ]
    assert sum(waits) >= 4 * DAY  # RFC 5321: give up only after 4 to 5 days
    base, cap = settings.mail_retry_base_seconds, settings.mail_retry_max_seconds
    nominal = [min(base * 2 ** (n - 1), cap) for n in range(1, settings.mail_max_attempts)]
    assert sum(nominal) <= 5.5 * DAY  # and not much longer
    assert waits[0] == pytest.approx(base * 0.8) and base <= 60  # the first retry is soon
    assert max(waits) >= 3 * 3600 and waits == sorted(waits)  # growing to hours


# Connections


async def test_connections_are_reused_and_outcomes_written_in_batches(settings, server, firm):
    mail = mail_settings(settings, server, mail_send_concurrency=4)
    rows = await queue(mail, firm, 30)
    transport = transport_for(mail)
    assert isinstance(transport, SmtpTransport)
    with count_sql() as statements:
        assert await deliver_due(mail, transport) == 30
    assert await deliver_due(mail, transport) == 0
    await transport.aclose()
    assert ids(server) == Counter({row.message_id: 1 for row in rows})
    assert 1 <= len(server.sessions) <= 4 and transport.pool.opened == len(server.sessions)
    # The claim's UPDATE, then SENT for 25 rows and for the last 5: one UPDATE each.
    updates = [s for s in statements if s.lstrip().upper().startswith("UPDATE")]
    assert len(updates) == 3, updates
    sent = await OutboundEmail.all()
    assert {(row.status, row.attempts, row.lease_until) for row in sent} == {
        (DeliveryStatus.SENT, 1, None)
    }
    assert all(row.sent_at is not None for row in sent)


async def test_sent_outcomes_whose_write_fails_are_kept_for_the_next_write(
    settings, server, firm, monkeypatch
):
    """The batch of SENT outcomes fails to be written (the database, for a moment): its rows
    are written by the round's last flush, not dropped (they would have stayed leased, and
    gone out again once the lease ran out)."""
    mail = mail_settings(settings, server, mail_send_concurrency=1)
    rows = await queue(mail, firm, delivery.FLUSH_ROWS)
    record_sent = delivery._record_sent
    failed: list[int] = []

    async def failing_once(rows: list[OutboundEmail], *args: Any) -> None:
        if not failed:
            failed.append(len(rows))
            raise OperationalError("the database went away")
        await record_sent(rows, *args)

    monkeypatch.setattr(delivery, "_record_sent", failing_once)
    transport = transport_for(mail)
    with pytest.raises(ExceptionGroup) as raised:  # the runner's error, as before
        await deliver_due(mail, transport)
    assert raised.group_contains(OperationalError)
    assert failed == [delivery.FLUSH_ROWS]
    await transport.aclose()
    assert ids(server) == Counter({row.message_id: 1 for row in rows})
    assert {(row.status, row.attempts, row.lease_until) for row in await OutboundEmail.all()} == {
        (DeliveryStatus.SENT, 1, None)
    }


class RefusesFirstClient(Server):
    """451 at RCPT TO for client0@example.com: a temporary failure, for that row alone."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address == "client0@example.com":
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def round_failing_with_the_database(mail: Settings, server: Server) -> None:
    """A round of deliver_due, which must fail with the database's error; then the server
    is stopped."""
    transport = transport_for(mail)
    try:
        with pytest.raises(ExceptionGroup) as raised:
            await deliver_due(mail, transport)
    finally:
        await transport.aclose()
        server.stop()
    assert raised.group_contains(OperationalError)


async def test_a_runner_whose_outcome_write_fails_lets_the_other_sends_finish(
    settings, firm, monkeypatch
):
    """One runner cannot write its row's outcome (the database, for a moment) while another
    runner's message is in DATA. That send finishes and its SENT is written: cancelled, it
    would have left a message the server may have kept with its row leased, to go out again.
    The rows not started go back to the queue at once, and the round fails."""
    server = RefusesFirstClient()
    server.start()
    server.slow(0.5)
    mail = mail_settings(settings, server, mail_send_concurrency=2)
    rows = await queue(mail, firm, 4)
    record = delivery._record

    async def failing_for_the_refused(row: OutboundEmail, *args: Any, **changes: Any) -> bool:
        if row.pk != rows[0].pk:
            return await record(row, *args, **changes)
        deadline = time.monotonic() + 5
        while server.in_data == 0:  # the other runner's message is in DATA
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        raise OperationalError("the database went away")

    monkeypatch.setattr(delivery, "_record", failing_for_the_refused)
    await round_failing_with_the_database(mail, server)
    assert ids(server) == Counter({rows[1].message_id: 1})
    after = {row.pk: row for row in await OutboundEmail.all()}
    assert (after[rows[1].pk].status, after[rows[1].pk].lease_until) == (DeliveryStatus.SENT, None)
    for row in rows[2:]:  # not started: due at once, no attempt counted
        assert (after[row.pk].status, after[row.pk].attempts) == (DeliveryStatus.QUEUED, 0)
        assert after[row.pk].lease_until is None
    assert after[rows[0].pk].lease_until is not None  # its outcome unwritten: sent after the lease


async def test_rows_not_started_go_back_when_the_only_runner_fails(settings, firm, monkeypatch):
    """One runner, and its outcome write fails: no runner is left to hand the rest of the
    claim back, so the round does it before it fails."""
    server = RefusesFirstClient()
    server.start()
    mail = mail_settings(settings, server, mail_send_concurrency=1)
    rows = await queue(mail, firm, 3)
    record = delivery._record

    async def failing_for_the_refused(row: OutboundEmail, *args: Any, **changes: Any) -> bool:
        if row.pk == rows[0].pk:
            raise OperationalError("the database went away")
        return await record(row, *args, **changes)

    monkeypatch.setattr(delivery, "_record", failing_for_the_refused)
    await round_failing_with_the_database(mail, server)
    assert server.messages == []
    after = {row.pk: row for row in await OutboundEmail.all()}
    for row in rows[1:]:  # not started: due at once, no attempt counted
        assert (after[row.pk].attempts, after[row.pk].lease_until) == (0, None)


async def test_a_connection_the_server_closed_while_idle_is_replaced(settings, firm):
    server = Server(timeout=0.3)  # aiosmtpd hangs up after 0.3 s without a command
    server.start()
    try:
        mail = mail_settings(settings, server, mail_send_concurrency=1)
        transport = transport_for(mail)
        [first] = await queue(mail, firm, 1)
        assert await deliver_due(mail, transport) == 1
        await asyncio.sleep(0.8)  # the pooled connection is closed by the server meanwhile
        [second] = await queue(mail, firm, 1)
        assert await deliver_due(mail, transport) == 1
        await transport.aclose()
    finally:
        server.stop()
    row = await OutboundEmail.get(pk=second.pk)
    assert row.status == DeliveryStatus.SENT and row.attempts == 1 and row.last_error is None
    assert ids(server) == Counter({first.message_id: 1, second.message_id: 1})
    assert transport.pool.opened == 2


async def test_a_421_at_mail_from_on_a_reused_connection_goes_over_a_new_one(
    settings, server, firm
):
    server.close_at_second_mail = True
    mail = mail_settings(settings, server, mail_send_concurrency=1)
    transport = transport_for(mail)
    [first] = await queue(mail, firm, 1)
    assert await deliver_due(mail, transport) == 1
    [second] = await queue(mail, firm, 1)
    assert await deliver_due(mail, transport) == 1  # refused on the reused connection
    await transport.aclose()
    row = await OutboundEmail.get(pk=second.pk)
    # Nothing was accepted at MAIL FROM: sent at once on a new connection, the same attempt.
    assert row.status == DeliveryStatus.SENT and row.attempts == 1 and row.last_error is None
    assert ids(server) == Counter({first.message_id: 1, second.message_id: 1})
    assert transport.pool.opened == 2


async def test_a_drop_after_data_is_retried_with_the_same_message_id(settings, server, firm):
    """The classic duplicate: the server keeps the message and hangs up before its 250."""
    mail = mail_settings(settings, server, mail_send_concurrency=1)
    transport = transport_for(mail)
    [before] = await queue(mail, firm, 1)
    assert await deliver_due(mail, transport) == 1  # the connection stays open for the next
    server.drop_after_data = 1
    [row] = await queue(mail, firm, 1)
    now = datetime.now(UTC)
    assert await deliver_due(mail, transport, now=now) == 1
    retrying = await OutboundEmail.get(pk=row.pk)
    # Not sent again at once over a new connection (as a drop before DATA would be): the
    # server may have it. A temporary failure, retried after the backoff.
    assert retrying.status == DeliveryStatus.QUEUED and retrying.attempts == 1
    assert "SMTPServerDisconnected" in retrying.last_error and retrying.lease_until is None
    assert retrying.next_attempt_at > now
    assert ids(server) == Counter({before.message_id: 1, row.message_id: 1})  # it has it

    assert await deliver_due(mail, transport, now=retrying.next_attempt_at) == 1
    await transport.aclose()
    sent = await OutboundEmail.get(pk=row.pk)
    assert sent.status == DeliveryStatus.SENT and sent.attempts == 2
    # At least once: the recipient sees it twice, with one Message-ID to tell the repeat.
    assert ids(server) == Counter({before.message_id: 1, row.message_id: 2})


# Concurrency and stopping


async def test_the_worker_claims_more_while_the_last_sends_run(settings, server, firm):
    server.slow(0.05)
    mail = mail_settings(settings, server, mail_send_concurrency=2)
    rows = await queue(mail, firm, 23)
    transport = transport_for(mail)
    with count_sql() as statements:
        # Claims of 5: the next is made once two rows are left, until one comes back short.
        assert await deliver_due(mail, transport, limit=5, more=True) == 23
    claims = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "LIMIT" in s]
    await transport.aclose()
    assert len(claims) == 5  # 5, 5, 5, 5, 3: no claim after the short one
    assert ids(server) == Counter({row.message_id: 1 for row in rows})
    after = await OutboundEmail.all()
    assert {(row.status, row.attempts, row.lease_until) for row in after} == {
        (DeliveryStatus.SENT, 1, None)
    }


async def test_at_most_the_configured_sends_run_at_once(settings, server, firm):
    server.slow(0.3)
    mail = mail_settings(settings, server, mail_send_concurrency=3)
    await queue(mail, firm, 9)
    transport = transport_for(mail)
    started = time.monotonic()
    assert await deliver_due(mail, transport) == 9
    elapsed = time.monotonic() - started
    await transport.aclose()
    assert server.most_in_data == 3
    assert elapsed < 2.0  # three at a time take 0.9 s; one after another, 2.7 s
    assert len(ids(server)) == 9


async def three_sent_the_rest_sent_next(
    mail: Settings, server: Server, rows: list[OutboundEmail]
) -> None:
    """After a stop with three sends under way: those three were sent once and are SENT,
    the others are back in the queue, due at once and unattempted. The next worker sends
    the rest; each message arrives once in all."""
    after = {row.pk: row for row in await OutboundEmail.all()}
    sent = {pk for pk, row in after.items() if row.status == DeliveryStatus.SENT}
    assert len(sent) == 3 and ids(server) == Counter({after[pk].message_id: 1 for pk in sent})
    for pk, row in after.items():
        assert row.lease_until is None  # handed back, not left to its lease
        if pk not in sent:
            assert row.status == DeliveryStatus.QUEUED and row.attempts == 0
            assert row.next_attempt_at <= datetime.now(UTC)  # due at once for any worker

    server.slow(0)
    transport = transport_for(mail)
    while await deliver_due(mail, transport):
        pass
    await transport.aclose()
    assert ids(server) == Counter({row.message_id: 1 for row in rows})
    assert {row.status for row in await OutboundEmail.all()} == {DeliveryStatus.SENT}


async def test_stop_mid_batch_loses_nothing_and_sends_nothing_twice(settings, server, firm):
    server.slow(1.0)
    mail = mail_settings(settings, server, mail_send_concurrency=3, worker_poll_seconds=30)
    rows = await queue(mail, firm, 12)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(mail, stop))
    deadline = time.monotonic() + 10
    while server.in_data < 3:  # three sends under way, the other nine not started
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    stop.set()  # what SIGTERM does (portico/cli.py)
    await asyncio.sleep(0.2)
    # Before the sends under way have ended, the rows not started are back in the queue.
    leased = await OutboundEmail.filter(lease_until__isnull=False).count()
    assert leased == 3 and server.messages == []
    stopping = time.monotonic()
    await asyncio.wait_for(worker, 5)
    assert time.monotonic() - stopping < 2.0  # the sends under way finish; no more start

    await three_sent_the_rest_sent_next(mail, server, rows)


async def test_sigterm_to_a_portico_worker_mid_batch_loses_nothing(
    settings, server, firm, tmp_path
):
    """The same as a real process: SIGTERM to `portico worker` while three sends are in DATA.
    It exits 0 once they have finished (within the SMTP timeout), having handed the other rows
    back; the next worker sends those, each message once in all."""
    server.slow(1.0)
    secret = "sigterm-secret"
    mail = mail_settings(settings, server, secret_key=secret)
    rows = await queue(mail, firm, 12)
    log = tmp_path / "worker.log"
    worker = start_worker(
        log,
        database_url=mail.resolved_database_url,
        secret_key=secret,  # the key the bodies were encrypted with
        var_dir=tmp_path / "var",
        smtp_url=server.url,
        mail_send_concurrency=3,
        worker_poll_seconds=0.2,
    )
    try:
        deadline = time.monotonic() + 60
        while server.in_data < 3:  # three sends under way, the other nine not started
            assert worker.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            await asyncio.sleep(0.01)
        worker.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        code = await asyncio.to_thread(worker.wait, 30)
        stopped_after = time.monotonic() - stopping
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert code == 0, log.read_text(errors="replace")  # a clean stop
    assert stopped_after < 15.0  # the sends under way (1 s each) finished, not the lease
    await three_sent_the_rest_sent_next(mail, server, rows)


async def test_a_stop_hands_back_every_unstarted_row_at_once(settings, server, firm):
    # The stop watcher's hand-back UPDATE must finish even when the runners end first
    # (cancelled mid-UPDATE, it left rows leased for the whole lease).
    mail = mail_settings(settings, server, mail_send_concurrency=8)
    left = 0
    for attempt in range(15):
        await queue(mail, firm, 60)
        transport = transport_for(mail)
        stop = asyncio.Event()
        task = asyncio.create_task(deliver_due(mail, transport, stop=stop, more=True))
        await asyncio.sleep(0.005 * (attempt % 5 + 1))
        stop.set()
        await task
        await transport.aclose()
        left += await OutboundEmail.filter(
            status=DeliveryStatus.QUEUED, lease_until__isnull=False
        ).count()
        await OutboundEmail.all().delete()
    assert left == 0


class HangAtSecondMail(Server):
    """Answers a session's second MAIL FROM only after `hang` seconds."""

    hang = 4.0

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self._count_lock:
            self.transactions[id(session)] += 1
            second = self.transactions[id(session)] == 2
        if second:
            await asyncio.sleep(self.hang)
        envelope.mail_from = address
        return "250 OK"


def _established(port: int) -> int:
    """Open TCP connections to `port` on this machine (the server's side of them)."""
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.read().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
                count += 1
    return count


def _plain(i: int) -> WireMessage:
    data = f"From: a@b.example\r\nTo: c@d.example\r\nMessage-ID: <{i}@x>\r\n\r\nhi\r\n"
    return WireMessage("a@b.example", "c@d.example", f"<{i}@x>", data.encode())


async def test_a_reused_connection_that_times_out_at_mail_from_is_closed():
    server = HangAtSecondMail()
    server.start()
    try:
        transport = SmtpTransport(SmtpConfig.from_url(server.url + "?timeout=0.5"))
        await transport.send(_plain(1))
        assert transport.pool.idle == 1
        with pytest.raises(TemporaryFailure, match="in time"):
            await transport.send(_plain(2))  # reused; MAIL FROM hangs; the timeout fires
        assert transport.pool.idle == 0
        await asyncio.sleep(0.5)
        assert _established(server.port) == 0  # closed, not left open
        await transport.aclose()
    finally:
        server.stop()


def test_a_lease_token_is_never_shorter_than_the_lease():
    now = datetime(2026, 11, 30, 9, 0, 0, 999_999, tzinfo=UTC)
    tokens = {lease_token(now, 8) for _ in range(50)}
    assert len(tokens) > 40  # each claim's own
    assert min(tokens) >= now + timedelta(seconds=8)
    assert max(tokens) < now + timedelta(seconds=9)


async def test_sent_is_written_within_the_lease_while_the_next_send_runs(settings, server, firm):
    # One runner, 1.95 s a message, an 8 s lease (2 s SMTP timeout): the third message is
    # sent at about 5.9 s. Its SENT must be written before the lease ends, not after the
    # runner's next send; else a second worker (polling from 6.5 s, as another process
    # would) claims it once the lease is over and sends it again. The claim is made just
    # before a whole second, which a lease token rounded down would have cut off.
    server.slow(1.95)
    mail = mail_settings(settings, server, mail_send_concurrency=1, mail_lease_seconds=8)
    rows = await queue(mail, firm, 6)
    first, second = transport_for(mail), transport_for(mail)
    await asyncio.sleep((0.96 - time.time() % 1) % 1)  # just before a whole second
    start = time.monotonic()
    worker = asyncio.create_task(deliver_due(mail, first, limit=4, more=True))

    async def other_worker() -> None:
        await asyncio.sleep(6.5)
        while time.monotonic() - start < 12:
            await deliver_due(mail, second, limit=1)
            await asyncio.sleep(0.02)

    await asyncio.gather(worker, other_worker(), other_worker(), other_worker())
    while await deliver_due(mail, first):
        pass
    await first.aclose()
    await second.aclose()
    assert ids(server) == Counter({row.message_id: 1 for row in rows})


# The platform's mail, written directly


def _row(**changes: Any) -> OutboundEmail:
    fields = {
        "id": 7,
        "firm_id": 1,
        "kind": "INVITATION",
        "to_address": "client@bücher.example",
        "from_name": "Acme LLP",
        "subject": "Your documents",
        "body_encrypted": "",
        "message_id": "<outbox.abc@portico.example>",
        "attempts": 0,
        "next_attempt_at": datetime.now(UTC),
    }
    return OutboundEmail(**{**fields, **changes})


BODIES = [
    Bodies(text="Hello,\n\nyour link: https://portal.example/p?token=a=b\n", html="<p>Hi</p>"),
    Bodies(
        text="Grüße aus Köln — " + "sehr lange Zeile " * 20 + "\r\n.\r\nline with space \n",
        html="<p>Grüße</p>\n<p>" + "x" * 200 + "</p>",
    ),
    Bodies(text="Plain text only, no HTML.\n", html=""),
]


@pytest.mark.parametrize("bodies", BODIES, ids=["ascii", "non-ascii-long", "text-only"])
@pytest.mark.parametrize(
    "row",
    [
        _row(),
        _row(from_name='Müller & Söhne, "Steuer" GmbH', subject="Ihre Unterlagen für 2025 ✓"),
        _row(subject="A long subject " * 12 + "=?utf-8?q?not-an-encoded-word?="),
    ],
    ids=["plain", "non-ascii", "long-subject"],
)
def test_wire_messages_read_as_build_message_ones(row, bodies):
    settings = Settings(mail_from="Portico <mail@portico.example>", _env_file=None)
    date = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    wire = build_wire(row, bodies, settings, date)
    assert wire.data.isascii() and not wire.eight_bit
    assert max(len(line) for line in wire.data.split(b"\r\n")) <= 998
    assert b"\n" not in wire.data.replace(b"\r\n", b"")
    assert (wire.sender, wire.recipient) == ("mail@portico.example", "client@xn--bcher-kva.example")
    # Parsed as the reference, with \n line ends (the parser keeps the ones it is given).
    ours = message_from_bytes(wire.data.replace(b"\r\n", b"\n"), policy=policy.default)
    theirs = message_from_bytes(
        build_message(row, bodies, settings, date).as_bytes(), policy=policy.default
    )
    for header in ("From", "To", "Message-ID", "Date"):
        assert ours[header] == theirs[header], header
    # As written: text that looks like an encoded word is encoded, so it is not decoded
    # (build_message's email package leaves it bare, and a reader decodes it).
    assert ours["Subject"] == row.subject
    assert ours.get_content_type() == theirs.get_content_type()
    for kind in ("plain", "html"):
        mine, reference = ours.get_body((kind,)), theirs.get_body((kind,))
        assert (mine is None) == (reference is None)
        if mine is not None:
            assert mine.get_content() == reference.get_content()


def test_a_row_with_threading_headers_goes_through_build_message():
    settings = Settings(mail_from="Portico <mail@portico.example>", _env_file=None)
    row = _row(headers={"In-Reply-To": "<m1@client.example>"})
    message = outgoing_message(row, BODIES[0], settings)
    assert isinstance(message, EmailMessage) and message["In-Reply-To"] == "<m1@client.example>"
    with pytest.raises(ValueError, match="build_message"):
        build_wire(row, BODIES[0], settings)
    assert isinstance(outgoing_message(_row(), BODIES[0], settings), WireMessage)
