"""Schema extensions of Portico's own: error codes and masking, operation names for logs."""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from services.errors import AccessError

INTERNAL_MESSAGE = "Internal server error"


def is_expected(error: GraphQLError) -> bool:
    """Validation, input and access errors: the client's doing, not worth a traceback."""
    original = error.original_error
    return original is None or isinstance(original, GraphQLError | AccessError)


def shape_error(error: GraphQLError) -> GraphQLError:
    """Access errors carry their code; unexpected ones are masked as INTERNAL."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return error
    if isinstance(original, AccessError):
        return GraphQLError(
            str(original), error.nodes, path=error.path, extensions={"code": original.code}
        )
    return GraphQLError(
        INTERNAL_MESSAGE, error.nodes, path=error.path, extensions={"code": "INTERNAL"}
    )


class ErrorCodes(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [shape_error(e) for e in result.errors]


class OperationName(SchemaExtension):
    """Leaves the operation name on the request for the access log."""

    def on_execute(self) -> Iterator[None]:
        request = getattr(self.execution_context.context, "request", None)
        if request is not None:
            request.state.graphql_operation = self.execution_context.operation_name
        yield
