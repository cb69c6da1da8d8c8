"""Reading synced mail: Inbox+ newest first, with keyset cursors that stay stable while new
mail arrives (a position is (sent_at, id), never an offset)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime

from tortoise.expressions import Q, Subquery

from models import Account, Message, MessageAccount
from services.errors import input_error
from services.scope import FirmScope

CURSOR_PREFIX = "message:"


def encode_cursor(message: Message) -> str:
    raw = f"{CURSOR_PREFIX}{message.sent_at.isoformat()}|{message.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode()).decode()
        when, _, pk = raw.removeprefix(CURSOR_PREFIX).rpartition("|")
        if raw.startswith(CURSOR_PREFIX):
            return datetime.fromisoformat(when), int(pk)
    except ValueError:
        pass
    raise input_error("BAD_CURSOR", f"'{cursor}' is not a cursor of this list.", "after")


async def inbox_page(
    scope: FirmScope, first: int, after: str | None
) -> tuple[int, list[Message], bool]:
    """(total, the page, whether more follow): the firm's synced mail, newest first."""
    linked = scope.query(MessageAccount).values("message_id")
    query = scope.query(Message).filter(id__in=Subquery(linked))
    total = await query.count()
    if after is not None:
        when, pk = decode_cursor(after)
        query = query.filter(Q(sent_at__lt=when) | Q(sent_at=when, id__lt=pk))
    rows = await query.order_by("-sent_at", "-id").limit(first + 1)
    return total, list(rows[:first]), len(rows) > first


async def accounts_by_message(
    scope: FirmScope, message_ids: Sequence[int]
) -> dict[int, list[Account]]:
    links = (
        await scope.query(MessageAccount)
        .filter(message_id__in=list(message_ids))
        .select_related("account")
        .order_by("account_id")
    )
    found: dict[int, list[Account]] = {pk: [] for pk in message_ids}
    for link in links:
        found[link.message_id].append(link.account)
    return found
