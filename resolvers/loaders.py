"""DataLoaders, created fresh for every request (and every subscription event).

Each loader answers many keys with one query through the viewer's FirmScope.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TypeVar

from strawberry.dataloader import DataLoader
from tortoise.models import Model

from models import (
    Account,
    AccountContact,
    AccountEmail,
    Attachment,
    AuditEntry,
    Contact,
    Document,
    EmailAddress,
    HistoryImport,
    Invitation,
    PortalAccess,
)
from services.mail import attachments, history, message_pages
from services.outbound import outbox
from services.portal import access
from services.shared import paging
from services.shared.emails import DEFAULT_LABEL
from services.shared.scope import FirmScope

M = TypeVar("M", bound=Model)


class Loaders:
    def __init__(self, scope: FirmScope) -> None:
        self.scope = scope
        self._by_id: dict[type[Model], DataLoader[int, Model | None]] = {}
        self.contacts_by_account = DataLoader(self._contacts_by_account)
        self.accounts_by_contact = DataLoader(self._accounts_by_contact)
        self.emails_by_contact = DataLoader(self._emails_by_contact)
        self.account_emails_by_account = DataLoader(self._account_emails_by_account)
        self.activated = DataLoader(self._activated)
        self.invitations_by_account = DataLoader(self._invitations_by_account)
        self.latest_invitation = DataLoader(self._latest_invitation)
        self.accesses_by_account = DataLoader(self._accesses_by_account)
        self.audit_by_account = DataLoader(self._audit_by_account)
        self.deliveries_page = DataLoader(self._deliveries_page)
        self.deliveries_page_without_replies = DataLoader(self._deliveries_page_without_replies)
        self.documents_page = DataLoader(self._documents_page)
        self.accounts_by_message = DataLoader(self._accounts_by_message)
        self.attachments_by_message = DataLoader(self._attachments_by_message)
        self.documents_by_attachment = DataLoader(self._documents_by_attachment)
        self.messages_page = DataLoader(self._messages_page)
        self.history_latest = DataLoader(self._history_latest)
        self.history_unfinished = DataLoader(self._history_unfinished)

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
            .filter(account_id__in=keys, contact__firm_id=self.scope.firm_id)
            .select_related("contact")
        )
        grouped: dict[int, list[Contact]] = defaultdict(list)
        for link in sorted(links, key=lambda k: _person_order(k.contact)):
            grouped[link.account_id].append(link.contact)
        return [grouped[key] for key in keys]

    async def _accounts_by_contact(self, keys: Sequence[int]) -> list[list[Account]]:
        links = (
            await self.scope.query(AccountContact)
            .filter(contact_id__in=keys, account__firm_id=self.scope.firm_id)
            .select_related("account")
        )
        grouped: dict[int, list[Account]] = defaultdict(list)
        for link in sorted(links, key=lambda k: (k.account.name.casefold(), k.account_id)):
            grouped[link.contact_id].append(link.account)
        return [grouped[key] for key in keys]

    async def _emails_by_contact(self, keys: Sequence[int]) -> list[list[EmailAddress]]:
        rows = await self.scope.query(EmailAddress).filter(contact_id__in=keys)
        grouped: dict[int, list[EmailAddress]] = defaultdict(list)
        # The default field ("Email") first, then the custom ones in the order added.
        for row in sorted(rows, key=lambda r: (r.label != DEFAULT_LABEL, r.id)):
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

    async def _activated(self, keys: Sequence[tuple[int, str]]) -> list[bool]:
        active = await access.activated_pairs(self.scope, keys)
        return [key in active for key in keys]

    async def _invitations_by_account(self, keys: Sequence[int]) -> list[list[Invitation]]:
        rows = await self.scope.query(Invitation).filter(account_id__in=keys).order_by("-id")
        grouped: dict[int, list[Invitation]] = defaultdict(list)
        for row in rows:
            grouped[row.account_id].append(row)
        return [grouped[key] for key in keys]

    async def _latest_invitation(self, keys: Sequence[int]) -> list[Invitation | None]:
        rows = await self.scope.query(Invitation).filter(account_email_id__in=keys).order_by("id")
        latest = {row.account_email_id: row for row in rows}  # later rows win
        return [latest.get(key) for key in keys]

    async def _accesses_by_account(
        self, keys: Sequence[int]
    ) -> list[list[tuple[PortalAccess, bool]]]:
        found = await access.accesses_by_account(self.scope, keys)
        return [found[key] for key in keys]

    async def _audit_by_account(self, keys: Sequence[int]) -> list[list[AuditEntry]]:
        rows = (
            await self.scope.query(AuditEntry)
            .filter(account_id__in=keys)
            .select_related("staff_member", "portal_user")
            .order_by("-id")
        )
        grouped: dict[int, list[AuditEntry]] = defaultdict(list)
        for row in rows:
            grouped[row.account_id].append(row)
        return [grouped[key] for key in keys]

    async def _accounts_by_message(self, keys: Sequence[int]) -> list[list[Account]]:
        found = await message_pages.accounts_by_message(self.scope, keys)
        return [found[key] for key in keys]

    async def _attachments_by_message(self, keys: Sequence[int]) -> list[list[Attachment]]:
        found = await attachments.by_message(self.scope, keys)
        return [found[key] for key in keys]

    async def _history_latest(self, keys: Sequence[tuple[int, int]]) -> list[list[HistoryImport]]:
        """Keys (mailbox id, first): one query per distinct `first`."""
        found: dict[tuple[int, int], list[HistoryImport]] = {}
        for first in {first for _, first in keys}:
            ids = [mailbox_id for mailbox_id, size in keys if size == first]
            rows = await history.latest_by_mailbox(self.scope, ids, first)
            found.update({(mailbox_id, first): rows[mailbox_id] for mailbox_id in ids})
        return [found[key] for key in keys]

    async def _history_unfinished(self, keys: Sequence[int]) -> list[int]:
        counts = await history.unfinished_by_mailbox(self.scope, keys)
        return [counts[key] for key in keys]

    async def _messages_page(
        self, keys: Sequence[message_pages.PageKey]
    ) -> list[message_pages.Page]:
        return await message_pages.account_pages(self.scope, keys)

    async def _documents_by_attachment(
        self, keys: Sequence[attachments.AttachmentKey]
    ) -> list[Document | None]:
        found = await attachments.documents_by_attachment(self.scope, keys)
        return [found[key[0]] for key in keys]

    async def _deliveries_page(
        self, keys: Sequence[outbox.DeliveryPageKey]
    ) -> list[outbox.DeliveryPage]:
        return await outbox.delivery_pages(self.scope, keys, with_replies=True)

    async def _deliveries_page_without_replies(
        self, keys: Sequence[outbox.DeliveryPageKey]
    ) -> list[outbox.DeliveryPage]:
        """For staff without the inbox right: replies from Inbox+ left out."""
        return await outbox.delivery_pages(self.scope, keys, with_replies=False)

    async def _documents_page(
        self, keys: Sequence[tuple[int, int, int]]
    ) -> list[tuple[int, list[Document]]]:
        return await self._pages(Document, keys)

    async def _pages(
        self, model: type[M], keys: Sequence[tuple[int, int, int]]
    ) -> list[tuple[int, list[M]]]:
        """Keys are (account id, offset, size); one statement per distinct window."""
        found: dict[tuple[int, int, int], tuple[int, list[M]]] = {}
        for start, size in {(k[1], k[2]) for k in keys}:
            accounts = [k[0] for k in keys if (k[1], k[2]) == (start, size)]
            found_pages = await paging.pages_by_account(self.scope, model, accounts, start, size)
            found.update({(a, start, size): found_pages[a] for a in accounts})
        return [found[key] for key in keys]


def _person_order(contact: Contact) -> tuple[str, str, int]:
    return (contact.last_name.casefold(), contact.first_name.casefold(), contact.id)
