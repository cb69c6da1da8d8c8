"""A signed-in client's session: which account they are in, and the account notice."""

from __future__ import annotations

from collections.abc import Sequence

from models import Account, Session
from services.portal import access
from services.shared.errors import ErrorCode, input_error


async def switch_account(session: Session, account_id: int | None) -> int:
    """Makes `account_id` the session's current account; NOT_FOUND unless accessible now."""
    assert session.portal_user_id is not None
    if account_id not in await access.client_account_ids(session.portal_user_id):
        raise input_error(ErrorCode.NOT_FOUND, "No such account.", "accountId")
    session.current_account_id = account_id
    await session.save(update_fields=["current_account_id"])
    return account_id


async def dismiss_notice(session: Session) -> None:
    """Hides the notice naming the current account until the next sign-in."""
    session.notice_dismissed = True
    await session.save(update_fields=["notice_dismissed"])


async def accounts_in_order(account_ids: Sequence[int]) -> list[Account]:
    """The accounts of these ids, in the order given (one query)."""
    rows = {row.pk: row for row in await Account.filter(pk__in=list(account_ids))}
    return [rows[i] for i in account_ids if i in rows]


def notice(account: Account | None, dismissed: bool) -> str | None:
    """The line naming the account a client is in, until they dismiss it."""
    if account is None or dismissed:
        return None
    return f"You are in the portal of {account.name}."
