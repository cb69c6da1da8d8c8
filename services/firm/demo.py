"""The demo firm that a new development database gets, so the README's tour works."""

from __future__ import annotations

from models import AccountEmail, AccountType, Firm, StaffRole
from services.crm import records
from services.firm import firms, staff
from services.shared.scope import FirmScope

DEMO_SLUG = "demo"
DEMO_OWNER_EMAIL = "owner@demo.example"
DEMO_PASSWORD = "portico-demo-2026"

ACCOUNTS = [
    ("Miller Family", AccountType.FAMILY),
    ("Miller Bakery GmbH", AccountType.COMPANY),
    ("Jordan Lee", AccountType.INDIVIDUAL),
]
# first, last, [(address, label)], [accounts]
CONTACTS = [
    (
        "Anna",
        "Miller",
        [("anna@miller.example", "Email"), ("anna@millerbakery.example", "Work Email")],
        ["Miller Family", "Miller Bakery GmbH"],
    ),
    ("Ben", "Miller", [("ben@miller.example", "Email")], ["Miller Family"]),
    ("Jordan", "Lee", [("jordan.lee@example.com", "Email")], ["Jordan Lee"]),
]


async def seed_demo() -> bool:
    """Creates the demo firm unless it exists; True when it was created."""
    if await Firm.exists(slug=DEMO_SLUG):
        return False
    firm, owner = await firms.create_firm(
        "Demo Tax & Accounting", DEMO_SLUG, DEMO_OWNER_EMAIL, "Olivia Owner", DEMO_PASSWORD
    )
    scope = FirmScope(firm.id)
    employee = await staff.add_staff_member(
        scope, owner, "erin@demo.example", "Erin Employee", StaffRole.EMPLOYEE, False, False
    )
    await firms.set_staff_password(DEMO_SLUG, employee.email, DEMO_PASSWORD)
    accounts = {
        name: (await records.create_account(scope, name, kind)).pk for name, kind in ACCOUNTS
    }
    for first, last, addresses, linked in CONTACTS:
        await records.create_contact(
            scope,
            first,
            last,
            emails=[records.NewAddress(address, label) for address, label in addresses],
            account_ids=[accounts[name] for name in linked],
        )
    # Some toggles on, so the Info tab shows a mix (their effects come with later issues).
    await (
        scope.query(AccountEmail)
        .filter(
            account_id=accounts["Miller Family"],
            email_address__address_normalized="anna@miller.example",
        )
        .update(notify=True, email_sync=True)
    )
    return True
