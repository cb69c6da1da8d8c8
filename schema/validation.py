"""Validation, bounded, and done once per document.

Bounded: the work budget and the one-sign-in rule run first and linearly, so graphql-core's
rules (and strawberry's depth and alias limiters, which expand every fragment spread) only
ever see documents of bounded size. Each refusal here carries its code: the limits on work
QUERY_TOO_COMPLEX, the rest GRAPHQL_VALIDATION_FAILED.

Once: what the document alone decides (the budget's selections and merge pairs, the
one-sign-in rule, the depth and alias limits, graphql-core's rules, control characters in
its literals) is kept per document text in a bounded LRU. What the request decides runs
every time: control characters in the variables, and the result size (page sizes may come
from variables, and operationName picks the operation measured), kept per operation name
and the values of the variables given as `first`. A request answers exactly
the errors, in the order, that running every step anew would.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from graphql import DocumentNode, GraphQLError, GraphQLSchema, ValidationRule, validate
from graphql.language import SKIP
from graphql.validation.validate import ValidationAbortedError
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from schema.budget import Budget, document_refusal, page_key, page_variables, size_refusal
from schema.extensions import code_of, coded
from schema.input_text import literal_refusal, variable_refusal
from schema.sign_ins import batched_sign_in
from services.shared.errors import ErrorCode

# Documents longer than this (in characters) are validated but not kept: as for persisted
# queries (services/shared/persisted_queries.py), ordinary documents are far smaller.
MAX_KEPT_DOCUMENT = 32 * 1024

# Result sizes kept per document, one per operation name and page sizes from variables:
# enough for a client's few pages, bounded against one asking for every page size there is.
MAX_SIZES_KEPT = 16

# graphql-core's validate() stops after this many errors and adds TOO_MANY.
MAX_ERRORS = 100
TOO_MANY = "Too many validation errors, error limit reached. Validation aborted."

# The rules strawberry's own validation adds after the request's (validate_document).
STRAWBERRY_RULES = (MaybeNullValidationRule, OneOfInputValidationRule)


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    size: int


class DocumentChecks:
    """What one document alone decides, each part computed on first need, in the order a
    request needs them (nothing after a refusal is computed until a request gets there)."""

    __slots__ = (
        "budget",
        "literal",
        "literal_known",
        "marked",
        "measurable",
        "pages",
        "rules",
        "sizes",
    )

    def __init__(self) -> None:
        self.budget: list[GraphQLError] | None = None
        self.measurable = True  # False: broken spreads, the result size is not measured
        self.pages: tuple[str, ...] | None = None  # the variables the result size reads
        self.sizes: dict[tuple[object, ...], list[GraphQLError]] = {}
        self.rules: list[GraphQLError] | None = None  # the one-sign-in rule, then the limits
        self.literal: GraphQLError | None = None
        self.literal_known = False
        self.marked: list[GraphQLError] | None = None  # graphql-core's, with a _Marker


class DocumentValidator:
    """Validates documents for one schema, keeping each document's own results in an LRU
    bounded by count and by the size of the documents kept. `stats()` is for tests and
    benchmarks."""

    def __init__(
        self,
        budget: Budget,
        limits: Sequence[type[ValidationRule]],
        maxsize: int,
        max_kept: int = MAX_KEPT_DOCUMENT,
    ) -> None:
        self.budget = budget
        self.limits = limits
        self.maxsize = maxsize
        self.max_kept = max_kept
        self._entries: OrderedDict[str, DocumentChecks] = OrderedDict()
        self._hits = 0
        self._misses = 0

    def stats(self) -> CacheStats:
        return CacheStats(self._hits, self._misses, len(self._entries))

    def clear(self) -> None:
        self._entries.clear()
        self._hits = self._misses = 0

    def errors(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        text: str | None,
        variables: Mapping[str, Any] | None,
        operation_name: str | None,
        rules: Sequence[type[ValidationRule]],
    ) -> list[GraphQLError]:
        """The validation errors of this request, uncoded ones as graphql-core made them.
        `text` is the document's source (None: not kept); `rules` the request's rules,
        the same for every request of one schema."""
        checks = self._checks(text)
        if checks.budget is None:
            checks.budget, checks.measurable = document_refusal(self.budget, schema, document)
        if checks.budget:
            return checks.budget
        if checks.measurable and (
            errors := self._size(checks, schema, document, variables, operation_name)
        ):
            return errors
        if checks.rules is None:
            batched = batched_sign_in(document)
            checks.rules = (
                [batched] if batched else _too_complex(validate(schema, document, self.limits))
            )
        if checks.rules:
            return checks.rules
        refusal = variable_refusal(variables or {})
        if refusal is None:
            if not checks.literal_known:
                checks.literal, checks.literal_known = literal_refusal(document), True
            refusal = checks.literal
        if checks.marked is None:
            marked_rules = (*rules, _MarkerRule, *STRAWBERRY_RULES)
            # One more error allowed: the marker takes a place a refusal may not fill.
            checks.marked = validate(schema, document, marked_rules, max_errors=MAX_ERRORS + 1)
        return _unmarked(checks.marked, refusal)

    def _size(
        self,
        checks: DocumentChecks,
        schema: GraphQLSchema,
        document: DocumentNode,
        variables: Mapping[str, Any] | None,
        operation_name: str | None,
    ) -> list[GraphQLError]:
        """The result size's refusal, kept per operation name and what the result size
        reads of the variables."""
        if checks.pages is None:
            checks.pages = page_variables(document)
        key = (operation_name, *page_key(checks.pages, variables))
        errors = checks.sizes.get(key)
        if errors is None:
            errors = size_refusal(self.budget, schema, document, variables, operation_name)
            if len(checks.sizes) < MAX_SIZES_KEPT:
                checks.sizes[key] = errors
        return errors

    def _checks(self, text: str | None) -> DocumentChecks:
        if text is None or len(text) > self.max_kept:
            self._misses += 1
            return DocumentChecks()
        checks = self._entries.get(text)
        if checks is not None:
            self._hits += 1
            self._entries.move_to_end(text)
            return checks
        self._misses += 1
        checks = self._entries[text] = DocumentChecks()
        if len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        return checks


class CheckedValidation(SchemaExtension):
    """Replaces strawberry's validation with the validator's (kept per schema, so shared
    by every request); strawberry skips its own when `pre_execution_errors` is set, and
    stops on any error."""

    def __init__(self, validator: DocumentValidator) -> None:
        super().__init__()
        self.validator = validator

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        assert context.graphql_document is not None  # parsed before validation
        errors = self.validator.errors(
            context.schema._schema,
            context.graphql_document,
            context.query,
            context.variables,
            context.operation_name,
            context.validation_rules,
        )
        context.pre_execution_errors = [
            coded(error, code_of(error) or ErrorCode.GRAPHQL_VALIDATION_FAILED) for error in errors
        ]
        yield


def _too_complex(errors: list[GraphQLError]) -> list[GraphQLError]:
    return [e if code_of(e) is not None else coded(e, ErrorCode.QUERY_TOO_COMPLEX) for e in errors]


class _Marker(GraphQLError):
    """Where a control-character refusal is reported among graphql-core's errors: at the
    document's start, after the errors the rules before it report there."""


class _MarkerRule(ValidationRule):
    def enter_document(self, *_: object) -> object:
        self.report_error(_Marker("marker"))
        return SKIP


def _unmarked(marked: list[GraphQLError], refusal: GraphQLError | None) -> list[GraphQLError]:
    """graphql-core's errors as a run with the refusal reported at the marker (or, without
    a refusal, with nothing there) would have given them, its error limit included.
    (Copies are handed out by the caller: the kept list is never given away.)"""
    aborted = marked[-1] if marked and isinstance(marked[-1], ValidationAbortedError) else None
    reported = marked[:-1] if aborted is not None else marked
    if refusal is None:
        reported = [e for e in reported if not isinstance(e, _Marker)]
    else:
        reported = [refusal if isinstance(e, _Marker) else e for e in reported]
    if len(reported) > MAX_ERRORS or (aborted is not None and aborted.message == TOO_MANY):
        return [*reported[:MAX_ERRORS], ValidationAbortedError(TOO_MANY)]
    return [*reported, aborted] if aborted is not None else reported
