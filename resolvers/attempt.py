"""Run a mutation's service call and turn its InputError into payload errors."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from resolvers.context import Context
from schema.errors import UserError
from services.shared.errors import InputError

T = TypeVar("T")


async def attempt(context: Context, action: Awaitable[T]) -> tuple[T | None, list[UserError]]:
    try:
        return await action, []
    except InputError as exc:
        return None, UserError.from_input_error(exc)
    finally:
        # The payload (and any later mutation of the same document) must see the writes.
        context.reset_loaders()
