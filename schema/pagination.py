"""Relay connections with totalCount, over keyset (seek) cursors.

A cursor names where a page ends: the sort key values and the id of its last row, so a row
inserted or deleted before it never shifts the next page. The next page is the rows after
that position in the list's own order (`WHERE (keys, id) > (...)`, or `<` newest first),
compared in SQL on the same expressions as the ORDER BY. The text is opaque to clients:
base64 of a versioned prefix, the list's kind and the values as JSON; a cursor of another
list, version or shape is refused as BAD_USER_INPUT on `after`.

pageInfo: hasNextPage is exact (a page reads one row more than it shows); hasPreviousPage
says whether `after` was given (forward paging only: what lies before is not read).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import orjson
import strawberry
from graphql import GraphQLError
from strawberry.relay import PageInfo
from strawberry.types import Info
from strawberry.types.nodes import SelectedField
from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.queryset import QuerySet

from models import MAX_PK
from services.shared.errors import ErrorCode
from services.shared.paging import Position, Value

NodeT = TypeVar("NodeT")
M = TypeVar("M", bound=Model)

VERSION = "v1"
MAX_CURSOR_LENGTH = 2048  # far above any real cursor; refuses junk before decoding it
MAX_TEXT_KEY = 1000  # a sort key is a (lowered) name: bounded like the columns it comes from
# Times a stored row could have: every offset still converts to UTC inside Python's range.
_EARLIEST = datetime.min.replace(tzinfo=UTC) + timedelta(days=1)
_LATEST = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)


@strawberry.type(description="One item of a page and the cursor that continues after it.")
class Edge(Generic[NodeT]):
    node: NodeT = strawberry.field(description="The item.")
    cursor: str = strawberry.field(
        description="Opaque; pass it as `after` for the items that follow this one."
    )


@strawberry.type(description="One page of a list, with where it ends and the list's size.")
class Connection(Generic[NodeT]):
    edges: list[Edge[NodeT]] = strawberry.field(description="The page's items, in list order.")
    page_info: PageInfo = strawberry.field(
        description="hasNextPage: more items follow. hasPreviousPage: `after` was given "
        "(pages go forward only)."
    )
    total_count: int = strawberry.field(description="How many items the whole list holds.")


# Cursors ---------------------------------------------------------------------------------


def encode_cursor(kind: str, position: Position) -> str:
    """The opaque cursor of `position` (sort key values, then the row id) in list `kind`."""
    values = [_encode_value(v) for v in position]
    raw = f"{VERSION}:{kind}:{compact_json(values)}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


# json.dumps with separators builds an encoder per call: one made once writes the same text.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def compact_json(values: list[object]) -> str:
    """`json.dumps(values, separators=(",", ":"))`, the cursors' text since their first
    version. orjson writes the same text, 15 times faster, for what cursors hold (strings,
    ints within 64 bits, None, an ISO time in a dict) when it is ASCII; anything else (a
    float, text beyond ASCII or DEL, which json escapes and orjson does not) the json module
    writes."""
    if all(type(value) in _SAME_IN_ORJSON for value in values):
        try:
            text = orjson.dumps(values)
        except orjson.JSONEncodeError:  # an int beyond 64 bits
            text = None
        if text is not None and text.isascii() and b"\x7f" not in text:  # json escapes DEL
            return text.decode()
    return _COMPACT_JSON.encode(values)


# A cursor's dict is _encode_value's {"t": ISO text}.
_SAME_IN_ORJSON = frozenset({str, int, bool, type(None), dict})


def decode_cursor(
    cursor: str | None, kind: str | None = None, shape: Sequence[type] | None = None
) -> Position | None:
    """The position `cursor` names in list `kind`, whose keys have the types `shape` (the id
    last, an int); None for no cursor. BAD_USER_INPUT on `after` for anything else. Without
    a kind: only whether it is a cursor of some list (checks made before the list is known).
    """
    if cursor is None:
        return None
    position = _decode(cursor, kind)
    if position is None:
        raise _not_a_cursor(cursor)
    if kind is None or shape is None:
        return tuple(position)
    if len(position) != len(shape) or any(
        type(value) is not want for value, want in zip(position, shape, strict=True)
    ):
        raise _not_a_cursor(cursor)
    if not 0 < position[-1] <= MAX_PK:  # type: ignore[operator]
        raise _not_a_cursor(cursor)
    return tuple(position)


def _decode(cursor: str, kind: str | None) -> list[Value] | None:
    if len(cursor) > MAX_CURSOR_LENGTH:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii")).decode()
        version, found_kind, body = raw.split(":", 2)
        values = json.loads(body)
    except (ValueError, UnicodeError, binascii.Error, RecursionError):
        return None
    if version != VERSION or (kind is not None and found_kind != kind):
        return None
    if not isinstance(values, list) or not values:
        return None
    decoded = [_decode_value(v) for v in values]
    return None if any(v is None for v in decoded) else decoded  # type: ignore[return-value]


def _encode_value(value: Value) -> object:
    if isinstance(value, datetime):
        return {"t": value.astimezone(UTC).isoformat()}
    return value


def _decode_value(value: object) -> Value | None:
    if isinstance(value, dict) and set(value) == {"t"} and isinstance(value["t"], str):
        try:
            when = datetime.fromisoformat(value["t"])
            if when.tzinfo is None or not _EARLIEST <= when <= _LATEST:
                return None
            return when.astimezone(UTC)
        except (ValueError, OverflowError):
            return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and abs(value) <= MAX_PK:
        return value
    if isinstance(value, str) and len(value) <= MAX_TEXT_KEY and _storable(value):
        return value
    return None


def _storable(text: str) -> bool:
    """Text a database column could hold: PostgreSQL refuses NUL and lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _not_a_cursor(cursor: str) -> GraphQLError:
    shown = cursor if len(cursor) <= 80 else cursor[:80] + "…"
    return bad_input(f"'{shown}' is not a cursor of this list.", "after")


def bad_input(message: str, argument: str) -> GraphQLError:
    return GraphQLError(
        message, extensions={"code": ErrorCode.BAD_USER_INPUT, "argument": argument}
    )


def check_page_size(first: int, max_page_size: int) -> None:
    if not 0 <= first <= max_page_size:
        raise bad_input(f"first must be between 0 and {max_page_size}.", "first")


# Lists -----------------------------------------------------------------------------------


class Keyset:
    """A list's order for keyset paging: sort keys (fields or annotations of the query, the
    very ones its ORDER BY uses), then the id as tie-breaker, all ascending or all
    descending. `kind` names the list inside its cursors."""

    def __init__(
        self, kind: str, keys: Sequence[str], shape: Sequence[type], descending: bool = False
    ) -> None:
        self.kind = kind
        self.keys = tuple(keys)
        self.shape = (*shape, int)
        self.descending = descending

    def position(self, after: str | None) -> Position | None:
        return decode_cursor(after, self.kind, self.shape)

    def cursor(self, position: Position) -> str:
        return encode_cursor(self.kind, position)

    def after(self, position: Position) -> Q:
        """Rows past `position`: (k1 > v1) OR (k1 = v1 AND k2 > v2) ... OR (all = AND id > pk)."""
        op = "lt" if self.descending else "gt"
        names = (*self.keys, "id")
        parts = []
        for i, name in enumerate(names):
            equal = {n: position[j] for j, n in enumerate(names[:i])}
            parts.append(Q(**equal, **{f"{name}__{op}": position[i]}))
        combined = parts[0]
        for part in parts[1:]:
            combined |= part
        return combined

    def order(self) -> list[str]:
        sign = "-" if self.descending else ""
        return [f"{sign}{name}" for name in (*self.keys, "id")]


def size_of(first: int | None, max_page_size: int, default: int = 20) -> int:
    """The checked page size (null: the field's default)."""
    size = first if first is not None else default
    check_page_size(size, max_page_size)
    return size


async def paginate(
    query: QuerySet[M],
    first: int | None,
    after: str | None,
    convert: Callable[[M], NodeT],
    max_page_size: int,
    keyset: Keyset,
    columns: Sequence[str] = (),
    total: bool = True,
) -> Connection[NodeT]:
    """One COUNT and one page query (first + 1 rows: whether more follow), whatever the size;
    no COUNT when `total` is False (totalCount not asked for: it is then 0, never read).
    With `columns` (the id among them), rows are dicts of those columns, not models:
    `convert` takes a dict."""
    size = size_of(first, max_page_size)
    position = keyset.position(after)
    count = await query.count() if total else 0
    page = query.filter(keyset.after(position)) if position is not None else query
    ordered = page.order_by(*keyset.order()).limit(size + 1)
    if columns:
        found = await ordered.values(*columns, *keyset.keys)
        places = [(*(r[k] for k in keyset.keys), r["id"]) for r in found]
        return connection(found, places, size, count, after, convert, keyset)  # type: ignore[arg-type]
    rows: Sequence[M] = await ordered
    positions = [(*(getattr(r, k) for k in keyset.keys), r.pk) for r in rows]
    return connection(rows, positions, size, count, after, convert, keyset)


async def paginate_rows(
    fetch: Callable[[int, Position | None], Awaitable[Sequence[dict[str, Any]]]],
    count: Callable[[], Awaitable[int]],
    first: int | None,
    after: str | None,
    convert: Callable[[dict[str, Any]], NodeT],
    max_page_size: int,
    keyset: Keyset,
    total: bool = True,
) -> Connection[NodeT]:
    """As `paginate` with columns, the rows read by `fetch(limit, position)` (a hand-written
    statement in the keyset's order) and the total by `count` (only when asked)."""
    size = size_of(first, max_page_size)
    position = keyset.position(after)
    found = await fetch(size + 1, position)
    places = [(*(r[k] for k in keyset.keys), r["id"]) for r in found]
    return connection(found, places, size, await count() if total else 0, after, convert, keyset)


def asks_total(info: Info) -> bool:
    """Whether a connection field's selection reads totalCount (inside fragments too; a
    field under @include/@skip counts as asked)."""
    return any(_reads("totalCount", field.selections) for field in info.selected_fields)


def _reads(name: str, selections: Sequence[Any]) -> bool:
    for selection in selections:
        if isinstance(selection, SelectedField):
            if selection.name == name:
                return True
        elif _reads(name, selection.selections):  # a fragment spread or inline fragment
            return True
    return False


def connection(
    rows: Sequence[M],
    positions: Sequence[Position],
    size: int,
    total: int,
    after: str | None,
    convert: Callable[[M], NodeT],
    keyset: Keyset,
) -> Connection[NodeT]:
    """The Relay shape of one page: `rows` as read (up to size + 1) with their positions."""
    edges = [
        Edge(node=convert(row), cursor=keyset.cursor(position))
        for row, position in zip(rows[:size], positions[:size], strict=True)
    ]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(rows) > size,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=total,
    )


def page_of(
    page: tuple[int, Sequence[tuple[M, Position]]],
    size: int,
    after: str | None,
    convert: Callable[[M], NodeT],
    keyset: Keyset,
) -> Connection[NodeT]:
    """The Relay shape of a loader's page: the total and (row, position) pairs."""
    total, found = page
    rows = [row for row, _ in found]
    return connection(rows, [pos for _, pos in found], size, total, after, convert, keyset)


def newest_page(
    page: tuple[int, Sequence[M]],
    size: int,
    after: str | None,
    convert: Callable[[M], NodeT],
    keyset: Keyset,
) -> Connection[NodeT]:
    """A newest-first page of rows with created_at: their positions are (created_at, id)."""
    total, rows = page
    positions = [(row.created_at, row.pk) for row in rows]  # type: ignore[attr-defined]
    return connection(rows, positions, size, total, after, convert, keyset)


# Every keyset list of the API: its cursor kind and its order (the one its field describes).
ACCOUNTS = Keyset("accounts", ["sort_name"], [str])  # by name, case-insensitively
CONTACTS = Keyset("contacts", ["sort_last", "sort_first"], [str, str])  # by last, first name
STAFF_MEMBERS = Keyset("staffMembers", ["name"], [str])  # by name as written
DOCUMENTS = Keyset("documents", ["created_at"], [datetime], descending=True)
DELIVERIES = Keyset("deliveries", ["created_at"], [datetime], descending=True)
AUDIT_ENTRIES = Keyset("auditEntries", [], [], descending=True)  # newest (highest id) first
INVITATIONS = Keyset("invitations", [], [], descending=True)
CONTACT_ACCOUNTS = Keyset("contactAccounts", ["sort_name"], [str])  # windowed: LOWER(name)

# The paging arguments' descriptions, the same on every new connection field.
FIRST = "How many items to return, 0 to the server's maximum page size (100 by default)."
AFTER = "The cursor of the item to continue after (an edge's cursor); null: from the start."


def argument_check(keyset: Keyset) -> Callable[[Any, dict[str, Any]], None]:
    """The check of a connection field's `first` and `after` made before a mutation writes
    (resolvers/mutations/selection.py): the same refusals its resolver would give."""

    def check(info: Any, arguments: dict[str, Any]) -> None:
        if arguments.get("first") is not None:
            check_page_size(arguments["first"], info.context.settings.max_page_size)
        keyset.position(arguments.get("after"))

    return check
