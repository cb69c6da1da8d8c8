"""Hand-written SELECTs for the hottest reads (a page's nested lists), on Tortoise's
connection: building a query through the ORM costs several times the statement itself.

Statements mark parameters with `?`; PostgreSQL gets them numbered ($1, $2, ...): every
`?` is one, so a statement holds no other (no `?` in a literal, no jsonb `?` operator). Rows
come back as the driver gives them (indexable by position): SQLite gives 0/1 for booleans
and text for JSON, so callers convert with `bool` and `json_list`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from tortoise import Tortoise


async def select(sql: str, params: Sequence[Any]) -> list[Any]:
    """The rows of one SELECT whose parameters are marked `?`."""
    conn = Tortoise.get_connection("default")
    if conn.capabilities.dialect == "postgres":
        parts = sql.split("?")
        sql = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))
    _, rows = await conn.execute_query(sql, list(params))
    return list(rows)


def marks(count: int) -> str:
    """`count` parameter marks for an IN list."""
    return ", ".join("?" * count)


def utc(value: Any) -> datetime:
    """A stored time as Tortoise gives it (use_tz, UTC): SQLite keeps ISO text, PostgreSQL
    an aware datetime; both come out aware in UTC, so their ISO text is the same."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def utc_or_none(value: Any) -> datetime | None:
    return None if value is None else utc(value)


def json_list(value: Any) -> list[Any]:
    """A JSON column holding a list: text on SQLite (and PostgreSQL without a codec)."""
    return orjson.loads(value) if isinstance(value, (str, bytes)) else list(value)
