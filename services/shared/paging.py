"""Pages of child rows for many parents at once (an account's mail, its documents): one
ranked statement instead of a COUNT and a page per parent."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from tortoise import Tortoise
from tortoise.models import Model

from services.shared.scope import FirmScope

M = TypeVar("M", bound=Model)


async def pages_by_account(
    scope: FirmScope,
    model: type[M],
    account_ids: Sequence[int],
    start: int,
    size: int,
    where: str | None = None,
) -> dict[int, tuple[int, list[M]]]:
    """Each account's total and its `model` rows [start, start + size), newest first.

    A window function ranks every account's rows at once; rank 1 always comes back so that
    an account whose page is empty still reports its total. `model` has firm_id,
    account_id and created_at. `where` leaves out the rows it does not hold for, in the
    totals too: a fixed SQL condition on the table's own columns, written in the code
    (never built from input: it is not a parameter).
    """
    if not account_ids:
        return {}
    table = model._meta.db_table
    conn = Tortoise.get_connection("default")
    mark = _placeholders(conn.capabilities.dialect)
    ids = ", ".join(mark(i + 2) for i in range(len(account_ids)))
    lo, hi = mark(len(account_ids) + 2), mark(len(account_ids) + 3)
    only = f" AND ({where})" if where else ""
    sql = (
        "SELECT id, account_id, rn, total FROM ("
        " SELECT id, account_id,"
        "  ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY created_at DESC, id DESC) AS rn,"
        "  COUNT(*) OVER (PARTITION BY account_id) AS total"
        f' FROM "{table}" WHERE firm_id = {mark(1)} AND account_id IN ({ids}){only}'
        f") ranked WHERE rn = 1 OR (rn > {lo} AND rn <= {hi})"
    )
    _, ranked = await conn.execute_query(sql, [scope.firm_id, *account_ids, start, start + size])
    wanted = [row for row in ranked if start < row["rn"] <= start + size]
    rows = {r.pk: r for r in await scope.query(model).filter(id__in=[r["id"] for r in wanted])}
    totals = {row["account_id"]: row["total"] for row in ranked}
    pages: dict[int, list[M]] = {a: [] for a in account_ids}
    for row in sorted(wanted, key=lambda r: r["rn"]):
        pages[row["account_id"]].append(rows[row["id"]])
    return {a: (totals.get(a, 0), pages[a]) for a in account_ids}


def _placeholders(dialect: str) -> Callable[[int], str]:
    if dialect == "postgres":
        return lambda n: f"${n}"
    return lambda n: "?"
