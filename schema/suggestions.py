"""Production names nothing the client did not ask for: graphql-core ends many messages
with " Did you mean ...?" (fields, arguments, enum values, input fields, types), enough to
rebuild the schema without introspection."""

from __future__ import annotations

from graphql import GraphQLError

SUGGESTION = " Did you mean "


def drop_suggestions(errors: list[GraphQLError]) -> None:
    """Cuts each message before its suggestion, in place (validation and variable coercion
    alike: this runs where strawberry processes every error)."""
    for error in errors:
        if SUGGESTION in error.message:
            error.message = error.message.split(SUGGESTION, 1)[0]
