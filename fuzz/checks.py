"""Schemathesis checks for Portico, registered by fuzz.hooks.

Schemathesis' own `not_a_server_error` counts every GraphQL error that carries a `path` and
no client-error code as a server error: Portico's UNAUTHENTICATED, FORBIDDEN and NOT_FOUND
would all fail it. These checks fail only on what the server must never answer.
"""

from __future__ import annotations

from typing import Any

import schemathesis

INTERNAL = "INTERNAL"
NON_NULL_VIOLATION = "Cannot return null for non-nullable field"


def _errors(response: Any) -> list[dict[str, Any]]:
    try:
        payload = response.json()
    except ValueError:
        return []
    errors = payload.get("errors") if isinstance(payload, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


@schemathesis.check
def portico_no_5xx(ctx: Any, response: Any, case: Any) -> None:
    """Any 5xx status."""
    if response.status_code >= 500:
        raise AssertionError(f"HTTP {response.status_code}: {response.text[:300]}")


@schemathesis.check
def portico_no_internal(ctx: Any, response: Any, case: Any) -> None:
    """An error masked as INTERNAL: an exception escaped a resolver or the server."""
    for error in _errors(response):
        extensions = error.get("extensions")
        if isinstance(extensions, dict) and extensions.get("code") == INTERNAL:
            raise AssertionError(f"INTERNAL error at path {error.get('path')}")


@schemathesis.check
def portico_no_null_violation(ctx: Any, response: Any, case: Any) -> None:
    """A non-null field resolved to null: the answer breaks the published schema."""
    for error in _errors(response):
        message = str(error.get("message", ""))
        if message.startswith(NON_NULL_VIOLATION):
            raise AssertionError(message)
