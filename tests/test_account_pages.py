"""The account list as it opens (no search) is read by a hand-written statement
(services/crm/account_pages); page after page, through every cursor, with and without
archived accounts, it answers exactly what the Tortoise query (records.accounts, still used
for searches) answers: the same accounts in the same order, the same cursors and page info."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest

from models import Account as AccountModel
from schema.pagination import ACCOUNTS, Connection, paginate, paginate_rows
from schema.types import Account
from services.crm import account_pages, records
from services.shared.scope import FirmScope
from services.shared.sessions import now
from tests.support.api import Firm

COLUMNS = Account.COLUMNS
# Ties by case, accents, spaces and digits; one archived.
NAMES = ["acme", "ACME", "Acme Ltd", "Émile", "émile", "beta", "Zeta", "zeta", "10 Downing", "b"]


def shown(page: Connection[Account]) -> list[Any]:
    """Everything a page answers, each value with its type (an enum is not its string)."""
    nodes = [
        (edge.cursor, [(getattr(edge.node, c), type(getattr(edge.node, c))) for c in COLUMNS])
        for edge in page.edges
    ]
    return [nodes, asdict(page.page_info), page.total_count]


@pytest.mark.parametrize("archived", [False, True])
@pytest.mark.parametrize("size", [1, 3, 50])
async def test_the_hand_read_pages_equal_the_orms(
    acme: Firm, globex: Firm, archived: bool, size: int
) -> None:
    firm_id = acme.owner.firm_id
    for name in NAMES:
        await AccountModel.create(firm_id=firm_id, name=name, type="FAMILY")
    await AccountModel.create(firm_id=firm_id, name="Alpha", type="COMPANY", archived_at=now())
    await AccountModel.create(firm_id=globex.owner.firm_id, name="acme", type="FAMILY")
    scope = FirmScope(firm_id)

    async def fast(after: str | None) -> Connection[Account]:
        return await paginate_rows(
            lambda limit, at: account_pages.page_rows(scope, archived, limit, at),
            lambda: records.accounts(scope, None, archived).count(),
            size,
            after,
            Account.from_values,
            100,
            ACCOUNTS,
        )

    async def stock(after: str | None) -> Connection[Account]:
        query = records.accounts(scope, None, archived)
        return await paginate(
            query, size, after, Account.from_values, 100, ACCOUNTS, Account.COLUMNS
        )

    after, seen = None, 0
    while True:
        mine, theirs = await fast(after), await stock(after)
        assert shown(mine) == shown(theirs)
        seen += len(mine.edges)
        if not mine.page_info.has_next_page:
            break
        after = mine.page_info.end_cursor
    assert seen == len(NAMES) + (1 if archived else 0)
