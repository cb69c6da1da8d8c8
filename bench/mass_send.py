"""Queuing a mass mailing: `send_firm_email` to 1,000 accounts against one bulk INSERT.

    python -m bench.mass_send [ACCOUNTS]

On a throwaway PostgreSQL database (PORTICO_BENCH_POSTGRES, default as in the tests) and
on a temporary SQLite file, makes a firm with ACCOUNTS (default 1,000) accounts, each with
one contact whose address has NOTIFY on (written in bulk), then times:
- portico:  `services.portal.notify.send_firm_email(..., kind="MASS")` for all the accounts: finding
  the recipients, rendering, encrypting and queuing the rows (and their Mailing row) in its
  transaction;
- baseline: one `OutboundEmail.bulk_create` (batches of outbox.BATCH rows, in a transaction)
  of the same rows already rendered and encrypted (their mailing_id too): the least any mass
  mailing must write;
- api:      the same mailing through GraphQL (`sendFirmEmail` over ASGI, as a client sees it).
Each is the median of ROUNDS runs, every run on an empty outbox. The ratio is Portico time /
baseline time (how many times longer than the bare INSERTs). Never part of `make test`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
from tortoise.transactions import in_transaction

from bench.data import bulk_accounts, median
from models import OutboundEmail
from portico import db
from portico.app import create_app
from portico.settings import Settings
from schema import ids
from services.firm import firms
from services.outbound import outbox
from services.portal import notify
from services.shared import sessions
from services.shared.scope import FirmScope

POSTGRES_URL = os.environ.get("PORTICO_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
SECRET = "bench-secret"
ROUNDS = 7
SUBJECT = "Our office moves on 1 March"
BODY = "Dear client,\n\nfrom 1 March you will find us at 12 High Street.\n\nKind regards"
SEND = """mutation($input: SendFirmEmailInput!) {
  sendFirmEmail(input: $input) { errors { code field } queued } }"""


async def measure(url: str, count: int, folder: Path) -> dict[str, float]:
    await db.migrate(url)
    await db.init_db(url)
    try:
        settings = Settings(
            database_url=url, secret_key=SECRET, var_dir=folder / "var", _env_file=None
        )
        firm, owner = await firms.create_firm(
            "Bench LLP", "bench", "owner@bench.example", "Owner", "bench-password-1"
        )
        scope = FirmScope(firm.pk)
        account_ids = await bulk_accounts(firm.pk, count, "bulk.example", notify=True)

        async def empty_outbox() -> None:
            await OutboundEmail.all().delete()

        async def portico() -> None:
            queued = await notify.send_firm_email(
                scope, account_ids, SUBJECT, BODY, "MASS", settings
            )
            assert queued == count, queued

        await empty_outbox()
        await portico()  # warm-up; its rows are the baseline's pre-rendered rows
        fields = [
            "firm_id",
            "account_id",
            "invitation_id",
            "kind",
            "category",
            "to_address",
            "from_name",
            "subject",
            "body_encrypted",
            "message_id",
            "next_attempt_at",
            "mailing_id",
        ]
        rendered = await OutboundEmail.all().order_by("id").values(*fields)
        prepared: list[OutboundEmail] = []

        async def prepare_rows() -> None:
            await empty_outbox()
            prepared[:] = [OutboundEmail(**row) for row in rendered]

        async def baseline() -> None:
            async with in_transaction():
                await OutboundEmail.bulk_create(prepared, batch_size=outbox.BATCH)

        results = {
            "portico": await median(portico, empty_outbox, ROUNDS),
            "baseline": await median(baseline, prepare_rows, ROUNDS),
        }
        assert await OutboundEmail.all().count() == count

        token, _ = await sessions.start_staff_session(owner, timedelta(hours=1))
        app = create_app(settings, manage_db=False)  # no lifespan: no in-process worker
        transport = httpx.ASGITransport(app=app)
        variables = {
            "input": {
                "accountIds": [ids.encode("Account", pk) for pk in account_ids],
                "subject": SUBJECT,
                "body": BODY,
                "kind": "MASS",
            }
        }
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:

            async def api() -> None:
                response = await http.post(
                    "/graphql",
                    json={"query": SEND, "variables": variables},
                    headers={"Authorization": f"Bearer {token}"},
                )
                payload = response.json()["data"]["sendFirmEmail"]
                assert payload == {"errors": [], "queued": count}, payload

            results["api"] = await median(api, empty_outbox, ROUNDS)
        return results
    finally:
        await db.close_db()


async def main(count: int) -> None:
    logging.disable(logging.INFO)  # the app's access log would print a line per request
    results: dict[str, dict[str, float]] = {}
    name = f"portico_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(POSTGRES_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory() as folder:
            url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
            results["PostgreSQL"] = await measure(url, count, Path(folder))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite://{Path(folder) / 'bench.sqlite3'}"
        results["SQLite"] = await measure(url, count, Path(folder))

    print(f"mass mailing: send_firm_email to {count} accounts, one NOTIFY address each")
    print(f"(median of {ROUNDS} runs, each on an empty outbox)")
    for backend, r in results.items():
        print(f"  {backend}")
        portico = r["portico"] * 1000
        print(
            f"    portico   {portico:8.1f} ms  send_firm_email: recipients, render, encrypt, INSERT"
        )
        print(f"    baseline  {r['baseline'] * 1000:8.1f} ms  one bulk_create of the same rows")
        print(f"    ratio     {r['portico'] / r['baseline']:8.1f}x  (Portico time / baseline time)")
        print(f"    api       {r['api'] * 1000:8.1f} ms  sendFirmEmail through GraphQL")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
