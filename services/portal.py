"""A signed-in client's session: which account they are in, and the account notice."""

from __future__ import annotations

from models import Session
from services import access
from services.errors import input_error


async def switch_account(session: Session, account_id: int | None) -> int:
    """Makes `account_id` the session's current account; NOT_FOUND unless accessible now."""
    assert session.portal_user_id is not None
    if account_id not in await access.client_account_ids(session.portal_user_id):
        raise input_error("NOT_FOUND", "No such account.", "accountId")
    session.current_account_id = account_id
    await session.save(update_fields=["current_account_id"])
    return account_id


async def dismiss_notice(session: Session) -> None:
    """Hides the notice naming the current account until the next sign-in."""
    session.notice_dismissed = True
    await session.save(update_fields=["notice_dismissed"])
