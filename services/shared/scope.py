"""Tenancy in one place: every tenant query of the API goes through a FirmScope.

A scope is made only from an authenticated viewer (or, for the CLI, an explicit firm), so
code that holds no scope cannot read a tenant's rows, and code that holds one reads only
its own firm's. Every tenant table carries firm_id for this reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from tortoise.models import Model
from tortoise.queryset import QuerySet

from models import Firm
from services.shared.errors import ErrorCode, input_error

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class FirmScope:
    firm_id: int

    def query(self, model: type[M]) -> QuerySet[M]:
        return model.filter(firm_id=self.firm_id)

    async def find(self, model: type[M], pk: int | None) -> M | None:
        if pk is None:
            return None
        return await self.query(model).get_or_none(pk=pk)

    async def get(self, model: type[M], pk: int | None, *field: str) -> M:
        """The row, or a NOT_FOUND input error naming `field` (also for another firm's ids)."""
        row = await self.find(model, pk)
        if row is None:
            raise input_error(ErrorCode.NOT_FOUND, f"No such {model.__name__}.", *field)
        return row

    async def by_ids(self, model: type[M], pks: Iterable[int]) -> dict[int, M]:
        rows = await self.query(model).filter(pk__in=list(pks))
        return {row.pk: row for row in rows}

    @classmethod
    async def for_slug(cls, slug: str) -> FirmScope:
        firm = await Firm.get_or_none(slug=slug.strip().lower())
        if firm is None:
            raise input_error(ErrorCode.NOT_FOUND, f"No firm with slug '{slug}'.", "firm")
        return cls(firm.id)
