"""Validation time of the worst documents the limits let through, next to plain ones.

    python -m bench.validation

Each shape sits just under the merge-pair limit (schema/merging.py) and the token limit;
the baseline is a plain document of about the same number of tokens (distinct fields, no
repetition). Times are graphql-core's validation with its specified rules, the best of
ROUNDS, in this process; the pre-pass column is the work budget itself
(schema/budget.refusal). Never part of `make test`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from graphql import DocumentNode, parse, validate

from portico.settings import Settings
from resolvers.root import build_schema
from schema.budget import Budget, refusal

ROUNDS = 5


def _copies(count: int, field: str) -> str:
    return "{ " + " ".join(field for _ in range(count)) + " }"


def _side_by_side(count: int) -> str:
    spreads = " ".join(f"...F{i}" for i in range(count))
    fragments = " ".join(f"fragment F{i} on Query {{ __typename }}" for i in range(count))
    return f"{{ __typename {spreads} }} {fragments}"


def _nested(outer: int, inner: int) -> str:
    names = " ".join("name" for _ in range(inner))
    return _copies(outer, f"__schema {{ queryType {{ {names} }} }}")


def _plain(fields: int) -> str:
    return "{ " + " ".join(f"f{i}: __typename" for i in range(fields)) + " }"


SHAPES: dict[str, tuple[str, str]] = {
    # name: (the shape, a plain document of about as many tokens)
    "71 copies of viewer { __typename }": (
        _copies(71, "viewer { __typename }"),
        _plain(95),
    ),
    "70 fragments side by side": (_side_by_side(70), _plain(210)),
    "10 copies of a field with 9 copies inside": (_nested(10, 9), _plain(50)),
    "100 copies of a leaf": (_copies(100, "__typename"), _plain(33)),
}


def _best(run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    settings = Settings(_env_file=None)
    schema = build_schema(settings)._schema
    budget = Budget(settings.max_query_fields, settings.max_result_size, settings.max_page_size)

    def validated(document: DocumentNode) -> float:
        return _best(lambda: validate(schema, document))

    print(f"{'shape':44} {'pre-pass':>9} {'validate':>9} {'plain':>7}")
    for name, (shape, plain) in SHAPES.items():
        document, baseline = parse(shape), parse(plain)
        assert not refusal(budget, schema, document, None, None), name
        pre = _best(lambda d=document: refusal(budget, schema, d, None, None))
        print(f"{name:44} {pre:7.1f}ms {validated(document):7.1f}ms {validated(baseline):5.1f}ms")


if __name__ == "__main__":
    main()
