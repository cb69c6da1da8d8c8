"""Reading synced mail: Inbox+ and each account's Email tab newest first, with keyset cursors
that stay stable while new mail arrives (a position is (sent_at, id), never an offset)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from tortoise import Tortoise

from models import MAX_PK, Account, Message, MessageAccount
from services.outbound import outbox
from services.shared import sql
from services.shared.coalesce import Coalesced
from services.shared.errors import ErrorCode, input_error
from services.shared.scope import FirmScope

CURSOR_PREFIX = "message:"

Position = tuple[datetime, int]  # (sent_at, message id): where a page ends
PageKey = tuple[int, int, Position | None]  # (account id, page size, continue after)
Page = tuple[int, list[Message], bool]  # (total, the page, whether more follow)


class MessageRow(NamedTuple):
    """What the API shows of a message (schema.messages.Message.from_model reads these
    names), read as a row: no model instance on the inbox's page."""

    pk: int
    subject: str
    from_address: str
    to_addresses: list[str]
    cc_addresses: list[str]
    sent_at: datetime
    text_body: str | None
    html_body: str | None
    direction: str
    thread_key: str
    sender_auth: str | None
    content_skipped: str | None
    private_to_id: int | None


def encode_cursor(message: Message | MessageRow) -> str:
    raw = f"{CURSOR_PREFIX}{message.sent_at.isoformat()}|{message.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


# Cursors are the client's text: only positions a stored message could have pass, so neither
# database is handed an id beyond its column or a time it cannot convert to UTC.
# (A day inside Python's range: any offset still converts.)
_EARLIEST = datetime.min.replace(tzinfo=UTC) + timedelta(days=1)
_LATEST = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)


def decode_cursor(cursor: str) -> Position:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode()).decode()
        when, _, pk = raw.removeprefix(CURSOR_PREFIX).rpartition("|")
        if raw.startswith(CURSOR_PREFIX):
            position = datetime.fromisoformat(when), int(pk)
            if _is_possible(position):
                return position
    except (ValueError, OverflowError):
        pass
    raise input_error(ErrorCode.BAD_CURSOR, f"'{cursor}' is not a cursor of this list.", "after")


def _is_possible(position: Position) -> bool:
    when, pk = position
    aware = when.tzinfo is not None and when.utcoffset() is not None
    return aware and 0 < pk <= MAX_PK and _EARLIEST <= when <= _LATEST


async def inbox_page(
    scope: FirmScope, first: int, after: str | None, delivery_status: str | None = None
) -> tuple[int, list[MessageRow], bool]:
    """(total, the page, whether more follow): the firm's synced mail, newest first; with
    `delivery_status`, only the replies sent from Inbox+ whose delivery is in that status
    (FAILED: the replies that failed, for staff to see and write again).

    Hand-written SQL (services/shared/sql.py), as the ORM's statements were: a COUNT, then
    the page; rows, not models (building the query and 51 models cost more than the SQL).
    A reply's delivery is its outbox row (outbound_email.thread_message_id points at the
    stored reply; one row per reply): the filter is a semi-join on it, so the page is still
    one statement and the filter's rows are found by status first.
    """
    firm = scope.firm_id
    linked = "firm_id = ? AND id IN (SELECT message_id FROM message_account WHERE firm_id = ?)"
    params: list[Any] = [firm, firm]
    if delivery_status is not None:
        linked += (
            " AND id IN (SELECT thread_message_id FROM outbound_email"
            " WHERE firm_id = ? AND kind = ? AND status = ? AND thread_message_id IS NOT NULL)"
        )
        params += [firm, outbox.REPLY_KIND, delivery_status]
    [(total,)] = await sql.select(f"SELECT COUNT(*) FROM message WHERE {linked}", params)
    past = ""
    if after is not None:
        when, pk = decode_cursor(after)
        # Stored in UTC (the Tortoise timezone): SQLite compares the text, so match it.
        when = when.astimezone(UTC)
        past = " AND (sent_at < ? OR (sent_at = ? AND id < ?))"
        params += [when, when, pk]
    rows = await sql.select(
        f"SELECT {_MESSAGE_COLUMNS} FROM message WHERE {linked}{past}"
        " ORDER BY sent_at DESC, id DESC LIMIT ?",
        [*params, first + 1],
    )
    return total, [_message_row(row) for row in rows[:first]], len(rows) > first


# What MessageRow holds, in its order.
_MESSAGE_COLUMNS = (
    "id, subject, from_address, to_addresses, cc_addresses, sent_at, text_body, html_body,"
    " direction, thread_key, sender_auth, content_skipped, private_to_id"
)


def _message_row(row: Any) -> MessageRow:
    pk, subject, sender, to, cc, sent_at, text, html, direction, thread, auth, skip, private = row
    return MessageRow(
        pk,
        subject,
        sender,
        sql.json_list(to),
        sql.json_list(cc),
        sql.utc(sent_at),
        text,
        html,
        direction,
        thread,
        auth,
        skip,
        private,
    )


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


# The Email tab: pages of many accounts at once ------------------------------------------


async def account_pages(scope: FirmScope, keys: Sequence[PageKey]) -> list[Page]:
    """For each key (account id, page size, position to continue after or None): the
    account's message total, its page newest first and whether more follow.

    Positions are keyset ones, (sent_at, message id) as decode_cursor returns them. One
    ranked statement per distinct (size, position), then one for the messages, however many
    accounts ask: a list of accounts with their mail costs the same for 5 accounts as for 50.
    """
    ranked: dict[PageKey, list[Any]] = {}
    for size, after in {(key[1], key[2]) for key in keys}:
        accounts = sorted({key[0] for key in keys if (key[1], key[2]) == (size, after)})
        rows = await _ranked_links(scope, accounts, size, after)
        for account_id in accounts:
            ranked[(account_id, size, after)] = []
        for row in rows:
            ranked[(row["account_id"], size, after)].append(row)
    wanted = {row["message_id"] for rows in ranked.values() for row in rows if row["kept"]}
    found = await scope.by_ids(Message, wanted) if wanted else {}
    pages: list[Page] = []
    for account_id, size, after in keys:
        rows = ranked[(account_id, size, after)]
        total = rows[0]["total"] if rows else 0
        kept = sorted((r for r in rows if r["kept"]), key=lambda r: r["rn"])
        page = [found[r["message_id"]] for r in kept[:size] if r["message_id"] in found]
        pages.append((total, page, len(kept) > size))
    return pages


async def _ranked_links(
    scope: FirmScope, account_ids: Sequence[int], size: int, after: Position | None
) -> list[Any]:
    """Each account's links after `after`, ranked newest first, up to size + 1 of them (one
    more tells whether more follow), plus each account's first row for its total.

    message_account carries sent_at and an index on (account_id, sent_at, message_id) for
    exactly this; `kept` marks the rows past the position.
    """
    conn = Tortoise.get_connection("default")
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(value)
        return f"${len(params)}" if conn.capabilities.dialect == "postgres" else "?"

    if after is None:
        kept = "1"
    else:
        # Stored in UTC (the Tortoise timezone): SQLite compares the text, so match it.
        when, pk = after[0].astimezone(UTC), after[1]
        kept = (
            f"CASE WHEN sent_at < {param(when)} OR (sent_at = {param(when)}"
            f" AND message_id < {param(pk)}) THEN 1 ELSE 0 END"
        )
    firm = param(scope.firm_id)
    accounts = ", ".join(param(a) for a in account_ids)
    sql = (
        "SELECT message_id, account_id, kept, rn, total FROM ("
        " SELECT message_id, account_id, kept,"
        "  ROW_NUMBER() OVER (PARTITION BY account_id, kept"
        "   ORDER BY sent_at DESC, message_id DESC) AS rn,"
        "  COUNT(*) OVER (PARTITION BY account_id) AS total"
        f" FROM (SELECT message_id, account_id, sent_at, {kept} AS kept"
        f'  FROM "message_account" WHERE firm_id = {firm} AND account_id IN ({accounts})'
        " ) linked"
        f") ranked WHERE rn = 1 OR (kept = 1 AND rn <= {param(size + 1)})"
    )
    _, rows = await conn.execute_query(sql, params)
    return list(rows)


async def _messages_by_key(keys: Sequence[tuple[int, int]]) -> list[Message | None]:
    rows = await Message.filter(id__in={pk for _, pk in keys})
    found = {(row.firm_id, row.pk): row for row in rows}
    return [found.get(key) for key in keys]


_shared_messages = Coalesced(_messages_by_key)


async def announced_message(scope: FirmScope, message_id: int) -> Message | None:
    """The message an event announced, if it is in `scope`'s firm. Subscribers woken by the
    same event share one query; they get the same row: read it, never change it."""
    return await _shared_messages.load((scope.firm_id, message_id))
