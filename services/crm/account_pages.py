"""A page of the firm's accounts by name (the `accounts` root field without a search), read
by one hand-written SELECT: the portal's account list asks it on every load, and building
the same statement through Tortoise cost five times running it.

The statement is the one Tortoise builds for records.accounts (LOWER(name), then the id;
the keyset's "after" as (key > v) OR (key = v AND id > pk)), so the database orders and
compares exactly as before. A search still goes through Tortoise (its icontains). Values
come out as `.values()` gives them: tests/test_account_pages.py compares page after page.
"""

from __future__ import annotations

from typing import Any

from models import Account
from services.shared import sql
from services.shared.paging import Position
from services.shared.scope import FirmScope

_TYPE = Account._meta.fields_map["type"]


async def page_rows(
    scope: FirmScope, include_archived: bool, limit: int, after: Position | None
) -> list[dict[str, Any]]:
    """Up to `limit` accounts past `after` (sort name, id), as dicts of id, name, type,
    auto_save_attachments, archived_at and sort_name."""
    where = ["firm_id = ?"]
    params: list[Any] = [scope.firm_id]
    if not include_archived:
        where.append("archived_at IS NULL")
    if after is not None:
        sort_name, pk = after
        where.append("(LOWER(name) > ? OR (LOWER(name) = ? AND id > ?))")
        params += [sort_name, sort_name, pk]
    rows = await sql.select(
        "SELECT id, name, type, auto_save_attachments, archived_at, LOWER(name) FROM account"
        f" WHERE {' AND '.join(where)} ORDER BY LOWER(name), id LIMIT ?",
        [*params, limit],
    )
    return [
        {
            "id": pk,
            "name": name,
            "type": _TYPE.to_python_value(kind),
            "auto_save_attachments": bool(auto_save),
            "archived_at": sql.utc_or_none(archived_at),
            "sort_name": sort_name,
        }
        for pk, name, kind, auto_save, archived_at, sort_name in rows
    ]
