"""A budget of failed sign-ins per client address: staff and client sign-ins to any firm with
any email count together, so one address cannot spread its guesses over many accounts.

Each address has a SignInThrottle row under its own hashed key. There `failures` counts the
attempts of the current window and `locked_until` is when that count expires: the end of the
window the first failure opened, pushed to a full window from the moment the budget is spent.
While the count is over the budget the address is refused.

An IPv6 client is counted by its /64 (one subscriber's share: an attacker holding one has
2^64 addresses); an IPv4-mapped IPv6 address counts as the IPv4 address it carries.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import timedelta

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F

from models import SignInThrottle
from services.firm import throttle_rows
from services.shared import sessions


@dataclass(frozen=True)
class AddressBudget:
    max_failures: int
    window: timedelta


def key_for(address: str) -> str:
    return hashlib.sha256(f"address\0{budget_holder(address)}".encode()).hexdigest()


def budget_holder(address: str) -> str:
    """What one budget belongs to: an IPv4 address, an IPv6 /64, or (not an IP address,
    e.g. a Unix socket's peer) the text as given."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    # From the integer: a zone (fe80::1%eth0) is not part of the network.
    return str(ipaddress.IPv6Network((int(ip), 64), strict=False))


async def reserve(key: str, budget: AddressBudget) -> bool:
    """Counts this attempt before the password is checked (so parallel guesses cannot slip
    past the budget). False when the address is over its budget: refuse the attempt."""
    throttle = await _count_attempt(key, budget)
    over = throttle.failures - budget.max_failures
    if over == 1:  # the attempt that spends the budget locks the address for a full window
        await SignInThrottle.filter(key=key).update(locked_until=sessions.now() + budget.window)
    return over <= 0


async def release(key: str) -> None:
    """A success gives its attempt back: only failures count, and it forgives no one else's."""
    await SignInThrottle.filter(key=key, failures__gt=0).update(failures=F("failures") - 1)


async def _count_attempt(key: str, budget: AddressBudget) -> SignInThrottle:
    """Adds one attempt to the current window, or opens a new window with it, each in a
    single conditional write (no lost updates under concurrency)."""
    for _ in range(3):
        now = sessions.now()
        if await SignInThrottle.filter(key=key, locked_until__gt=now).update(
            failures=F("failures") + 1
        ):
            return await SignInThrottle.get(key=key)
        row = await SignInThrottle.get_or_none(key=key)
        if row is None:
            await throttle_rows.prune_near(key, budget.window)
            try:
                return await SignInThrottle.create(
                    key=key, failures=1, locked_until=now + budget.window
                )
            except IntegrityError:
                continue  # created by a parallel attempt: count in its window
        if row.locked_until is not None and row.locked_until > now:
            continue  # a parallel attempt opened a window meanwhile: count in it
        if await SignInThrottle.filter(key=key, locked_until=row.locked_until).update(
            failures=1, locked_until=now + budget.window
        ):
            return await SignInThrottle.get(key=key)
        # else a parallel attempt opened the new window first: count in it
    return await SignInThrottle.get(key=key)
