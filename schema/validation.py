"""Validation, bounded: the work budget and the one-sign-in rule run first and linearly,
so graphql-core's rules (and strawberry's depth and alias limiters, which expand every
fragment spread) only ever see documents of bounded size. Each refusal here carries its
code: the limits on work QUERY_TOO_COMPLEX, the rest GRAPHQL_VALIDATION_FAILED."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from graphql import GraphQLError, ValidationRule, validate
from strawberry.extensions import ValidationCache

from schema.budget import Budget, refusal
from schema.extensions import code_of, coded
from schema.sign_ins import batched_sign_in
from services.shared.errors import ErrorCode


class CheckedValidation(ValidationCache):
    """Refuses over-budget documents and batched sign-ins, then documents over the depth
    and alias limits, before validating. (The cache keys on the rule classes, and the
    control-character rule is made per request, so it does not hit today: a speed matter,
    left to the speed work.)"""

    def __init__(
        self, budget: Budget, limits: Sequence[type[ValidationRule]], maxsize: int
    ) -> None:
        super().__init__(maxsize=maxsize)
        self.budget = budget
        self.limits = limits

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        schema, document = context.schema._schema, context.graphql_document
        assert document is not None  # parsed before validation
        errors = refusal(self.budget, schema, document, context.variables, context.operation_name)
        if not errors and (batched := batched_sign_in(document)):
            errors = [batched]
        if not errors:
            errors = _labelled(validate(schema, document, self.limits), ErrorCode.QUERY_TOO_COMPLEX)
        if not errors:
            errors = self.cached_validate_document(schema, document, context.validation_rules)
        # Set before strawberry validates: it then skips its own and stops on any error.
        context.pre_execution_errors = _labelled(errors, ErrorCode.GRAPHQL_VALIDATION_FAILED)
        yield


def _labelled(errors: list[GraphQLError], code: ErrorCode) -> list[GraphQLError]:
    """`errors`, each with `code` unless it carries one (the budget's, a control
    character's); copies, since the validation cache hands out the same errors again."""
    return [error if code_of(error) is not None else coded(error, code) for error in errors]
