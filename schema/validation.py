"""Validation, bounded: the work budget and the one-sign-in rule run first and linearly,
so graphql-core's rules (and strawberry's depth and alias limiters, which expand every
fragment spread) only ever see documents of bounded size."""

from __future__ import annotations

from collections.abc import Iterator

from strawberry.extensions import ValidationCache

from schema.budget import Budget, refusal
from schema.sign_ins import batched_sign_in


class CheckedValidation(ValidationCache):
    """Refuses over-budget documents and batched sign-ins before validating. (The cache
    keys on the rule classes, and the depth limiter and the control-character rule are made
    per request, so it does not hit today: a speed matter, left to the speed work.)"""

    def __init__(self, budget: Budget, maxsize: int) -> None:
        super().__init__(maxsize=maxsize)
        self.budget = budget

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        assert context.graphql_document is not None  # parsed before validation
        errors = refusal(
            self.budget,
            context.schema._schema,
            context.graphql_document,
            context.variables,
            context.operation_name,
        )
        if not errors and (batched := batched_sign_in(context.graphql_document)):
            errors = [batched]
        if errors:
            # Set before validation: strawberry then skips its own and stops the request.
            context.pre_execution_errors = errors
            yield
            return
        yield from super().on_validate()
