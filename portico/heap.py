"""The garbage collector, set for a long-running server.

Python's cyclic collector walks every tracked object in a full collection, and starts
young ones every 700 allocations. A server allocates its long-lived objects (modules, the
schema, ORM metadata: well over 100,000) at start, and a page of answers allocates tens of
thousands of short-lived ones: measured on the nested accounts page, a third of a request's
CPU went to collections walking the long-lived heap. So, once started, the server moves what
it holds into the collector's permanent generation (never walked), and collects young objects
every 10,000 allocations: a request's garbage is mostly freed by reference counting anyway.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # Python's default: 700


def settle() -> int:
    """Called once the process has started (the app's lifespan, `portico worker`,
    benchmarks); returns how many objects the collector no longer walks."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    return gc.get_freeze_count()
