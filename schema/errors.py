"""The UserError type of mutation payloads."""

from __future__ import annotations

import strawberry

from services.shared import errors


@strawberry.type(
    description="Why a mutation did nothing: a stable code, the input path, a message."
)
class UserError:
    code: str
    field: list[str] | None
    message: str

    @classmethod
    def from_service(cls, error: errors.UserError) -> UserError:
        return cls(
            code=error.code,
            field=list(error.field) if error.field else None,
            message=error.message,
        )

    @classmethod
    def from_input_error(cls, exc: errors.InputError) -> list[UserError]:
        return [cls.from_service(e) for e in exc.errors]
