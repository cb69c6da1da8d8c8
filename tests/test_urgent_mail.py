"""Mail a person waits for at a sign-in (a code, a new-device notice, a password link) is
claimed before the rest of the queue (services/outbound/outbox.URGENT_KINDS): a firm's mass
mailing of many hundreds does not hold up a sign-in code."""

from __future__ import annotations

from tortoise import Tortoise
from tortoise.transactions import in_transaction

from models import OutboundEmail
from services.loops.delivery import deliver_due
from services.outbound import outbox
from services.outbound.transport import transport_for
from tests.support.smtp import smtp_fixture  # noqa: F401  (the `smtp` fixture)
from tests.test_second_factor import code_in, require, staff_sign_in, verify

MASS = 300


async def queue_mass_mail(firm_id: int, settings) -> None:
    context = {"subject": "News", "body": "b", "firm_name": "Acme", "account_name": "A"}
    context |= {"copy_to": None, "name_account": False}
    mails = [
        outbox.Mail(f"client{n}@example.com", "firm_email", context, "MASS") for n in range(MASS)
    ]
    assert await outbox.enqueue_bulk(firm_id, "Acme LLP", mails, settings) == MASS


async def test_a_sign_in_code_overtakes_a_mass_mailing(acme, anon, settings, smtp):
    await require(acme.api, staffSecondFactor="EMAIL_CODE")
    await queue_mass_mail(acme.owner.firm_id, settings)
    challenge = (await staff_sign_in(anon, "acme", "owner@acme.example"))["secondFactor"]
    mail_settings = settings.model_copy(update={"smtp_url": smtp.url})
    # One delivery round, of a handful: the code goes out in it, the mass mail waits.
    assert await deliver_due(mail_settings, transport_for(mail_settings), limit=5) == 5
    codes = [m for m in smtp.messages if "code" in m["Subject"].lower()]
    assert len(codes) == 1 and codes[0]["To"] == "owner@acme.example"
    assert (await verify(anon, challenge["id"], code_in(codes[0])))["token"]
    kinds = dict(await OutboundEmail.all().values_list("kind", "priority"))
    assert kinds == {"MASS": outbox.NORMAL, "SIGN_IN_CODE": outbox.URGENT}


async def test_the_claim_reads_the_index_in_its_order(acme, settings):
    """On PostgreSQL the claim's plan walks the (status, priority, next_attempt_at, id) index
    with no sort, however many rows wait (planner statistics refreshed first)."""
    connection = Tortoise.get_connection("default")
    if connection.capabilities.dialect != "postgres":
        return
    await queue_mass_mail(acme.owner.firm_id, settings)
    await connection.execute_script("ANALYZE outbound_email")
    sql = (
        "EXPLAIN SELECT id FROM outbound_email WHERE status = 'QUEUED' AND next_attempt_at <= "
        "now() AND (lease_until IS NULL OR lease_until < now()) ORDER BY priority, "
        "next_attempt_at, id LIMIT 50 FOR UPDATE SKIP LOCKED"
    )
    async with in_transaction() as one:  # one connection: the SET holds for the EXPLAIN
        # A few hundred rows are read faster whole: ask what the plan is when they are not.
        await one.execute_script("SET LOCAL enable_seqscan = off")
        rows = await one.execute_query_dict(sql)
    plan = "\n".join(row["QUERY PLAN"] for row in rows)
    [index] = await connection.execute_query_dict(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'outbound_email' "
        "AND indexdef LIKE '%(status, priority, next_attempt_at, id)%'"
    )
    assert f"Index Scan using {index['indexname']} " in plan, plan
    assert "Sort" not in plan, plan
