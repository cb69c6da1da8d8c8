"""Message.delivery and inbox(deliveryStatus:) without N+1: a reply's delivery is loaded for a
whole page at once (one statement), and the failed-replies filter is part of the page's own
statements. The rows are written directly here (replies against the real servers are in
tests/test_replies.py); the statement counts are pinned."""

from __future__ import annotations

from datetime import UTC, datetime

from models import DeliveryStatus, Message, OutboundEmail
from services.outbound import outbox
from tests.support.sqlcount import count_sql
from tests.test_account_messages import NESTED, populate, statements

STATUSES = (DeliveryStatus.QUEUED, DeliveryStatus.SENT, DeliveryStatus.FAILED)
DELIVERY = "delivery { id status attempts lastError sentAt }"
INBOX = f"""query($first: Int, $status: DeliveryStatus) {{
  inbox(first: $first, deliveryStatus: $status) {{
    totalCount edges {{ node {{ subject accounts {{ name }} {DELIVERY} }} }} }} }}"""
NESTED_WITH_DELIVERY = NESTED.replace("subject", f"subject {DELIVERY}")


async def as_replies(firm_id: int) -> dict[str, DeliveryStatus]:
    """Every 'Shared' message becomes a reply sent through Portico, its delivery QUEUED,
    SENT or FAILED in turn (the shared ones are OUTBOUND: from the office)."""
    shared = await Message.filter(firm_id=firm_id, subject__startswith="Shared").order_by("id")
    done = set(await OutboundEmail.all().values_list("thread_message_id", flat=True))
    made: dict[str, DeliveryStatus] = {}
    for n, message in enumerate(shared):
        status = made[message.subject] = STATUSES[n % 3]
        if message.pk in done:
            continue
        failed = status == DeliveryStatus.FAILED
        await OutboundEmail.create(
            firm_id=firm_id,
            kind="REPLY",
            to_address="client@client.example",
            from_name="Acme LLP",
            subject=message.subject,
            body_encrypted="-",
            message_id=message.message_id,
            status=status,
            attempts=0 if status == DeliveryStatus.QUEUED else 1,
            last_error="550 5.1.1 no such user" if failed else None,
            next_attempt_at=datetime.now(UTC),
            sent_at=datetime.now(UTC) if status == DeliveryStatus.SENT else None,
            thread_message_id=message.pk,
        )
    return made


async def test_the_inbox_with_deliveries_costs_the_same_for_5_and_50_messages(acme):
    firm_id = acme.owner.firm_id
    await populate(acme, 0, 2)  # 6 of their own, 1 shared
    await as_replies(firm_id)
    with count_sql() as seen:
        data = await acme.api.data(INBOX, {"first": 50})
    small = len(seen)
    nodes = [e["node"] for e in data["inbox"]["edges"]]
    assert len(nodes) == 7
    [reply] = [n for n in nodes if n["subject"] == "Shared 0"]
    assert reply["delivery"]["status"] == "QUEUED" and reply["delivery"]["attempts"] == 0
    assert all(n["delivery"] is None for n in nodes if n is not reply)

    await populate(acme, 2, 12)
    made = await as_replies(firm_id)
    with count_sql() as seen:
        data = await acme.api.data(INBOX, {"first": 50})
    nodes = [e["node"] for e in data["inbox"]["edges"]]
    assert len(nodes) == 50
    shown = {n["subject"]: n["delivery"]["status"] for n in nodes if n["delivery"]}
    assert shown == {s: str(made[s].value) for s in shown} and len(shown) == 12
    assert len(seen) == small
    # session, COUNT, page, the messages' accounts, their deliveries
    assert small == 5, small

    # The failed ones only: the same statements, the filter inside the COUNT and the page.
    with count_sql() as seen:
        data = await acme.api.data(INBOX, {"first": 50, "status": "FAILED"})
    failed = sorted(s for s, status in made.items() if status == DeliveryStatus.FAILED)
    assert data["inbox"]["totalCount"] == len(failed) == 4
    assert sorted(e["node"]["subject"] for e in data["inbox"]["edges"]) == failed
    assert all(
        e["node"]["delivery"] == {**e["node"]["delivery"], "status": "FAILED", "attempts": 1}
        and e["node"]["delivery"]["lastError"] == "550 5.1.1 no such user"
        for e in data["inbox"]["edges"]
    )
    assert len(seen) == 5, seen


async def test_account_messages_with_deliveries_cost_the_same_for_5_and_20_accounts(acme):
    firm_id = acme.owner.firm_id
    await populate(acme, 0, 5)
    await as_replies(firm_id)
    small, data = await statements(acme.api, NESTED_WITH_DELIVERY)
    first = data["accounts"]["edges"][0]["node"]["messages"]["edges"]
    assert first[0]["node"]["subject"] == "Shared 0"
    assert first[0]["node"]["delivery"]["status"] == "QUEUED"
    assert all(e["node"]["delivery"] is None for e in first[1:])

    await populate(acme, 5, 15)
    made = await as_replies(firm_id)
    large, data = await statements(acme.api, NESTED_WITH_DELIVERY)
    edges = data["accounts"]["edges"]
    assert len(edges) == 20
    for edge in edges:
        for message in edge["node"]["messages"]["edges"]:
            node = message["node"]
            expected = made.get(node["subject"])
            assert (node["delivery"] or {}).get("status") == (expected and str(expected.value))
    assert small == large
    # session, accounts page, ranked links, messages, the messages' accounts, deliveries
    assert large == 6, large


async def test_only_replies_of_this_firm_count(acme, globex):
    """The filter and the field read the same rows: this firm's replies. Another firm's row
    pointing at one of ours, or a staff alert pointing at a message, counts for neither."""
    await populate(acme, 0, 2)
    message = await Message.filter(firm_id=acme.owner.firm_id).first()
    assert message is not None
    common = {
        "to_address": "x@y.example",
        "from_name": "X",
        "subject": "s",
        "body_encrypted": "-",
        "next_attempt_at": datetime.now(UTC),
        "status": DeliveryStatus.FAILED,
        "thread_message_id": message.pk,
    }
    failed = {"first": 50, "status": "FAILED"}
    await OutboundEmail.create(
        firm_id=globex.owner.firm_id, kind=outbox.REPLY_KIND, message_id="<g@x>", **common
    )
    assert (await acme.api.data(INBOX, failed))["inbox"]["totalCount"] == 0
    page = (await acme.api.data(INBOX, {"first": 50}))["inbox"]
    assert page["edges"] and all(e["node"]["delivery"] is None for e in page["edges"])

    alert = sorted(outbox.STAFF_KINDS)[0]
    await OutboundEmail.create(firm_id=acme.owner.firm_id, kind=alert, message_id="<s@x>", **common)
    assert (await acme.api.data(INBOX, failed))["inbox"]["totalCount"] == 0
    page = (await acme.api.data(INBOX, {"first": 50}))["inbox"]
    assert all(e["node"]["delivery"] is None for e in page["edges"])
