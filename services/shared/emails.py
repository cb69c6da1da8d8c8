"""Email address syntax: validated with email-validator, compared case-insensitively."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

from services.shared.errors import ErrorCode, input_error

MAX_LABEL_LENGTH = 100
DEFAULT_LABEL = "Email"


def validate_address(address: str, *field: str) -> tuple[str, str]:
    """The address as typed (trimmed) and its lookup form; INVALID_EMAIL when malformed."""
    typed = address.strip()
    try:
        validate_email(typed, check_deliverability=False)
    except EmailNotValidError as exc:
        raise input_error(
            ErrorCode.INVALID_EMAIL, f"'{typed}' is not a valid email address: {exc}", *field
        ) from None
    return typed, normalize(typed)


def normalize(address: str) -> str:
    return address.strip().lower()


def clean_label(label: str | None, *field: str) -> str:
    cleaned = (label or "").strip() or DEFAULT_LABEL
    if len(cleaned) > MAX_LABEL_LENGTH:
        raise input_error(ErrorCode.INVALID_LABEL, "A label has at most 100 characters.", *field)
    return cleaned
