"""Account.deliveries: each account's outgoing mail, paged, newest first, staff only."""

from __future__ import annotations

from models import StaffRole
from schema import ids
from services.mail import alerts, digests
from services.outbound import outbox
from services.shared.sessions import now
from tests.support.api import add_staff, api_for
from tests.support.crm_ops import new_account

PAGE = """query($first: Int, $after: String) { accounts { edges { node { name
  deliveries(first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } edges { node { to subject status } }
  } } } } }"""


async def _queue(settings, firm_id: int, account_gid: str, to: str, subject: str) -> None:
    await outbox.enqueue(
        firm_id=firm_id,
        firm_name="Acme LLP",
        to=to,
        template="invitation",
        context={
            "firm_name": "Acme",
            "account_name": subject,
            "link": "http://x/",
            "expires_at": now(),
        },
        kind="DIRECT",
        settings=settings,
        account_id=ids.decode(account_gid, "Account"),
    )


async def test_pages_of_several_accounts(acme, settings):
    first = await new_account(acme.api, "A first")
    second = await new_account(acme.api, "B second")
    await new_account(acme.api, "C empty")
    for n in range(3):
        await _queue(settings, acme.owner.firm_id, first["id"], f"a{n}@x.example", f"A{n}")
    await _queue(settings, acme.owner.firm_id, second["id"], "b0@x.example", "B0")

    data = await acme.api.data(PAGE, {"first": 2})
    pages = {e["node"]["name"]: e["node"]["deliveries"] for e in data["accounts"]["edges"]}
    assert pages["A first"]["totalCount"] == 3
    assert [d["node"]["to"] for d in pages["A first"]["edges"]] == ["a2@x.example", "a1@x.example"]
    assert pages["A first"]["pageInfo"]["hasNextPage"] is True
    assert pages["B second"]["totalCount"] == 1 and not pages["B second"]["pageInfo"]["hasNextPage"]
    assert pages["C empty"] == {
        "totalCount": 0,
        "pageInfo": {"hasNextPage": False, "endCursor": None},
        "edges": [],
    }

    after = await acme.api.data(
        PAGE, {"first": 2, "after": pages["A first"]["pageInfo"]["endCursor"]}
    )
    rest = {e["node"]["name"]: e["node"]["deliveries"] for e in after["accounts"]["edges"]}
    assert [d["node"]["to"] for d in rest["A first"]["edges"]] == ["a0@x.example"]
    assert rest["B second"]["totalCount"] == 1 and rest["B second"]["edges"] == []
    assert all(d["node"]["status"] == "QUEUED" for d in pages["A first"]["edges"])


async def test_other_firms_mail_is_not_counted(acme, globex, settings):
    """Tenancy, not the account filter alone: a row of globex's that names acme's account (as
    a forged or corrupt row would) is not acme's to see; globex sees its own row."""
    mine = await new_account(acme.api, "Mine")
    theirs = await new_account(globex.api, "Theirs")
    await _queue(settings, globex.owner.firm_id, theirs["id"], "t@x.example", "T")
    await _queue(settings, globex.owner.firm_id, mine["id"], "forged@x.example", "F")
    await _queue(settings, acme.owner.firm_id, mine["id"], "m@x.example", "M")
    query = (
        "query($id: ID!) { account(id: $id) { deliveries { totalCount edges { node { to } } } } }"
    )

    data = await acme.api.data(query, {"id": mine["id"]})
    assert data["account"]["deliveries"]["totalCount"] == 1
    assert [e["node"]["to"] for e in data["account"]["deliveries"]["edges"]] == ["m@x.example"]
    data = await globex.api.data(query, {"id": theirs["id"]})
    assert [e["node"]["to"] for e in data["account"]["deliveries"]["edges"]] == ["t@x.example"]
    listed = await acme.api.data(PAGE, {"first": 5})
    [page] = [e["node"]["deliveries"] for e in listed["accounts"]["edges"]]
    assert page["totalCount"] == 1 and [d["node"]["to"] for d in page["edges"]] == ["m@x.example"]


NODE = "query($id: ID!) { node(id: $id) { ... on Delivery { kind to } } }"
ACCOUNT_DELIVERIES = "query($id: ID!) { account(id: $id) { deliveries { totalCount } } }"


async def _staff_mail(settings, firm_id: int, kind: str, to: str, account_id: int | None = None):
    """A staff alert or digest as services/mail/alerts and digests queue it (kinds from there)."""
    return await outbox.enqueue(
        firm_id=firm_id,
        firm_name="Acme LLP",
        to=to,
        template=alerts.ALERT_TEMPLATE,
        context={
            "member_name": "X",
            "firm_name": "Acme",
            "accounts": ["Miller Family"],
            "sender": "anna@miller.example",
            "subject": "Divorce papers",
            "sent_at": now(),
        },
        kind=kind,
        settings=settings,
        account_id=account_id,
    )


async def test_staff_alerts_are_read_only_by_their_recipient_with_the_inbox_right(
    acme, client, settings
):
    """An alert names a client and a subject: ids are sequential, so an employee without the
    inbox right, or another member, must not read one by id."""
    firm_id = acme.owner.firm_id
    olga = await add_staff(acme, "Olga@acme.example", can_use_inbox=True)
    nick = await add_staff(acme, "nick@acme.example")  # no inbox right
    rows = {
        "owner alert": await _staff_mail(settings, firm_id, alerts.ALERT_KIND, acme.owner.email),
        "olga alert": await _staff_mail(settings, firm_id, alerts.ALERT_KIND, olga.email),
        "olga digest": await _staff_mail(settings, firm_id, digests.DIGEST_KIND, olga.email),
        "nick alert": await _staff_mail(settings, firm_id, alerts.ALERT_KIND, nick.email),
    }

    async def readable(api) -> set[str]:
        found = set()
        for name, row in rows.items():
            node = (await api.data(NODE, {"id": ids.encode("Delivery", row.pk)}))["node"]
            if node is not None:
                found.add(name)
        return found

    assert await readable(acme.api) == {"owner alert"}  # the owner: not Olga's
    assert await readable(await api_for(client, olga)) == {"olga alert", "olga digest"}
    # Nick had the right when his alert was queued; without it he reads none.
    assert await readable(await api_for(client, nick)) == set()
    other = await api_for(client, await add_staff(acme, "o@acme.example", StaffRole.ADMIN))
    assert await readable(other) == set()

    # Never an account's delivery, even for a row that names an account.
    account = await new_account(acme.api, "Miller Family")
    account_pk = ids.decode(account["id"], "Account")
    await _staff_mail(settings, firm_id, alerts.ALERT_KIND, acme.owner.email, account_pk)
    await _queue(settings, firm_id, account["id"], "client@x.example", "Invitation")
    listed = await acme.api.data(ACCOUNT_DELIVERIES, {"id": account["id"]})
    assert listed["account"]["deliveries"]["totalCount"] == 1
