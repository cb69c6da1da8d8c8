"""The load test's exact account: what was asked for against what happened, by identity.

Pure functions over plain data (no I/O), so tests/test_bench_load.py checks them on
hand-made cases. Each returns a Tally: how many matched, and one line per discrepancy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SHOWN = 5  # discrepancies named per kind; the rest are counted


@dataclass
class Tally:
    what: str
    expected: int = 0
    matched: int = 0
    excused: int = 0  # within a documented crash window: missing, or doubled once
    problems: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not self.problems

    def line(self) -> str:
        verdict = "exact" if self.exact else f"{len(self.problems)} problem(s)"
        excused = f" ({self.excused} excused in crash windows)" if self.excused else ""
        return f"{self.what}: {self.matched} of {self.expected} once each{excused}, {verdict}"


def _name(kind: str, items: list[str], tally: Tally) -> None:
    if items:
        shown = ", ".join(sorted(items)[:SHOWN])
        more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
        tally.problems.append(f"{tally.what}: {len(items)} {kind}: {shown}{more}")


def once_each(
    what: str,
    expected: Iterable[str],
    seen: Mapping[str, int],
    optional: Iterable[str] = (),
    may_double: Iterable[str] = (),
) -> Tally:
    """Every expected identity seen exactly once, nothing else seen; an `optional` one
    (in a crash window) at most once, a `may_double` one (at least once) at most twice."""
    wanted = set(expected)
    maybe = set(optional) - wanted
    twice = set(may_double)
    tally = Tally(what, expected=len(wanted))
    tally.matched = sum(1 for key in wanted if seen.get(key) == 1)
    _name("missing", [k for k in wanted if not seen.get(k)], tally)
    doubled = [k for k, n in seen.items() if (k in wanted or k in maybe) and n > 1]
    excused_doubles = [k for k in doubled if k in twice and seen[k] == 2]
    _name("doubled", [f"{k} x{seen[k]}" for k in doubled if k not in excused_doubles], tally)
    _name(
        "unexpected",
        [f"{k} x{n}" for k, n in seen.items() if k not in wanted and k not in maybe and n],
        tally,
    )
    tally.excused = len(excused_doubles) + sum(1 for k in maybe if not seen.get(k))
    return tally


def deliveries(
    rows: Mapping[str, str], sink: Counter[str], may_double: Iterable[str] = ()
) -> Tally:
    """Outbox rows (Message-ID: status) against the SMTP server's Message-IDs: every row
    SENT and received once, except rows CANCELLED before a worker took them (a revoked
    invitation), which must never arrive; the server got nothing else. `may_double`: rows a
    killed worker may have sent before it could mark them (at least once, docs/decisions)."""
    cancelled = {k for k, status in rows.items() if status == "CANCELLED"}
    tally = once_each(
        "outbox rows delivered",
        rows.keys() - cancelled,
        {k: n for k, n in sink.items() if k not in cancelled},
        may_double=may_double,
    )
    tally.what += f" ({len(cancelled)} cancelled before sending)"
    _name("cancelled yet delivered", [k for k in cancelled if sink.get(k)], tally)
    unsent = [
        f"{k} ({status})" for k, status in rows.items() if status not in ("SENT", "CANCELLED")
    ]
    _name("not SENT", unsent, tally)
    return tally


def synced(appended: Iterable[str], stored: Counter[str]) -> Tally:
    """Messages put on the IMAP server (their Message-IDs) against the stored ones."""
    return once_each("appended messages synced", appended, stored)


def events(
    expected: Mapping[str, set[str]],
    received: Mapping[str, list[str]],
    optional: Mapping[str, set[str]] | None = None,
) -> Tally:
    """Per subscriber, the events it may see against those it got (each once); `optional`:
    per subscriber, events it may or may not get (published while it, its server, the bus
    or the worker storing the message was restarting), never twice."""
    tally = Tally("subscriber events")
    for subscriber, wanted in expected.items():
        got = Counter(received.get(subscriber, []))
        maybe = (optional or {}).get(subscriber, set())
        one = once_each(f"subscriber {subscriber}", wanted, got, optional=maybe)
        tally.expected += one.expected
        tally.matched += one.matched
        tally.excused += one.excused
        tally.problems += one.problems
    for subscriber in received.keys() - expected.keys():
        tally.problems.append(f"events for unknown subscriber {subscriber}")
    return tally
