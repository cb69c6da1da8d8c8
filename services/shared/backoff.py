"""Retry delays: a doubling wait with jitter, up to a maximum.

One formula for every loop that retries (mail delivery, mailbox sync, history imports): each
caller passes its own base and maximum from the settings.
"""

from __future__ import annotations

import random

# ±20% around each delay: failures that came together (one 451 episode, a server restart)
# come back spread over a window instead of as a new burst, and no retry comes much sooner
# than the doubling says (full jitter, uniform from 0, would retry almost at once).
JITTER = 0.2


def retry_delay(
    base: float, maximum: float, failures: int, rng: random.Random | None = None
) -> float:
    """Seconds to wait after the `failures`-th failure in a row: base * 2^(failures-1), times
    a random factor in [1 - JITTER, 1 + JITTER], never more than `maximum`."""
    doubling = base * 2 ** min(max(failures - 1, 0), 32)
    delay = min(doubling, maximum)
    factor = (rng or random).uniform(1 - JITTER, 1 + JITTER)
    return min(delay * factor, maximum)
