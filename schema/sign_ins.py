"""At most one password check per request: aliases would otherwise run one argon2 check
(and one guess) per copy of the field."""

from __future__ import annotations

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
)

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
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    for definition in document.definitions:
        if (
            isinstance(definition, OperationDefinitionNode)
            and definition.operation == OperationType.MUTATION
            and len(_sign_ins(definition.selection_set, fragments, set())) > 1
        ):
            names = ", ".join(sorted(SIGN_IN_FIELDS))
            return GraphQLError(
                f"A request may run only one of {names}: send each in its own request.",
                extensions={"code": ErrorCode.BATCHED_SIGN_IN},
            )
    return None


def _sign_ins(
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    seen: set[str],
) -> set[str]:
    """Response names of the sign-in fields at the root, through fragments (each once)."""
    found: set[str] = set()
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode) and selection.name.value in SIGN_IN_FIELDS:
            found.add((selection.alias or selection.name).value)
        elif isinstance(selection, InlineFragmentNode):
            found |= _sign_ins(selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
            seen.add(selection.name.value)
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                found |= _sign_ins(fragment.selection_set, fragments, seen)
    return found
