"""Keyset pages of child rows for many parents at once (an account's documents, mail and
audit entries, a contact's accounts): one ranked statement instead of a COUNT and a page per
parent.

A page continues after a position (the sort key values, then the row id) in the list's own
order, compared in SQL on the same expressions as the ORDER BY, so rows added or removed
before it never shift the page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from tortoise import Tortoise
from tortoise.models import Model

from services.shared.scope import FirmScope

M = TypeVar("M", bound=Model)

Value = str | int | datetime
Position = tuple[Value, ...]  # the sort key values and the id of the row a page ends with
# A parent's total and its rows after the position, up to size + 1 (one more: more follow).
Page = tuple[int, list[tuple[int, Position]]]


@dataclass(frozen=True)
class Listing:
    """One kind of child list, as SQL written in the code (never built from input).

    `source` is a FROM clause; `parent`, `id` and `keys` are expressions over it: the
    parent's id, the row's id and the sort keys before the id (the id breaks ties, so the
    order is total); all ascending or all `descending`. `where` keeps the rows of the list
    (in the totals too) and names the viewer's firm as `{firm}`; other `{names}` are
    parameters the caller passes. `key_types` say what each key is (datetime keys come back
    from SQLite as text).
    """

    source: str
    parent: str
    id: str
    keys: tuple[str, ...]
    key_types: tuple[type, ...]
    where: str
    descending: bool = False


async def keyset_pages(
    scope: FirmScope,
    listing: Listing,
    parent_ids: Sequence[int],
    after: Position | None,
    size: int,
    args: Mapping[str, Any] | None = None,
) -> dict[int, Page]:
    """For each parent: its total and the ids and positions of its rows after `after`, in
    order, up to size + 1 of them.

    A window function ranks every parent's rows at once, split into those past the position
    (`kept`) and the rest; each partition's first row always comes back so that a parent
    whose page is empty still reports its total.
    """
    if not parent_ids:
        return {}
    conn = Tortoise.get_connection("default")
    postgres = conn.capabilities.dialect == "postgres"
    params: list[Any] = []

    def param(value: Any) -> str:
        if isinstance(value, datetime):  # stored in UTC: SQLite compares the text
            value = value.astimezone(UTC)
        params.append(value)
        # Numbered on both (SQLite's ?NNN): a listing may name one parameter twice.
        return f"${len(params)}" if postgres else f"?{len(params)}"

    names = {"firm": param(scope.firm_id)}
    # Only the parameters the listing names: PostgreSQL refuses one it cannot type.
    used = {name: value for name, value in (args or {}).items() if f"{{{name}}}" in listing.where}
    names.update({name: param(value) for name, value in used.items()})
    where = listing.where.format(**names)
    parents = ", ".join(param(p) for p in parent_ids)
    kept = "1" if after is None else f"CASE WHEN {_past(listing, after, param)} THEN 1 ELSE 0 END"
    keys = "".join(f", {key} AS k{i}" for i, key in enumerate(listing.keys))
    key_names = "".join(f", k{i}" for i in range(len(listing.keys)))
    direction = " DESC" if listing.descending else ""
    order = ", ".join(f"k{i}{direction}" for i in range(len(listing.keys)))
    order = f"{order}, id{direction}" if order else f"id{direction}"
    sql = (
        f"SELECT parent, id{key_names}, kept, rn, total FROM ("
        f" SELECT parent, id{key_names}, kept,"
        f"  ROW_NUMBER() OVER (PARTITION BY parent, kept ORDER BY {order}) AS rn,"
        "  COUNT(*) OVER (PARTITION BY parent) AS total"
        f" FROM (SELECT {listing.parent} AS parent, {listing.id} AS id{keys}, {kept} AS kept"
        f"  FROM {listing.source} WHERE ({where}) AND {listing.parent} IN ({parents})"
        " ) listed"
        f") ranked WHERE rn = 1 OR (kept = 1 AND rn <= {param(size + 1)})"
    )
    _, ranked = await conn.execute_query(sql, params)
    totals: dict[int, int] = {}
    found: dict[int, list[tuple[int, int, Position]]] = {p: [] for p in parent_ids}
    for row in ranked:
        totals[row["parent"]] = row["total"]
        if row["kept"] == 1 and row["rn"] <= size + 1:
            values = [_value(row[f"k{i}"], t) for i, t in enumerate(listing.key_types)]
            found[row["parent"]].append((row["rn"], row["id"], (*values, row["id"])))
    return {
        p: (totals.get(p, 0), [(pk, pos) for _, pk, pos in sorted(found[p])]) for p in parent_ids
    }


def _past(listing: Listing, after: Position, param: Callable[[Any], str]) -> str:
    """(k1, ..., id) beyond `after` in the list's order, spelled out for both databases."""
    op = "<" if listing.descending else ">"
    exprs = (*listing.keys, listing.id)
    parts = []
    for i, expr in enumerate(exprs):
        equal = [f"{exprs[j]} = {param(after[j])}" for j in range(i)]
        parts.append("(" + " AND ".join([*equal, f"{expr} {op} {param(after[i])}"]) + ")")
    return "(" + " OR ".join(parts) + ")"


def _value(value: Any, wanted: type) -> Value:
    if wanted is datetime and isinstance(value, str):  # SQLite keeps times as text
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


async def rows_in_order(
    scope: FirmScope, model: type[M], pages: Mapping[int, Page]
) -> dict[int, M]:
    """The `model` rows the pages name, by id, in one query."""
    wanted = {pk for _, rows in pages.values() for pk, _ in rows}
    return await scope.by_ids(model, wanted) if wanted else {}


# The lists -------------------------------------------------------------------------------

_NEWEST_FIRST = {"keys": ("t.created_at",), "key_types": (datetime,), "descending": True}


def newest_first(table: str, parent: str = "account_id", where: str = "") -> Listing:
    """A table's rows per parent, newest first (created_at, then id)."""
    escaped = where.replace("{", "{{").replace("}", "}}")  # a literal, not a parameter name
    only = f" AND ({escaped})" if where else ""
    return Listing(
        source=f'"{table}" t',
        parent=f"t.{parent}",
        id="t.id",
        where=f"t.firm_id = {{firm}}{only}",
        **_NEWEST_FIRST,  # type: ignore[arg-type]
    )


async def pages_by_account(
    scope: FirmScope,
    model: type[M],
    account_ids: Sequence[int],
    after: Position | None,
    size: int,
    where: str | None = None,
) -> dict[int, tuple[int, list[M]]]:
    """Each account's total and its `model` rows after `after`, newest first, up to size + 1
    (one more than the page: whether more follow).

    `model` has firm_id, account_id and created_at. `where` leaves out the rows it does not
    hold for, in the totals too: a fixed SQL condition on the table's own columns (alias
    `t`, or unqualified), written in the code (never built from input).
    """
    listing = newest_first(model._meta.db_table, where=where or "")
    pages = await keyset_pages(scope, listing, account_ids, after, size)
    rows = await rows_in_order(scope, model, pages)
    return {
        a: (total, [rows[pk] for pk, _ in found if pk in rows])
        for a, (total, found) in pages.items()
    }
