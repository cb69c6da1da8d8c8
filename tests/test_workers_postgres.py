"""Two `portico worker` processes share one PostgreSQL queue: none lost, none sent twice."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tortoise.transactions import in_transaction

from models import DeliveryStatus, Firm, OutboundEmail
from portico.settings import Settings
from services.outbound import outbox
from tests.support.smtp import SmtpServer, smtp_fixture  # noqa: F401
from tests.support.worker import start_worker

MESSAGES = 1000
SECRET = "workers-test-secret"


def wait_for_line(log: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        assert process.poll() is None, log.read_text(errors="replace")
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in {log}:\n{log.read_text(errors='replace')}")


async def test_two_workers_deliver_1000_messages_once(clean_db, smtp, tmp_path):
    if clean_db.backend != "postgres":
        pytest.skip("several worker processes need PostgreSQL (PORTICO_TEST_DATABASE=postgres)")
    settings = Settings(
        database_url=clean_db.url, var_dir=tmp_path / "var", secret_key=SECRET, _env_file=None
    )
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    workers = [
        start_worker(
            log,
            database_url=clean_db.url,
            smtp_url=smtp.url,
            secret_key=SECRET,  # the key the rows were encrypted with
            var_dir=settings.var_dir,
            worker_poll_seconds=0.1,
        )
        for log in logs
    ]
    try:
        for worker, log in zip(workers, logs, strict=True):
            await asyncio.to_thread(wait_for_line, log, "mail delivery started", worker, 30)
            # Its long-lived heap is out of the collector's walks, as the API's is.
            assert "heap settled: " in log.read_text(errors="replace")

        # Both workers are polling; the whole queue appears at once, in one commit.
        firm = await Firm.create(name="Acme LLP", slug="acme")
        async with in_transaction():
            for i in range(MESSAGES):
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
                    kind="staff_password",
                    settings=settings,
                )

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            sent = await OutboundEmail.filter(status=DeliveryStatus.SENT).count()
            if sent == MESSAGES:
                break
            for worker, log in zip(workers, logs, strict=True):
                assert worker.poll() is None, log.read_text(errors="replace")
            await asyncio.sleep(0.25)
        assert sent == MESSAGES, f"only {sent} of {MESSAGES} sent in 120 s"
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(worker.wait, 30) for worker in workers]
    assert codes == [0, 0]  # SIGTERM is a clean stop

    received = smtp.wait_for(MESSAGES, timeout=10)
    ids = [message["Message-ID"] for message in received]
    rows = await OutboundEmail.all()
    assert len(received) == MESSAGES and len(set(ids)) == MESSAGES
    assert set(ids) == {row.message_id for row in rows}
    assert {message["To"] for message in received} == {row.to_address for row in rows}
    assert await OutboundEmail.filter(status=DeliveryStatus.QUEUED).count() == 0
    assert {row.attempts for row in rows} == {1} and all(r.lease_until is None for r in rows)
    # Both processes took part, and between them sent each message once.
    per_worker = [log.read_text(errors="replace").count(" sent to ") for log in logs]
    assert sum(per_worker) == MESSAGES and min(per_worker) > 0, per_worker
