"""No N+1: a nested query costs the same number of statements for 5 and for 50 accounts."""

from __future__ import annotations

from models import AccountEmail
from services.crm import records
from services.shared.scope import FirmScope
from tests.support.sqlcount import count_sql

NESTED = """
{ accounts(first: 50) { edges { node {
    contacts { emailAddresses { address } }
    emails { login emailAddress { address } }
} } } }
"""

CONTACT_SIDE = """
{ contacts(first: 50) { totalCount edges { node {
    accounts { name emails { notify emailAddress { label contact { lastName } } } }
    emailAddresses { address contact { firstName } }
} } } }
"""


async def _populate(firm_id: int, count: int, start: int = 0) -> None:
    scope = FirmScope(firm_id)
    for i in range(start, start + count):
        account = await records.create_account(scope, f"Account {i:03}", "FAMILY")
        for j in range(2):
            await records.create_contact(
                scope,
                f"First{i}",
                f"Last{j}",
                emails=[
                    records.NewAddress(f"p{i}-{j}@example.com"),
                    records.NewAddress(f"w{i}-{j}@example.com", "Work Email"),
                ],
                account_ids=[account.pk],
            )


async def _statements(api, query: str) -> tuple[int, dict]:
    with count_sql() as statements:
        data = await api.data(query)
    return len(statements), data


async def test_nested_accounts_query_is_constant(acme):
    firm_id = acme.owner.firm_id
    await _populate(firm_id, 5)
    small, data = await _statements(acme.api, NESTED)
    assert len(data["accounts"]["edges"]) == 5
    first = data["accounts"]["edges"][0]["node"]
    assert len(first["contacts"]) == 2 and len(first["emails"]) == 4

    await _populate(firm_id, 45, start=5)
    large, data = await _statements(acme.api, NESTED)
    assert len(data["accounts"]["edges"]) == 50
    assert all(len(edge["node"]["emails"]) == 4 for edge in data["accounts"]["edges"])
    assert small == large
    # session, page, contacts, their addresses, account emails: no COUNT, as no totalCount
    assert large == 5, large
    # Asked for, in a fragment too, totalCount costs the COUNT.
    for total in ("totalCount", "... on AccountConnection { totalCount }"):
        counted, data = await _statements(
            acme.api, NESTED.replace("{ edges", f"{{ {total} edges", 1)
        )
        assert data["accounts"]["totalCount"] == 50
        assert counted == 6, counted


async def test_nested_contacts_query_is_constant(acme):
    firm_id = acme.owner.firm_id
    await _populate(firm_id, 3)
    small, _ = await _statements(acme.api, CONTACT_SIDE)
    await _populate(firm_id, 22, start=3)
    large, data = await _statements(acme.api, CONTACT_SIDE)
    assert data["contacts"]["totalCount"] == 50
    assert small == large


ACCESS_SIDE = """
{ accounts(first: 50) { edges { node {
    emails { portalStatus latestInvitation { status } notificationPreferences { all } }
    unlinkedEmails { linked portalUser { email } }
    invitations { status }
    deliveries(first: 5) { totalCount }
} } } }
"""


async def test_access_fields_are_constant(acme):
    firm_id = acme.owner.firm_id
    await _populate(firm_id, 5)
    await AccountEmail.all().update(login=True)
    small, _ = await _statements(acme.api, ACCESS_SIDE)
    await _populate(firm_id, 45, start=5)
    large, data = await _statements(acme.api, ACCESS_SIDE)
    assert len(data["accounts"]["edges"]) == 50
    assert small == large, (small, large)
