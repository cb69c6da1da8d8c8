"""Reading the outbox per account: one page of several accounts' mail in one statement."""

from __future__ import annotations

from collections.abc import Sequence

from tortoise import Tortoise

from models import OutboundEmail
from services.scope import FirmScope


async def pages_by_account(
    scope: FirmScope, account_ids: Sequence[int], start: int, size: int
) -> dict[int, tuple[int, list[OutboundEmail]]]:
    """Each account's total and its rows [start, start + size), newest first.

    A window function ranks every account's mail at once; rank 1 always comes back so
    that an account whose page is empty still reports its total.
    """
    result: dict[int, tuple[int, list[OutboundEmail]]] = {a: (0, []) for a in account_ids}
    if not account_ids:
        return result
    conn = Tortoise.get_connection("default")
    mark = _placeholders(conn.capabilities.dialect)
    ids = ", ".join(mark(i + 2) for i in range(len(account_ids)))
    lo, hi = mark(len(account_ids) + 2), mark(len(account_ids) + 3)
    sql = (
        "SELECT id, account_id, rn, total FROM ("
        " SELECT id, account_id,"
        "  ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY created_at DESC, id DESC) AS rn,"
        "  COUNT(*) OVER (PARTITION BY account_id) AS total"
        f" FROM outbound_email WHERE firm_id = {mark(1)} AND account_id IN ({ids})"
        f") ranked WHERE rn = 1 OR (rn > {lo} AND rn <= {hi})"
    )
    _, ranked = await conn.execute_query(sql, [scope.firm_id, *account_ids, start, start + size])
    wanted = [row for row in ranked if start < row["rn"] <= start + size]
    rows = {
        r.pk: r for r in await scope.query(OutboundEmail).filter(id__in=[r["id"] for r in wanted])
    }
    totals = {row["account_id"]: row["total"] for row in ranked}
    pages: dict[int, list[OutboundEmail]] = {a: [] for a in account_ids}
    for row in sorted(wanted, key=lambda r: r["rn"]):
        pages[row["account_id"]].append(rows[row["id"]])
    return {a: (totals.get(a, 0), pages[a]) for a in account_ids}


def _placeholders(dialect: str):
    if dialect == "postgres":
        return lambda n: f"${n}"
    return lambda n: "?"
