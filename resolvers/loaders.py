"""DataLoaders, created fresh for every request (and every subscription event).

Each loader answers many keys with one query through the viewer's FirmScope.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TypeVar

from strawberry.dataloader import DataLoader
from tortoise.models import Model

from models import Account, AccountContact, AccountEmail, Contact, EmailAddress
from services.scope import FirmScope

M = TypeVar("M", bound=Model)


class Loaders:
    def __init__(self, scope: FirmScope) -> None:
        self.scope = scope
        self._by_id: dict[type[Model], DataLoader[int, Model | None]] = {}
        self.contacts_by_account = DataLoader(self._contacts_by_account)
        self.accounts_by_contact = DataLoader(self._accounts_by_contact)
        self.emails_by_contact = DataLoader(self._emails_by_contact)
        self.account_emails_by_account = DataLoader(self._account_emails_by_account)

    def by_id(self, model: type[M]) -> DataLoader[int, M | None]:
        """A loader of `model` rows by primary key (None for unknown or other firms' ids)."""
        if model not in self._by_id:

            async def load(keys: Sequence[int]) -> list[Model | None]:
                rows = await self.scope.by_ids(model, keys)
                return [rows.get(key) for key in keys]

            self._by_id[model] = DataLoader(load)
        return self._by_id[model]  # type: ignore[return-value]

    async def _contacts_by_account(self, keys: Sequence[int]) -> list[list[Contact]]:
        links = (
            await self.scope.query(AccountContact)
            .filter(account_id__in=keys)
            .select_related("contact")
            .order_by("contact__last_name", "contact__first_name", "contact_id")
        )
        grouped: dict[int, list[Contact]] = defaultdict(list)
        for link in links:
            grouped[link.account_id].append(link.contact)
        return [grouped[key] for key in keys]

    async def _accounts_by_contact(self, keys: Sequence[int]) -> list[list[Account]]:
        links = (
            await self.scope.query(AccountContact)
            .filter(contact_id__in=keys)
            .select_related("account")
            .order_by("account__name", "account_id")
        )
        grouped: dict[int, list[Account]] = defaultdict(list)
        for link in links:
            grouped[link.contact_id].append(link.account)
        return [grouped[key] for key in keys]

    async def _emails_by_contact(self, keys: Sequence[int]) -> list[list[EmailAddress]]:
        rows = await self.scope.query(EmailAddress).filter(contact_id__in=keys).order_by("id")
        grouped: dict[int, list[EmailAddress]] = defaultdict(list)
        for row in rows:
            grouped[row.contact_id].append(row)
        return [grouped[key] for key in keys]

    async def _account_emails_by_account(self, keys: Sequence[int]) -> list[list[AccountEmail]]:
        rows = (
            await self.scope.query(AccountEmail)
            .filter(account_id__in=keys)
            .select_related("email_address")
            .order_by("email_address__contact_id", "email_address_id")
        )
        grouped: dict[int, list[AccountEmail]] = defaultdict(list)
        for row in rows:
            grouped[row.account_id].append(row)
        return [grouped[key] for key in keys]
