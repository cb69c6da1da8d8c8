"""Leases: a row claimed by one process until a time, the time doubling as the claim's token.

A claim writes `lease_until = lease_token(...)` with a conditional UPDATE (free, or expired);
every later write of the holder is conditional on that exact value, so a holder that ran past
its lease (another process claimed the row since) finds its writes refused and stops.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta


def lease_token(now: datetime, seconds: float) -> datetime:
    """A value unique to this claim, at least `seconds` after `now`: `now` + `seconds` plus
    a random part of a second (never less: a holder that plans its work on `seconds` must
    find its lease still there at the end of it)."""
    return now + timedelta(seconds=seconds, microseconds=secrets.randbelow(1_000_000))
