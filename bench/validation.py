"""Validation time of the worst documents the limits let through, next to plain ones; then
what validation costs a request the first time its document is seen and every time after.

    python -m bench.validation

First table: each shape sits just under the merge-pair limit (schema/merging.py) and the
token limit; the baseline is a plain document of about the same number of tokens (distinct
fields, no repetition). Times are graphql-core's validation with its specified rules, the
best of ROUNDS, in this process; the pre-pass column is the work budget itself
(schema/budget.refusal).

Second table: whole requests through the schema (parse, the budget, every rule, control
characters), with every root field under `@skip(if: true)` so nothing executes. The
baseline is the same request with the validation cache emptied first (schema/validation.py),
every check made anew: a document's first sight. (Before this cache, strawberry's
ValidationCache kept graphql-core's rules for documents without control characters, so a
repeated request then cost between the two columns: measure it on that commit.) "seen" is
the document met before. Medians
of REQUESTS, in turns, over TURNS turns. Never part of `make test`.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from graphql import (
    DirectiveNode,
    DocumentNode,
    FieldNode,
    OperationDefinitionNode,
    parse,
    parse_value,
    print_ast,
    validate,
)
from graphql.language import ArgumentNode, NameNode
from strawberry import Schema

from portico.settings import Settings
from resolvers.root import build_schema
from schema.budget import Budget, refusal

ROUNDS = 5
REQUESTS = 200
TURNS = 5


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


NESTED = """{ accounts(first: 50) { edges { node {
  contacts { emailAddresses { address } } emails { login emailAddress { address } } } } } }"""
CREATE_CONTACT = """mutation($input: CreateContactInput!) { createContact(input: $input) {
  errors { code field message }
  contact { id firstName lastName emailAddresses { id address label } accounts { id name } } } }"""
CONTACT = {"firstName": "Ann", "lastName": "Lee", "emails": [{"address": "ann@x.example"}]}

REQUESTS_TIMED: dict[str, tuple[str, dict[str, Any] | None]] = {
    "nested accounts (bench/__main__.py)": (NESTED, None),
    "createContact with variables": (CREATE_CONTACT, {"input": CONTACT}),
    **{name: (shape, None) for name, (shape, _) in SHAPES.items()},
}


def skipped(text: str) -> str:
    """`text` with `@skip(if: true)` on every root field: validated in full, never run."""
    document = parse(text)
    skip = DirectiveNode(
        name=NameNode(value="skip"),
        arguments=(ArgumentNode(name=NameNode(value="if"), value=parse_value("true")),),
    )
    definitions = []
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            selections = tuple(
                FieldNode(**{**s.__dict__, "directives": (*(s.directives or ()), skip)})
                if isinstance(s, FieldNode)
                else s
                for s in definition.selection_set.selections
            )
            selection_set = definition.selection_set.__class__(selections=selections)
            definition = OperationDefinitionNode(
                **{**definition.__dict__, "selection_set": selection_set}
            )
        definitions.append(definition)
    return print_ast(DocumentNode(definitions=tuple(definitions)))


async def _median_request(
    schema: Schema, text: str, variables: dict[str, Any] | None, forget: bool
) -> float:
    validator = getattr(schema, "validator", None)
    samples = []
    for _ in range(REQUESTS):
        if forget and validator is not None:
            validator.clear()
        started = time.perf_counter()
        result = await schema.execute(text, variable_values=variables)
        samples.append(time.perf_counter() - started)
        assert not result.errors, result.errors
    return statistics.median(samples) * 1000


async def per_request(schema: Schema) -> None:
    print(f"\n{'request (nothing executes)':44} {'anew':>9} {'seen':>9} {'ratio':>7}")
    for name, (text, variables) in REQUESTS_TIMED.items():
        document = skipped(text)
        anew: list[float] = []
        seen: list[float] = []
        for _ in range(TURNS):
            anew.append(await _median_request(schema, document, variables, forget=True))
            seen.append(await _median_request(schema, document, variables, forget=False))
        cold, warm = statistics.median(anew), statistics.median(seen)
        print(f"{name:44} {cold:7.3f}ms {warm:7.3f}ms {cold / warm:6.1f}x")


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
    asyncio.run(per_request(build_schema(settings)))


if __name__ == "__main__":
    main()
