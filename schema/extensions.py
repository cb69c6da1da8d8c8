"""Error shaping (codes, masking) and Portico's schema extensions."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

from graphql import GraphQLError, GraphQLSyntaxError, get_operation_ast
from starlette.websockets import WebSocket
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionContext

from schema.root_fields import fragments_of, root_fields
from services.firm import enrollment
from services.shared import outage
from services.shared.errors import AccessError, ErrorCode
from services.shared.outage import database_unreachable

INTERNAL_MESSAGE = "Internal server error"
# A request strawberry cannot run (no query, an unknown operationName, the wrong operation
# type for the transport): HTTP answers these 400 BAD_REQUEST before execution; over a
# WebSocket they arrive here, and answer the same.
BAD_REQUESTS = (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError)


def is_expected(error: GraphQLError) -> bool:
    """Parse, validation, input, access and request errors: the client's doing, not worth a
    traceback. A code-less GraphQLError at a field's path is graphql-core finding fault with
    what a resolver returned: a bug."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return error.path is None or code_of(error) is not None
    # The database out of reach is the platform's, seen on /readyz: not a traceback a request.
    return isinstance(original, (AccessError, *BAD_REQUESTS)) or database_unreachable(original)


def code_of(error: GraphQLError) -> str | None:
    return (error.extensions or {}).get("code")


execution_log = logging.getLogger("strawberry.execution")


def log_unexpected(errors: list[GraphQLError], context: ExecutionContext | None) -> None:
    """Logs each unexpected error with its traceback, naming the operation and the field
    path only. Never str(error): a GraphQLError quotes the document's source line, and with
    it any literal password or token; the variables stay out for the same reason."""
    operation = _operation_name(context)
    for error in errors:
        path = ".".join(str(key) for key in error.path or ()) or "-"
        execution_log.error(
            "Unexpected error in operation %s at %s", operation, path, exc_info=error.original_error
        )


def _operation_name(context: ExecutionContext | None) -> str:
    name = context.operation_name if context is not None else None
    # repr: the name is the client's text, and must not start a forged log line.
    return repr(name) if name else "(anonymous)"


def shape_error(error: GraphQLError) -> GraphQLError:
    """Gives every error a code. Errors that carry one keep it; access errors carry theirs;
    unexpected ones are masked as INTERNAL. (Validation labels its own errors, in
    schema/validation.py: only that stage can tell them from a variable's.)"""
    if code_of(error) is not None:
        return error
    original = error.original_error
    if isinstance(error, GraphQLSyntaxError):  # the token limit aborts the parser the same way
        return coded(error, ErrorCode.GRAPHQL_PARSE_FAILED)
    if original is None or isinstance(original, GraphQLError):
        if error.path is None:
            # Parsed and validated, refused by graphql-core before any resolver: a variable's
            # value does not fit its type (or a required one is missing).
            return coded(error, ErrorCode.BAD_USER_INPUT)
        return _internal(error)
    if isinstance(original, AccessError):
        return GraphQLError(
            str(original), error.nodes, path=error.path, extensions={"code": original.code}
        )
    if isinstance(original, BAD_REQUESTS):
        return GraphQLError(error.message, extensions={"code": ErrorCode.BAD_REQUEST})
    if database_unreachable(original):  # over HTTP the whole answer becomes a 503 (the view)
        unavailable = {"code": ErrorCode.UNAVAILABLE}
        return GraphQLError(outage.MESSAGE, error.nodes, path=error.path, extensions=unavailable)
    return _internal(error)


def coded(error: GraphQLError, code: ErrorCode) -> GraphQLError:
    """A copy of `error` (message, locations, path) with `code`."""
    return GraphQLError(
        error.message,
        error.nodes,
        error.source,
        error.positions,
        error.path,
        extensions={**(error.extensions or {}), "code": code},
    )


def _internal(error: GraphQLError) -> GraphQLError:
    return GraphQLError(
        INTERNAL_MESSAGE, error.nodes, path=error.path, extensions={"code": ErrorCode.INTERNAL}
    )


class OperationName(SchemaExtension):
    """Leaves the operation name on the request for the access log."""

    def on_execute(self) -> Iterator[None]:
        request = getattr(self.execution_context.context, "request", None)
        if request is not None:
            request.state.graphql_operation = self.execution_context.operation_name
        yield


class SessionPerOperation(SchemaExtension):
    """A WebSocket's context lives as long as the connection: re-check its session for
    every operation, so sign-out, deactivation and lost access apply at once there too."""

    async def on_operation(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        if isinstance(getattr(context, "request", None), WebSocket):
            await context.recheck_session()
        yield


class EnrollmentFirst(SchemaExtension):
    """A session whose person must set up an authenticator first (services/firm/enrollment)
    runs only the enrollment mutations, `viewer`, `signOut` and what needs no session
    (enrollment.ENROLLMENT_FIELDS): anything else at the root of the operation refuses the
    whole operation with AUTHENTICATOR_REQUIRED before it runs.
    Asked on every operation (after SessionPerOperation's re-check on a WebSocket), so the
    session is a full one as soon as its authenticator is confirmed."""

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        session = getattr(execution.context, "session", None)
        document = execution.graphql_document
        if session is not None and document is not None:
            operation = get_operation_ast(document, execution.operation_name)
            fields = (
                root_fields(operation.selection_set, fragments_of(document)) if operation else ()
            )
            names = {field.name.value for field in fields}
            if not names <= enrollment.ENROLLMENT_FIELDS and await enrollment.session_must_enroll(
                session
            ):
                raise GraphQLError(
                    enrollment.REQUIRED, extensions={"code": ErrorCode.AUTHENTICATOR_REQUIRED}
                )
        yield
