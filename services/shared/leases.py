"""Leases: a row claimed by one process until a time, the time doubling as the claim's token.

A claim writes `lease_until = lease_token(...)` with a conditional UPDATE (free, or expired);
every later write of the holder is conditional on that exact value, so a holder that ran past
its lease (another process claimed the row since) finds its writes refused and stops.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta


def lease_token(now: datetime, seconds: float) -> datetime:
    """`now` + `seconds`, with random microseconds: the value is this claim's own."""
    return now.replace(microsecond=0) + timedelta(
        seconds=seconds, microseconds=secrets.randbelow(1_000_000)
    )
