"""Errors that services raise. The API maps them; the CLI prints them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UserError:
    """A business-rule or input failure, with a stable machine code."""

    code: str
    message: str
    field: tuple[str, ...] | None = None


class InputError(Exception):
    """One or more UserErrors: the operation wrote nothing."""

    def __init__(self, *errors: UserError) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = list(errors)


def input_error(code: str, message: str, *field: str) -> InputError:
    return InputError(UserError(code, message, tuple(field) or None))


class AccessError(Exception):
    """Authentication or authorization failure; `code` is UNAUTHENTICATED or FORBIDDEN."""

    code = "FORBIDDEN"

    def __init__(self, message: str = "You may not do this.") -> None:
        super().__init__(message)


class Unauthenticated(AccessError):
    code = "UNAUTHENTICATED"

    def __init__(self, message: str = "Sign in first.") -> None:
        super().__init__(message)


class Forbidden(AccessError):
    code = "FORBIDDEN"
