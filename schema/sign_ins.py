"""At most one password check per request: aliases would otherwise run one argon2 check
(and one guess) per copy of the field."""

from __future__ import annotations

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
)

from schema.root_fields import fragments_of, root_fields
from services.shared.errors import ErrorCode

# The Mutation fields that check a password, a one-time token or a code: one per request,
# so aliases cannot make one request many guesses.
SIGN_IN_FIELDS = frozenset(
    {
        "signIn",
        "staffSignIn",
        "acceptInvitation",
        "setStaffPassword",
        "verifySecondFactor",
        "startAuthenticatorEnrollment",
        "confirmAuthenticatorEnrollment",
        "removeAuthenticator",
    }
)


def batched_sign_in(document: DocumentNode) -> GraphQLError | None:
    """Refuses a mutation that would run more than one sign-in field. Copies under one
    response name are merged by graphql-core into one run, so distinct names are counted."""
    fragments = fragments_of(document)
    for definition in document.definitions:
        if (
            isinstance(definition, OperationDefinitionNode)
            and definition.operation == OperationType.MUTATION
            and len(_sign_ins(definition.selection_set, fragments)) > 1
        ):
            names = ", ".join(sorted(SIGN_IN_FIELDS))
            return GraphQLError(
                f"A request may run only one of {names}: send each in its own request.",
                extensions={"code": ErrorCode.BATCHED_SIGN_IN},
            )
    return None


def _sign_ins(
    selection_set: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode]
) -> set[str]:
    """Response names of the sign-in fields at the root."""
    return {
        (field.alias or field.name).value
        for field in root_fields(selection_set, fragments)
        if field.name.value in SIGN_IN_FIELDS
    }
