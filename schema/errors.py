"""The ErrorCode enum and the UserError type of mutation payloads.

ErrorCode is services.shared.errors.ErrorCode itself, so a new code reaches the schema without
a change here; its description is looked up below, and a member without one fails
tests/test_schema_descriptions.py (the words follow the meaning column of docs/errors.md)."""

from __future__ import annotations

import strawberry

from schema.enums import expose
from services.shared import errors

# Describing a code is not raising it: under another name than ErrorCode, this table stays
# out of tests/test_error_codes.py's "every member is raised somewhere".
Code = errors.ErrorCode

CODE_DESCRIPTIONS: dict[errors.ErrorCode, str] = {
    # Top-level errors
    Code.UNAUTHENTICATED: "No live session: sign in (again).",
    Code.FORBIDDEN: "Signed in, but this viewer may not do it; retrying will not help.",
    Code.INTERNAL: "Something failed on the server (details are in the server log).",
    Code.BAD_USER_INPUT: "A variable does not fit its type, a paging argument is out of range or "
    "not a cursor of this list, or a text holds a control character; extensions.argument or "
    "extensions.variable names it. Nothing ran.",
    Code.PAYLOAD_TOO_LARGE: "The request body is over the server's limit (HTTP 413).",
    Code.SUBSCRIPTIONS_UNAVAILABLE: "This server process has no event bus; subscriptions cannot "
    "run here.",
    Code.QUERY_TOO_COMPLEX: "The document asks for more work than one request may (fields, "
    "depth, aliases or page sizes). Ask for less, or page.",
    Code.BATCHED_SIGN_IN: "A request may carry at most one signIn, staffSignIn, "
    "acceptInvitation or setStaffPassword field.",
    Code.BAD_REQUEST: "Not a GraphQL request the server can run: malformed JSON or multipart "
    "body, no query, an unknown operationName, a subscription over HTTP (HTTP 400).",
    Code.PERSISTED_QUERY_NOT_FOUND: "Persisted queries: the server does not know this "
    "sha256Hash; send the request again with its query.",
    Code.PERSISTED_QUERY_NOT_SUPPORTED: "Persisted queries are off on this server; send the "
    "query itself.",
    Code.OPERATION_NOT_ALLOWED: "This server runs only the operations of its allow-list, and "
    "this document is not one of them (HTTP 403).",
    Code.RATE_LIMITED: "Too many requests from this address or session in a short time "
    "(HTTP 429): wait the seconds of the Retry-After header.",
    Code.UNAVAILABLE: "The server cannot reach its database just now (HTTP 503): nothing ran; "
    "retry after the seconds of the Retry-After header.",
    Code.GRAPHQL_PARSE_FAILED: "The document is not GraphQL syntax, or has too many tokens.",
    Code.GRAPHQL_VALIDATION_FAILED: "The document does not validate against the schema; "
    "retrying will not help.",
    # Input, any mutation
    Code.NOT_FOUND: "No such object for this viewer: unknown id, another type's id, or another "
    "firm's.",
    Code.INVALID_EMAIL: "Not a valid email address.",
    Code.INVALID_LABEL: "An address label over 100 characters.",
    Code.INVALID_NAME: "A name is empty or too long (the message gives the limit).",
    Code.INVALID_TEXT: "A subject, title or body is empty or too long.",
    Code.TOO_MANY: "A list is longer than allowed (the message gives the limit).",
    Code.WEAK_PASSWORD: "The password is too short, too long or too uniform.",
    # Sign-in and staff
    Code.INVALID_CREDENTIALS: "Wrong firm, address or password (never says which).",
    Code.TOO_MANY_ATTEMPTS: "Too many failed sign-ins for this address or from this network "
    "address; wait a few minutes. For a second factor: the challenge's 5 tries are used up.",
    Code.SECOND_FACTOR_INVALID: "The code is wrong, or its challenge expired, was used or never "
    "existed (never says which).",
    Code.AUTHENTICATOR_ENROLLED: "An authenticator is set up already: replacing it needs a "
    "code from it or a recovery code.",
    Code.AUTHENTICATOR_REQUIRED: "The firm requires an authenticator of this person: it may "
    "not be removed (replace it), and a session without one may only set one up.",
    Code.INVALID_SLUG: "A firm slug is 2-63 lower-case letters, digits or dashes.",
    Code.SLUG_TAKEN: "A firm with this slug exists.",
    Code.LAST_OWNER: "The change would leave the firm without an active owner.",
    Code.LINK_INVALID: "Not a password link (or its member was deactivated).",
    Code.LINK_USED: "The password link was used already: sign in.",
    Code.LINK_REVOKED: "A newer password link was sent; use that one.",
    Code.LINK_EXPIRED: "The password link expired; ask an owner or admin for a new one.",
    # CRM and CSV import
    Code.EMAIL_TAKEN: "The address belongs to another contact, is given twice, or is already a "
    "staff member.",
    Code.NOT_LINKED: "The contact is not linked to that account.",
    Code.INVALID_CSV: "The file is not readable CSV text; nothing was imported.",
    Code.TOO_MANY_ROWS: "More rows than one import takes; nothing was imported.",
    Code.DUPLICATE_COLUMN: "The header names a column twice; nothing was imported.",
    Code.MISSING_COLUMN: "A required column (first_name, last_name, email) is missing; nothing "
    "was imported.",
    Code.MISSING_EMAIL: "A row's email cell is empty; that row was rejected.",
    # Client portal
    Code.LOGIN_OFF: "Turn LOGIN on for the address first.",
    Code.ACCOUNT_ARCHIVED: "The account is archived: no invitation goes out until it is "
    "unarchived.",
    Code.INVITATION_INVALID: "Not an invitation link.",
    Code.INVITATION_USED: "The invitation was accepted already: sign in.",
    Code.INVITATION_REVOKED: "The invitation was withdrawn (superseded, address changed, "
    "LOGIN off).",
    Code.INVITATION_EXPIRED: "The invitation expired; ask the firm for a new one.",
    Code.NO_ACCOUNTS: "Name at least one account.",
    Code.INVALID_KIND: "kind is DIRECT, MASS or AUTOMATION.",
    Code.INVALID_LINK: "A link is an http(s) URL.",
    # Documents
    Code.INVALID_FILE: "file was not sent as a part of a multipart request.",
    Code.INVALID_FILENAME: "The file has no usable name.",
    Code.UNSUPPORTED_TYPE: "Files of this type are not accepted.",
    Code.TOO_LARGE: "The file is over the upload limit (the message gives it).",
    # Mailboxes, synced mail and replies
    Code.INVALID_HOST: "imapHost or smtpHost is not a host name or IP address.",
    Code.INVALID_PORT: "imapPort or smtpPort is not between 1 and 65535.",
    Code.INVALID_USERNAME: "The username is empty, too long or not printable.",
    Code.INVALID_PASSWORD: "The mailbox password is empty, too long or has control characters, "
    "or a server or user name changed without it.",
    Code.MAILBOX_EXISTS: "The address is already connected in this firm.",
    Code.HOST_NOT_ALLOWED: "In production, a mail host or a webhook URL's host on a loopback, "
    "private or other non-public address.",
    Code.IMAP_AUTH_FAILED: "The IMAP server refused the username or password.",
    Code.IMAP_CONNECTION_FAILED: "No IMAP server answered at that host and port.",
    Code.IMAP_TLS_FAILED: "TLS with the IMAP server failed, or it wants TLS.",
    Code.SMTP_AUTH_FAILED: "The SMTP server refused the login.",
    Code.SMTP_CONNECTION_FAILED: "No SMTP server answered at that host and port.",
    Code.SMTP_TLS_FAILED: "TLS or STARTTLS with the SMTP server failed.",
    Code.BAD_CURSOR: "Not sent to clients: a bad message list cursor arrives as BAD_USER_INPUT.",
    Code.NO_MAILBOX: "Connect a mailbox first: replies are sent through one.",
    Code.NO_RECIPIENT: "The message has no address a reply could go to.",
    Code.MAILBOX_DISCONNECTED: "The thread's mail came through a personal mailbox that was "
    "disconnected: it can no longer be made private.",
    # Webhooks
    Code.INVALID_URL: "A webhook URL is not an http(s) URL with a host (https only in "
    "production), is too long, or carries a password or a #fragment.",
    Code.INVALID_EVENTS: "A webhook endpoint names no event, or an event twice.",
    Code.WEBHOOK_LIMIT_REACHED: "The firm has as many webhook endpoints as allowed (the message "
    "gives the limit); delete one first.",
    Code.ENDPOINT_DISABLED: "The webhook endpoint is disabled: enable it before sending a "
    "delivery again.",
}

ErrorCode = expose(
    errors.ErrorCode,
    "A stable machine code: in a payload's errors[].code, and as extensions.code of a "
    "top-level error. Match on it; show the message to people.",
    CODE_DESCRIPTIONS,
)


@strawberry.type(
    description="Why a mutation did nothing: a stable code, the input path, a message."
)
class UserError:
    code: ErrorCode = strawberry.field(description="What went wrong, as a stable code.")
    field: list[str] | None = strawberry.field(
        description='The path of the argument at fault, e.g. ["input", "emails", "0", '
        '"address"]; null when no single argument is.'
    )
    message: str = strawberry.field(description="What went wrong, in words to show a person.")

    @classmethod
    def from_service(cls, error: errors.UserError) -> UserError:
        return cls(
            code=errors.ErrorCode(error.code),
            field=list(error.field) if error.field else None,
            message=error.message,
        )

    @classmethod
    def from_input_error(cls, exc: errors.InputError) -> list[UserError]:
        return [cls.from_service(e) for e in exc.errors]
