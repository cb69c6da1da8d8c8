"""Composes the Schema: roots, limits and extensions."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import strawberry
from graphql import GraphQLError, ValidationRule
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.types.base_scalars import DateTimeDefinition
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from compiled import Plans, executor_class
from portico.settings import Settings
from resolvers.mutations.access import AccessMutations
from resolvers.mutations.authenticator import AuthenticatorMutations
from resolvers.mutations.crm import CrmMutations
from resolvers.mutations.documents import DocumentMutations
from resolvers.mutations.imports import ImportMutations
from resolvers.mutations.mail import MailMutations
from resolvers.mutations.notify import NotifyMutations
from resolvers.mutations.privacy import PrivacyMutations
from resolvers.mutations.sessions import SessionMutations
from resolvers.mutations.staff import StaffMutations
from resolvers.mutations.webhooks import WebhookMutations
from resolvers.query import Query
from resolvers.subscriptions import Subscription
from schema.budget import Budget
from schema.extensions import (
    EnrollmentFirst,
    OperationName,
    SessionPerOperation,
    is_expected,
    log_unexpected,
    shape_error,
)
from schema.mail import Mailbox
from schema.metrics import GraphQLMetrics
from schema.suggestions import drop_suggestions
from schema.types import NODE_TYPES
from schema.validation import CheckedValidation, DocumentValidator

Mutation = merge_types(
    "Mutation",
    (
        SessionMutations,
        StaffMutations,
        CrmMutations,
        ImportMutations,
        AccessMutations,
        NotifyMutations,
        DocumentMutations,
        MailMutations,
        PrivacyMutations,
        WebhookMutations,
        AuthenticatorMutations,
    ),
)
# merge_types takes no description; the merged type's definition carries it.
Mutation.__strawberry_definition__.description = (  # type: ignore[attr-defined]
    "What may be changed. Each mutation answers a payload whose errors list is empty on "
    "success; a mutation with errors wrote nothing."
)

# Strawberry's DateTime, in words that say which format and zone clients get.
DATETIME = replace(
    DateTimeDefinition,
    description="A date and time in ISO 8601 with its UTC offset, e.g. "
    "2026-03-02T09:30:00+00:00; Portico stores times in UTC.",
)


class PorticoSchema(strawberry.Schema):
    hide_suggestions = False  # production: no "Did you mean ...?" of any kind
    validator: DocumentValidator  # validation kept per document, shared by every request
    plans: Plans  # compiled query plans (compiled/), shared by every request

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Logs unexpected errors with their traceback, then shapes every error in place
        (codes, masking): strawberry calls this on each path, HTTP and WebSocket alike, and
        returns the same list to the client."""
        if self.hide_suggestions:
            drop_suggestions(errors)
        unexpected = [e for e in errors if not is_expected(e)]
        if unexpected:
            log_unexpected(unexpected, execution_context)
        errors[:] = [shape_error(e) for e in errors]


def build_schema(settings: Settings) -> strawberry.Schema:
    rules: list[type[ValidationRule]] = []
    if not settings.introspection_enabled:
        rules.append(NoSchemaIntrospectionCustomRule)
    budget = Budget(
        max_fields=settings.max_query_fields,
        max_result_size=settings.max_result_size,
        max_page_size=settings.max_page_size,
    )
    # Limits on work like the budget, so QUERY_TOO_COMPLEX like it (schema/validation.py).
    limits = [
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
    ]
    # One per schema: what each document alone decides is validated once (schema/validation.py).
    validator = DocumentValidator(budget, limits, maxsize=256)
    plans = Plans()
    schema = PorticoSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[*NODE_TYPES.values(), Mailbox],
        config=StrawberryConfig(relay_max_results=settings.max_page_size),
        scalar_overrides={datetime: DATETIME},
        execution_context_class=executor_class(plans),
        extensions=[
            SessionPerOperation,
            EnrollmentFirst,
            OperationName,
            GraphQLMetrics,
            lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
            lambda: AddValidationRules(rules),
            lambda: ParserCache(maxsize=256),
            # Replaces strawberry's validation: the budget first, then the rules, each
            # document's own results kept; control characters checked there too.
            lambda: CheckedValidation(validator),
        ],
    )
    schema.hide_suggestions = settings.production
    schema.validator = validator
    schema.plans = plans
    return schema
