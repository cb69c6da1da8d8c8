"""What the benchmarks share: timing, and data written in bulk (many accounts, each with one
contact and one address)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from models import Account, AccountContact, AccountEmail, Contact, EmailAddress


async def bulk_accounts(firm_id: int, count: int, domain: str, **toggles: bool) -> list[int]:
    """`count` accounts, each with one contact whose one address (c<n>@`domain`) has
    `toggles` (notify=True, email_sync=True, ...) in it; the account ids, in order."""
    await Account.bulk_create(
        [Account(firm_id=firm_id, name=f"Bulk {i:05}", type="FAMILY") for i in range(count)]
    )
    accounts = await Account.filter(firm_id=firm_id).order_by("id")
    await Contact.bulk_create(
        [Contact(firm_id=firm_id, first_name="C", last_name=str(i)) for i in range(count)]
    )
    contacts = await Contact.filter(firm_id=firm_id).order_by("id")
    await EmailAddress.bulk_create(
        [
            EmailAddress(
                firm_id=firm_id,
                contact_id=c.pk,
                address=f"c{c.last_name}@{domain}",
                address_normalized=f"c{c.last_name}@{domain}",
            )
            for c in contacts
        ]
    )
    emails = await EmailAddress.filter(firm_id=firm_id).order_by("id")
    await AccountContact.bulk_create(
        [
            AccountContact(firm_id=firm_id, account_id=a.pk, contact_id=c.pk)
            for a, c in zip(accounts, contacts, strict=True)
        ]
    )
    await AccountEmail.bulk_create(
        [
            AccountEmail(firm_id=firm_id, account_id=a.pk, email_address_id=e.pk, **toggles)
            for a, e in zip(accounts, emails, strict=True)
        ]
    )
    return [a.pk for a in accounts]


async def median(
    action: Callable[[], Awaitable[Any]], prepare: Callable[[], Awaitable[Any]], rounds: int
) -> float:
    """Median seconds of `action` over `rounds` runs, `prepare` (untimed) before each."""
    samples = []
    for _ in range(rounds):
        await prepare()
        started = time.perf_counter()
        await action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)
