"""Errors that services raise, and every error code Portico sends. The API maps them; the
CLI prints them. docs/errors.md explains each code to clients; tests/test_error_codes.py
keeps the two equal and every raise site on the enum."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    """A stable machine code. A member is a str, so JSON carries its plain value."""

    # Top-level errors (`errors[].extensions.code`)
    UNAUTHENTICATED = "UNAUTHENTICATED"  # no live session
    FORBIDDEN = "FORBIDDEN"  # signed in, but not allowed
    INTERNAL = "INTERNAL"  # an unexpected failure, masked
    BAD_USER_INPUT = "BAD_USER_INPUT"  # a bad paging argument (first, after)
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"  # request body over the limit (HTTP 413)
    SUBSCRIPTIONS_UNAVAILABLE = "SUBSCRIPTIONS_UNAVAILABLE"  # no event bus in this process
    QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"  # over the work budget, refused before execution
    BATCHED_SIGN_IN = "BATCHED_SIGN_IN"  # more than one sign-in field in one request
    BAD_REQUEST = "BAD_REQUEST"  # a malformed HTTP body or multipart map (HTTP 400)
    GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"  # not GraphQL syntax, or over the token limit
    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"  # not valid against the schema
    PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"  # APQ: unknown hash, send the query
    PERSISTED_QUERY_NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"  # APQ off on this server
    OPERATION_NOT_ALLOWED = "OPERATION_NOT_ALLOWED"  # not in the allow-list (HTTP 403)
    RATE_LIMITED = "RATE_LIMITED"  # over the request rate (HTTP 429, Retry-After)
    UNAVAILABLE = "UNAVAILABLE"  # the database cannot be reached (HTTP 503, Retry-After)

    # Input, any mutation (payload `errors[].code`)
    NOT_FOUND = "NOT_FOUND"  # no such row in the viewer's firm (also top-level)
    INVALID_EMAIL = "INVALID_EMAIL"
    INVALID_LABEL = "INVALID_LABEL"
    INVALID_NAME = "INVALID_NAME"
    INVALID_TEXT = "INVALID_TEXT"
    TOO_MANY = "TOO_MANY"  # a list longer than allowed
    WEAK_PASSWORD = "WEAK_PASSWORD"

    # Sign-in and staff
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    TOO_MANY_ATTEMPTS = "TOO_MANY_ATTEMPTS"
    SECOND_FACTOR_INVALID = "SECOND_FACTOR_INVALID"
    AUTHENTICATOR_ENROLLED = "AUTHENTICATOR_ENROLLED"
    # Also top-level: an enrollment-only session asked for anything but enrolling.
    AUTHENTICATOR_REQUIRED = "AUTHENTICATOR_REQUIRED"
    INVALID_SLUG = "INVALID_SLUG"
    SLUG_TAKEN = "SLUG_TAKEN"
    LAST_OWNER = "LAST_OWNER"
    LINK_INVALID = "LINK_INVALID"
    LINK_USED = "LINK_USED"
    LINK_REVOKED = "LINK_REVOKED"
    LINK_EXPIRED = "LINK_EXPIRED"

    # CRM and its CSV import
    EMAIL_TAKEN = "EMAIL_TAKEN"
    NOT_LINKED = "NOT_LINKED"
    INVALID_CSV = "INVALID_CSV"
    TOO_MANY_ROWS = "TOO_MANY_ROWS"
    DUPLICATE_COLUMN = "DUPLICATE_COLUMN"
    MISSING_COLUMN = "MISSING_COLUMN"
    MISSING_EMAIL = "MISSING_EMAIL"

    # Client portal: LOGIN, invitations, notifications
    LOGIN_OFF = "LOGIN_OFF"
    ACCOUNT_ARCHIVED = "ACCOUNT_ARCHIVED"
    INVITATION_INVALID = "INVITATION_INVALID"
    INVITATION_USED = "INVITATION_USED"
    INVITATION_REVOKED = "INVITATION_REVOKED"
    INVITATION_EXPIRED = "INVITATION_EXPIRED"
    NO_ACCOUNTS = "NO_ACCOUNTS"
    INVALID_KIND = "INVALID_KIND"
    INVALID_LINK = "INVALID_LINK"

    # Documents
    INVALID_FILE = "INVALID_FILE"
    INVALID_FILENAME = "INVALID_FILENAME"
    UNSUPPORTED_TYPE = "UNSUPPORTED_TYPE"
    TOO_LARGE = "TOO_LARGE"

    # Mailboxes, synced mail and replies
    INVALID_HOST = "INVALID_HOST"
    INVALID_PORT = "INVALID_PORT"
    INVALID_USERNAME = "INVALID_USERNAME"
    INVALID_PASSWORD = "INVALID_PASSWORD"
    MAILBOX_EXISTS = "MAILBOX_EXISTS"
    HOST_NOT_ALLOWED = "HOST_NOT_ALLOWED"  # a mail host on a non-public network (production)
    IMAP_AUTH_FAILED = "IMAP_AUTH_FAILED"
    IMAP_CONNECTION_FAILED = "IMAP_CONNECTION_FAILED"
    IMAP_TLS_FAILED = "IMAP_TLS_FAILED"
    SMTP_AUTH_FAILED = "SMTP_AUTH_FAILED"
    SMTP_CONNECTION_FAILED = "SMTP_CONNECTION_FAILED"
    SMTP_TLS_FAILED = "SMTP_TLS_FAILED"
    BAD_CURSOR = "BAD_CURSOR"
    NO_MAILBOX = "NO_MAILBOX"
    NO_RECIPIENT = "NO_RECIPIENT"
    MAILBOX_DISCONNECTED = "MAILBOX_DISCONNECTED"  # unshareThread: its mailbox is gone

    # Webhooks
    INVALID_URL = "INVALID_URL"
    INVALID_EVENTS = "INVALID_EVENTS"
    WEBHOOK_LIMIT_REACHED = "WEBHOOK_LIMIT_REACHED"
    ENDPOINT_DISABLED = "ENDPOINT_DISABLED"  # redeliverWebhook while its endpoint is off


@dataclass(frozen=True)
class UserError:
    """A business-rule or input failure, with a stable machine code."""

    code: ErrorCode
    message: str
    field: tuple[str, ...] | None = None


class InputError(Exception):
    """One or more UserErrors: the operation wrote nothing."""

    def __init__(self, *errors: UserError) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = list(errors)


def input_error(code: ErrorCode, message: str, *field: str) -> InputError:
    return InputError(UserError(code, message, tuple(field) or None))


class AccessError(Exception):
    """Authentication or authorization failure; `code` is UNAUTHENTICATED, FORBIDDEN or
    AUTHENTICATOR_REQUIRED."""

    code: ErrorCode = ErrorCode.FORBIDDEN

    def __init__(self, message: str = "You may not do this.") -> None:
        super().__init__(message)


class Unauthenticated(AccessError):
    code = ErrorCode.UNAUTHENTICATED

    def __init__(self, message: str = "Sign in first.") -> None:
        super().__init__(message)


class Forbidden(AccessError):
    code = ErrorCode.FORBIDDEN


class AuthenticatorRequired(AccessError):
    """The session may only set up an authenticator (services/firm/enrollment)."""

    code = ErrorCode.AUTHENTICATOR_REQUIRED
