"""Forgetting sign-in throttle rows that no longer matter, so a spray of new addresses or
guessed emails cannot grow the table without bound.

A row (per address or per email, they share the table) is stale when its lock or window
ended a whole horizon ago, or it has no lock and nobody touched it for a horizon: the next
attempt would start afresh anyway, except that an idle email's count is forgotten.

Each new row prunes only its own slice of the key space (keys are SHA-256 hex, spread evenly;
the slice is a range of the primary key, so the DELETE reads about 1/256 of the table through
its index). Growth only comes from new rows, so every slice is swept about as often as rows
are added; stale rows left behind are at most about one slice's worth per slice.
"""

from __future__ import annotations

from datetime import timedelta

from tortoise.expressions import Q

from models import SignInThrottle
from services.shared import sessions

SLICE_DIGITS = 2  # 256 slices


async def prune_near(key: str, horizon: timedelta) -> None:
    """Deletes the stale rows whose key shares the first digits of `key`."""
    cutoff = sessions.now() - horizon
    prefix = key[:SLICE_DIGITS]
    stale = Q(locked_until__lt=cutoff) | Q(locked_until__isnull=True, updated_at__lt=cutoff)
    # "g" sorts after every hex digit: [prefix, prefix + "g") holds exactly the prefix's keys.
    await SignInThrottle.filter(stale, key__gte=prefix, key__lt=prefix + "g").delete()
