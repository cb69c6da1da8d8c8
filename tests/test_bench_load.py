"""The load test's account (bench/load_account) on hand-made cases: what it calls exact, and
every kind of discrepancy it must name. No servers, no timing."""

from __future__ import annotations

from collections import Counter

from bench import load_account


def test_every_row_sent_once_is_exact() -> None:
    tally = load_account.deliveries({"<a>": "SENT", "<b>": "SENT"}, Counter({"<a>": 1, "<b>": 1}))
    assert tally.exact
    assert (tally.expected, tally.matched) == (2, 2)


def test_missing_doubled_and_unexpected_deliveries_are_named() -> None:
    rows = {"<a>": "SENT", "<b>": "SENT", "<c>": "SENT"}
    tally = load_account.deliveries(rows, Counter({"<a>": 1, "<b>": 2, "<x>": 1}))
    assert not tally.exact
    text = "\n".join(tally.problems)
    assert "1 missing: <c>" in text
    assert "1 doubled: <b> x2" in text
    assert "1 unexpected: <x> x1" in text
    assert tally.matched == 1


def test_cancelled_rows_must_not_arrive_and_others_must_be_sent() -> None:
    rows = {"<a>": "SENT", "<c>": "CANCELLED"}
    assert load_account.deliveries(rows, Counter({"<a>": 1})).exact
    delivered = load_account.deliveries(rows, Counter({"<a>": 1, "<c>": 1}))
    assert any("cancelled yet delivered: <c>" in p for p in delivered.problems)
    queued = load_account.deliveries({"<a>": "SENT", "<q>": "QUEUED"}, Counter({"<a>": 1}))
    assert any("not SENT: <q> (QUEUED)" in p for p in queued.problems)


def test_synced_counts_each_appended_message_once() -> None:
    assert load_account.synced(["<m1>", "<m2>"], Counter({"<m1>": 1, "<m2>": 1})).exact
    doubled = load_account.synced(["<m1>", "<m2>"], Counter({"<m1>": 2}))
    assert len(doubled.problems) == 2  # <m1> twice, <m2> missing


def test_events_per_subscriber() -> None:
    expected = {"s0": {"M1", "M2"}, "s1": {"M1"}, "s2": set()}
    exact = load_account.events(expected, {"s0": ["M2", "M1"], "s1": ["M1"], "s2": []})
    assert exact.exact
    assert (exact.expected, exact.matched) == (3, 3)
    wrong = load_account.events(
        expected, {"s0": ["M1", "M1"], "s1": ["M1", "M2"], "s2": [], "s9": ["M1"]}
    )
    text = "\n".join(wrong.problems)
    assert "subscriber s0: 1 missing: M2" in text
    assert "subscriber s0: 1 doubled: M1 x2" in text
    assert "subscriber s1: 1 unexpected: M2 x1" in text  # another account's mail
    assert "unknown subscriber s9" in text


def test_many_discrepancies_are_counted_past_the_named_ones() -> None:
    tally = load_account.synced([f"<m{i}>" for i in range(8)], Counter())
    [problem] = tally.problems
    assert problem.startswith("appended messages synced: 8 missing:")
    assert problem.endswith("and 3 more")


def test_crash_windows_excuse_a_miss_or_one_double_and_nothing_more() -> None:
    # An event around a restart may be missed, or received once; never twice.
    optional = {"s0": {"M2"}}
    missed = load_account.events({"s0": {"M1"}}, {"s0": ["M1"]}, optional)
    assert missed.exact
    assert missed.excused == 1
    assert load_account.events({"s0": {"M1"}}, {"s0": ["M1", "M2"]}, optional).exact
    twice = load_account.events({"s0": {"M1"}}, {"s0": ["M1", "M2", "M2"]}, optional)
    assert any("doubled: M2 x2" in p for p in twice.problems)
    # A message a killed worker sent before it could mark it may arrive twice, not thrice.
    rows = {"<a>": "SENT"}
    assert load_account.deliveries(rows, Counter({"<a>": 2}), may_double={"<a>"}).exact
    thrice = load_account.deliveries(rows, Counter({"<a>": 3}), may_double={"<a>"})
    assert any("doubled: <a> x3" in p for p in thrice.problems)
    assert not load_account.deliveries(rows, Counter({"<a>": 2})).exact
