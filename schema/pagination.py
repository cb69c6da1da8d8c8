"""Relay connections with totalCount, over offset cursors (fine for CRM lists)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.relay import PageInfo
from tortoise.models import Model
from tortoise.queryset import QuerySet

from services.shared.errors import ErrorCode

NodeT = TypeVar("NodeT")
M = TypeVar("M", bound=Model)

CURSOR_PREFIX = "arrayconnection:"
MAX_OFFSET = 2**31  # beyond any real list; keeps OFFSET within the databases' integer range


@strawberry.type
class Edge(Generic[NodeT]):
    node: NodeT
    cursor: str


@strawberry.type
class Connection(Generic[NodeT]):
    edges: list[Edge[NodeT]]
    page_info: PageInfo
    total_count: int


def encode_cursor(offset: int) -> str:
    return base64.b64encode(f"{CURSOR_PREFIX}{offset}".encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    """The offset after `cursor`; -1 for no cursor."""
    if cursor is None:
        return -1
    try:
        text = base64.b64decode(cursor, validate=True).decode()
        if text.startswith(CURSOR_PREFIX):
            offset = int(text.removeprefix(CURSOR_PREFIX))
            if 0 <= offset < MAX_OFFSET:
                return offset
    except ValueError:
        pass
    raise bad_input(f"'{cursor}' is not a cursor of this list.", "after")


def bad_input(message: str, argument: str) -> GraphQLError:
    return GraphQLError(
        message, extensions={"code": ErrorCode.BAD_USER_INPUT, "argument": argument}
    )


def check_page_size(first: int, max_page_size: int) -> None:
    if not 0 <= first <= max_page_size:
        raise bad_input(f"first must be between 0 and {max_page_size}.", "first")


def window(first: int, after: str | None, max_page_size: int) -> tuple[int, int]:
    """The checked (offset, size) a page asks for."""
    check_page_size(first, max_page_size)
    return decode_cursor(after) + 1, first


async def paginate(
    query: QuerySet[M],
    first: int,
    after: str | None,
    convert: Callable[[M], NodeT],
    max_page_size: int,
) -> Connection[NodeT]:
    """One COUNT and one page query, whatever the page size."""
    start, first = window(first, after, max_page_size)
    total = await query.count()
    rows: Sequence[M] = await query.offset(start).limit(first) if first else []
    return connection(rows, start, total, convert)


def connection(
    rows: Sequence[M], start: int, total: int, convert: Callable[[M], NodeT]
) -> Connection[NodeT]:
    """The Relay shape of one page: `rows` from offset `start` of `total`."""
    edges = [Edge(node=convert(row), cursor=encode_cursor(start + i)) for i, row in enumerate(rows)]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=start + len(rows) < total,
            has_previous_page=start > 0,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=total,
    )
