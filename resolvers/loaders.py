"""DataLoaders, created fresh for every request (and every subscription event).

Each loader answers many keys with one query through the viewer's FirmScope.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from tortoise.models import Model

from models import (
    Account,
    AccountContact,
    AccountType,
    AuditEntry,
    DeliveryStatus,
    Document,
    HistoryImport,
    Invitation,
    MailboxSkip,
    PortalAccess,
    WebhookAttempt,
    WebhookDelivery,
)
from resolvers.batch_loader import Loader
from schema.delivery import Delivery as DeliveryNode
from schema.delivery import delivery_category
from schema.enums import DeliveryKind, InvitationStatus, NotificationCategory
from schema.messages import Attachment as AttachmentNode
from schema.types import Account as AccountNode
from schema.types import AccountEmail as AccountEmailNode
from schema.types import Contact as ContactNode
from schema.types import Document as DocumentNode
from schema.types import EmailAddress as EmailAddressNode
from schema.types import Invitation as InvitationNode
from schema.types import NotificationPreferences
from services.mail import history, message_pages, skips
from services.outbound import outbox
from services.portal import access
from services.portal.invitations import Status
from services.shared import lists, paging, sql, tokens
from services.shared.emails import DEFAULT_LABEL
from services.shared.scope import FirmScope
from services.webhooks import delivery as webhook_delivery

M = TypeVar("M", bound=Model)

# A keyset page: (parent id, continue after this position or None, page size, variant: a
# filter such as an invitation status). Answered with the parent's total and its rows past
# the position with their positions, up to size + 1 (one more: whether more follow).
PageKey = tuple[int, paging.Position | None, int, str | None]
RowsPage = tuple[int, list[tuple[Any, paging.Position]]]
# A newest-first page of an account's list: (account id, position or None, size), answered
# with the total and up to size + 1 (node, position) pairs.
NewestKey = tuple[int, paging.Position | None, int]


AttachmentKey = tuple[int, int, str]  # (attachment id, message id, sha256)


class Loaders:
    def __init__(self, scope: FirmScope) -> None:
        self.scope = scope
        self._by_id: dict[type[Model], Loader[int, Model | None]] = {}
        self.contacts_by_account = Loader(self._contacts_by_account)
        self.accounts_by_contact = Loader(self._accounts_by_contact)
        self.emails_by_contact = Loader(self._emails_by_contact)
        self.account_emails_by_account = Loader(self._account_emails_by_account)
        self.activated = Loader(self._activated)
        self.invitations_by_account = Loader(self._invitations_by_account)
        self.latest_invitation = Loader(self._latest_invitation)
        self.accesses_by_account = Loader(self._accesses_by_account)
        self.audit_by_account = Loader(self._audit_by_account)
        self.deliveries_page = Loader(self._deliveries_page)
        self.deliveries_page_without_replies = Loader(self._deliveries_page_without_replies)
        self.documents_page = Loader(self._documents_page)
        self.accounts_by_message = Loader(self._accounts_by_message)
        self.attachments_by_message = Loader(self._attachments_by_message)
        self.delivery_by_message = Loader(self._delivery_by_message)
        self.documents_by_attachment = Loader(self._documents_by_attachment)
        self.messages_page = Loader(self._messages_page)
        self.history_latest = Loader(self._history_latest)
        self.history_unfinished = Loader(self._history_unfinished)
        self.skips_by_mailbox = Loader(self._skips_by_mailbox)
        self.audit_page = Loader(self._audit_page)
        self.invitations_page = Loader(self._invitations_page)
        self.accounts_page_by_contact = Loader(self._accounts_page_by_contact)
        self.webhook_deliveries_page = Loader(self._webhook_deliveries_page)
        self.webhook_attempts = Loader(self._webhook_attempts)

    def by_id(self, model: type[M]) -> Loader[int, M | None]:
        """A loader of `model` rows by primary key (None for unknown or other firms' ids)."""
        if model not in self._by_id:

            async def load(keys: Sequence[int]) -> list[Model | None]:
                rows = await self.scope.by_ids(model, keys)
                return [rows.get(key) for key in keys]

            self._by_id[model] = Loader(load)
        return self._by_id[model]  # type: ignore[return-value]

    async def _contacts_by_account(self, keys: Sequence[int]) -> list[list[ContactNode]]:
        # Rows, not model instances: only the columns the type shows, by hand-written SQL
        # (services/shared/sql.py) as this is a page's hottest read.
        firm = self.scope.firm_id
        links = await sql.select(
            "SELECT ac.account_id, ac.contact_id, c.first_name, c.last_name"
            " FROM account_contact ac JOIN contact c ON c.id = ac.contact_id"
            f" WHERE ac.firm_id = ? AND ac.account_id IN ({sql.marks(len(keys))})"
            " AND c.firm_id = ?",
            [firm, *keys, firm],
        )
        nodes: dict[int, ContactNode] = {}
        grouped: dict[int, list[ContactNode]] = defaultdict(list)
        for account_id, contact_id, first, last in sorted(links, key=_link_person_order):
            node = nodes.get(contact_id)
            if node is None:
                node = nodes[contact_id] = ContactNode(
                    id=contact_id, first_name=first, last_name=last
                )
            grouped[account_id].append(node)
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

    async def _emails_by_contact(self, keys: Sequence[int]) -> list[list[EmailAddressNode]]:
        rows = await sql.select(
            "SELECT id, contact_id, address, label FROM email_address"
            f" WHERE firm_id = ? AND contact_id IN ({sql.marks(len(keys))})",
            [self.scope.firm_id, *keys],
        )
        grouped: dict[int, list[EmailAddressNode]] = defaultdict(list)
        # The default field ("Email") first, then the custom ones in the order added.
        for pk, contact_id, address, label in sorted(rows, key=_address_order):
            grouped[contact_id].append(
                EmailAddressNode(id=pk, address=address, label=label, contact_id=contact_id)
            )
        return [grouped[key] for key in keys]

    async def _account_emails_by_account(self, keys: Sequence[int]) -> list[list[AccountEmailNode]]:
        rows = await sql.select(
            f"SELECT {_ACCOUNT_EMAIL_COLUMNS} FROM account_email ae"
            " JOIN email_address e ON e.id = ae.email_address_id"
            f" WHERE ae.firm_id = ? AND ae.account_id IN ({sql.marks(len(keys))})"
            " ORDER BY e.contact_id, ae.email_address_id",
            [self.scope.firm_id, *keys],
        )
        grouped: dict[int, list[AccountEmailNode]] = defaultdict(list)
        preferences: dict[tuple[Any, Any], NotificationPreferences] = {}
        for row in rows:
            grouped[row[1]].append(_account_email_node(row, preferences))
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

    async def _latest_invitation(self, keys: Sequence[int]) -> list[InvitationNode | None]:
        # Rows by hand-written SQL (every account screen asks): only the columns the type
        # shows (and revoked_at).
        rows = await sql.select(
            f"SELECT account_email_id, {', '.join(_INVITATION_COLUMNS)} FROM invitation"
            f" WHERE firm_id = ? AND account_email_id IN ({sql.marks(len(keys))}) ORDER BY id",
            [self.scope.firm_id, *keys],
        )
        at = _now()
        latest = {row[0]: row for row in rows}  # later rows win
        return [_invitation_node(latest[key][1:], at) if key in latest else None for key in keys]

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

    async def _accounts_by_message(self, keys: Sequence[int]) -> list[list[AccountNode]]:
        """Each message's accounts by id (as message_pages.accounts_by_message), as rows by
        hand-written SQL: the inbox's hottest read (the statement Tortoise made)."""
        columns = ", ".join(f"a.{c}" for c in AccountNode.COLUMNS)
        links = await sql.select(
            f"SELECT ma.message_id, {columns} FROM message_account ma"
            " JOIN account a ON a.id = ma.account_id"
            f" WHERE ma.firm_id = ? AND ma.message_id IN ({sql.marks(len(keys))})"
            " ORDER BY ma.account_id",
            [self.scope.firm_id, *keys],
        )
        nodes: dict[int, AccountNode] = {}
        grouped: dict[int, list[AccountNode]] = defaultdict(list)
        for message_id, *account in links:
            node = nodes.get(account[0])
            if node is None:
                node = nodes[account[0]] = _account_node(account)
            grouped[message_id].append(node)
        return [grouped[key] for key in keys]

    async def _attachments_by_message(self, keys: Sequence[int]) -> list[list[AttachmentNode]]:
        """Each message's files in the order they came (as attachments.by_message), as rows
        by hand-written SQL."""
        rows = await sql.select(
            "SELECT id, message_id, filename, content_type, size, skipped_reason, sha256"
            f" FROM attachment WHERE firm_id = ? AND message_id IN ({sql.marks(len(keys))})"
            " ORDER BY message_id, position",
            [self.scope.firm_id, *keys],
        )
        grouped: dict[int, list[AttachmentNode]] = defaultdict(list)
        for pk, message_id, filename, content_type, size, skipped, sha256 in rows:
            grouped[message_id].append(
                AttachmentNode(
                    filename=filename,
                    content_type=content_type,
                    size=size,
                    skipped_reason=skipped,
                    row_id=pk,
                    message_id=message_id,
                    sha256=sha256,
                )
            )
        return [grouped[key] for key in keys]

    async def _delivery_by_message(self, keys: Sequence[int]) -> list[DeliveryNode | None]:
        """Each message's delivery: the outbox row of a reply written in Inbox+ (its
        thread_message points at the stored reply), as rows by hand-written SQL; None for
        mail not sent through Portico. Only replies count (as in inbox(deliveryStatus:)):
        staff alerts and digests never point at a message, and only their recipient may
        read them."""
        rows = await sql.select(
            f"SELECT {_DELIVERY_COLUMNS}, thread_message_id FROM outbound_email"
            f" WHERE firm_id = ? AND thread_message_id IN ({sql.marks(len(keys))})"
            " AND kind = ? ORDER BY id",
            [self.scope.firm_id, *keys, outbox.REPLY_KIND],
        )
        # One row per reply; were there more, the newest (the last by id) would tell.
        found = {row[-1]: _delivery_node(row[:-1]) for row in rows}
        return [found.get(key) for key in keys]

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

    async def _skips_by_mailbox(self, keys: Sequence[int]) -> list[list[MailboxSkip]]:
        rows = await skips.of_mailboxes(self.scope, keys)
        return [rows[key] for key in keys]

    async def _messages_page(
        self, keys: Sequence[message_pages.PageKey]
    ) -> list[message_pages.Page]:
        return await message_pages.account_pages(self.scope, keys)

    async def _documents_by_attachment(
        self, keys: Sequence[AttachmentKey]
    ) -> list[DocumentNode | None]:
        """For each kept attachment, the document holding its content in an account of its
        message: the one saved from it when there is one, else the oldest (the rule of
        attachments.documents_by_attachment, its two statements), read as rows."""
        firm = self.scope.firm_id
        messages = sorted({key[1] for key in keys})
        links = await sql.select(
            "SELECT message_id, account_id FROM message_account"
            f" WHERE firm_id = ? AND message_id IN ({sql.marks(len(messages))})",
            [firm, *messages],
        )
        accounts_of: dict[int, set[int]] = defaultdict(set)
        for message_id, account_id in links:
            accounts_of[message_id].add(account_id)
        if not accounts_of:
            return [None for _ in keys]
        accounts = sorted({a for ids in accounts_of.values() for a in ids})
        contents = sorted({key[2] for key in keys})
        rows = await sql.select(
            "SELECT id, filename, content_type, size, sha256, created_at, account_id,"
            " attachment_id FROM document"
            f" WHERE firm_id = ? AND account_id IN ({sql.marks(len(accounts))})"
            f" AND sha256 IN ({sql.marks(len(contents))}) ORDER BY id",
            [firm, *accounts, *contents],
        )
        nodes: dict[int, DocumentNode] = {}
        by_content: dict[str, list[tuple[int, int, int | None]]] = defaultdict(list)
        for row in rows:
            pk, sha256, account_id, source = row[0], row[4], row[6], row[7]
            nodes[pk] = _document_node(row)
            by_content[sha256].append((pk, account_id, source))
        found: list[DocumentNode | None] = []
        for attachment_id, message_id, sha256 in keys:
            mine = accounts_of[message_id]
            candidates = [d for d in by_content[sha256] if d[1] in mine]
            own = [d for d in candidates if d[2] == attachment_id]
            chosen = (own or candidates or [None])[0]
            found.append(None if chosen is None else nodes[chosen[0]])
        return found

    async def _deliveries_page(self, keys: Sequence[NewestKey]) -> list[RowsPage]:
        return await self._newest_pages(
            keys, outbox.delivery_listing(with_replies=True), self._delivery_nodes
        )

    async def _deliveries_page_without_replies(self, keys: Sequence[NewestKey]) -> list[RowsPage]:
        """For staff without the inbox right: replies from Inbox+ left out."""
        return await self._newest_pages(
            keys, outbox.delivery_listing(with_replies=False), self._delivery_nodes
        )

    async def _documents_page(self, keys: Sequence[NewestKey]) -> list[RowsPage]:
        return await self._newest_pages(keys, _DOCUMENTS, self._document_nodes)

    async def _newest_pages(
        self,
        keys: Sequence[NewestKey],
        listing: paging.Listing,
        load: Callable[[set[int]], Awaitable[Mapping[int, Any]]],
    ) -> list[RowsPage]:
        """Keys are (account id, position, size): newest first, up to size + 1 nodes each,
        with their positions; one ranked statement per distinct (position, size), then one
        for the rows of all pages (as paging.pages_by_account), read as nodes by `load`."""
        found: dict[NewestKey, paging.Page] = {}
        for after, size in {(k[1], k[2]) for k in keys}:
            accounts = [k[0] for k in keys if (k[1], k[2]) == (after, size)]
            pages = await paging.keyset_pages(self.scope, listing, accounts, after, size)
            found.update({(a, after, size): pages[a] for a in accounts})
        wanted = {pk for _, rows in found.values() for pk, _ in rows}
        nodes = await load(wanted) if wanted else {}
        # The position is the row's own (created_at, id), as newest_page took it from models.
        return [
            (
                found[key][0],
                [(nodes[pk], (nodes[pk].created_at, pk)) for pk, _ in found[key][1] if pk in nodes],
            )
            for key in keys
        ]

    async def _delivery_nodes(self, pks: set[int]) -> dict[int, DeliveryNode]:
        # Hand-written SQL (services/shared/sql.py): every account screen shows deliveries.
        rows = await sql.select(
            f"SELECT {_DELIVERY_COLUMNS} FROM outbound_email"
            f" WHERE firm_id = ? AND id IN ({sql.marks(len(pks))})",
            [self.scope.firm_id, *pks],
        )
        return {row[0]: _delivery_node(row) for row in rows}

    async def _document_nodes(self, pks: set[int]) -> dict[int, DocumentNode]:
        # Hand-written SQL (services/shared/sql.py): every account screen shows documents.
        rows = await sql.select(
            "SELECT id, filename, content_type, size, sha256, created_at FROM document"
            f" WHERE firm_id = ? AND id IN ({sql.marks(len(pks))})",
            [self.scope.firm_id, *pks],
        )
        return {row[0]: _document_node(row) for row in rows}

    async def _audit_page(self, keys: Sequence[PageKey]) -> list[RowsPage]:
        async def load(pks: set[int]) -> Mapping[int, AuditEntry]:
            rows = (
                await self.scope.query(AuditEntry)
                .filter(id__in=list(pks))
                .select_related("staff_member", "portal_user")
            )
            return {row.pk: row for row in rows}

        return await self._keyset(keys, lambda _: lists.AUDIT_BY_ACCOUNT, load)

    async def _invitations_page(self, keys: Sequence[PageKey]) -> list[RowsPage]:
        return await self._keyset(
            keys, lists.invitations_by_account, self._by_pks(Invitation), {"now": _now()}
        )

    async def _accounts_page_by_contact(self, keys: Sequence[PageKey]) -> list[RowsPage]:
        return await self._keyset(keys, lambda _: lists.ACCOUNTS_BY_CONTACT, self._by_pks(Account))

    async def _webhook_deliveries_page(self, keys: Sequence[PageKey]) -> list[RowsPage]:
        """An endpoint's deliveries, newest first."""
        return await self._keyset(
            keys, lambda _: _WEBHOOK_DELIVERIES, self._by_pks(WebhookDelivery)
        )

    async def _webhook_attempts(self, keys: Sequence[int]) -> list[list[WebhookAttempt]]:
        """Each delivery's newest attempts, newest first."""
        found = await webhook_delivery.attempt_logs(self.scope.firm_id, keys)
        return [found[key] for key in keys]

    def _by_pks(self, model: type[M]) -> Callable[[set[int]], Any]:
        async def load(pks: set[int]) -> Mapping[int, M]:
            return await self.scope.by_ids(model, pks)

        return load

    async def _keyset(
        self,
        keys: Sequence[PageKey],
        listing: Callable[[str | None], paging.Listing],
        load: Callable[[set[int]], Any],
        args: Mapping[str, Any] | None = None,
    ) -> list[RowsPage]:
        """One ranked statement per distinct (position, size, variant), then one for the
        rows of all pages, however many parents ask."""
        found: dict[PageKey, paging.Page] = {}
        for after, size, variant in {(k[1], k[2], k[3]) for k in keys}:
            parents = [k[0] for k in keys if (k[1], k[2], k[3]) == (after, size, variant)]
            pages = await paging.keyset_pages(
                self.scope, listing(variant), parents, after, size, args
            )
            found.update({(p, after, size, variant): pages[p] for p in parents})
        wanted = {pk for _, rows in found.values() for pk, _ in rows}
        rows = await load(wanted) if wanted else {}
        return [
            (found[key][0], [(rows[pk], pos) for pk, pos in found[key][1] if pk in rows])
            for key in keys
        ]


def _now() -> datetime:
    return datetime.now(UTC)


def _link_person_order(link: tuple[int, int, str, str]) -> tuple[str, str, int]:
    """A contact link row (account id, contact id, first name, last name) by person."""
    return (link[3].casefold(), link[2].casefold(), link[1])


def _address_order(row: tuple[int, int, str, str]) -> tuple[bool, int]:
    """An address row (id, contact id, address, label): the default field first."""
    return (row[3] != DEFAULT_LABEL, row[0])


# What Delivery shows, in _delivery_node's order.
_DELIVERY_COLUMNS = (
    "id, to_address, subject, category, kind, status, attempts, last_error, created_at, sent_at"
)


def _delivery_node(row: Sequence[Any]) -> DeliveryNode:
    """An outbound_email row (_delivery_nodes' columns) as Delivery.from_model shows it."""
    pk, to, subject, category, kind, status, attempts, last_error, created_at, sent_at = row
    return DeliveryNode(
        id=pk,
        to=to,
        subject=subject,
        category=delivery_category(category),
        kind=DeliveryKind(kind),
        status=DeliveryStatus(status),
        attempts=attempts,
        last_error=last_error,
        created_at=sql.utc(created_at),
        sent_at=sql.utc_or_none(sent_at),
    )


# Account.documents' list: as paging.pages_by_account lists the document table.
_DOCUMENTS = paging.newest_first(Document._meta.db_table)
_WEBHOOK_DELIVERIES = paging.newest_first(WebhookDelivery._meta.db_table, parent="endpoint_id")


def _document_node(row: Sequence[Any]) -> DocumentNode:
    """A document from a row starting id, filename, content_type, size, sha256, created_at."""
    pk, filename, content_type, size, sha256, created_at = row[:6]
    return DocumentNode(
        id=pk,
        filename=filename,
        content_type=content_type,
        size=size,
        sha256=sha256,
        created_at=sql.utc(created_at),
    )


def _account_node(row: Sequence[Any]) -> AccountNode:
    """An account from a row of Account.COLUMNS, as the driver gives it."""
    pk, name, type_, auto_save, archived_at = row
    return AccountNode(
        id=pk,
        name=name,
        type=AccountType(type_),
        auto_save_attachments=bool(auto_save),  # SQLite gives 0/1
        archived_at=sql.utc_or_none(archived_at),
    )


# What Invitation shows, with revoked_at for its status; _invitation_node's order.
_INVITATION_COLUMNS = (
    "id",
    "email",
    "sent_at",
    "expires_at",
    "accepted_at",
    "revoked_at",
    "account_id",
)


def _invitation_node(row: Sequence[Any], at: datetime) -> InvitationNode:
    pk, email, sent_at, expires_at, accepted_at, revoked_at, account_id = row
    sent_at, expires_at = sql.utc_or_none(sent_at), sql.utc(expires_at)
    accepted_at, revoked_at = sql.utc_or_none(accepted_at), sql.utc_or_none(revoked_at)
    # invitations.status_of on the row's times: a used link is an accepted invitation.
    status = tokens.link_status(accepted_at, revoked_at, expires_at, at)
    return InvitationNode(
        id=pk,
        email=email,
        status=InvitationStatus(Status.ACCEPTED if status == tokens.USED else status),
        sent_at=sent_at,
        expires_at=expires_at,
        accepted_at=accepted_at,
        account_id=account_id,
    )


# What AccountEmail shows, with its address; _account_email_node reads them in this order.
_ACCOUNT_EMAIL_COLUMNS = (
    "ae.id, ae.account_id, ae.login, ae.notify, ae.email_sync, ae.notify_all,"
    " ae.notify_categories, e.id, e.address, e.label, e.contact_id, e.address_normalized"
)


def _account_email_node(
    row: tuple[Any, ...], preferences: dict[tuple[Any, Any], NotificationPreferences]
) -> AccountEmailNode:
    """The row's node; `preferences` holds the batch's NotificationPreferences by their
    columns, so the rows that share settings (most of them) share one read-only object."""
    (pk, account_id, login, notify, email_sync, notify_all, categories) = row[:7]
    (address_id, address, label, contact_id, normalized) = row[7:]
    key = (notify_all, categories if isinstance(categories, str) else tuple(categories))
    shared = preferences.get(key)
    if shared is None:
        shared = preferences[key] = NotificationPreferences(
            all=bool(notify_all),
            enabled=[NotificationCategory(c) for c in sql.json_list(categories)],
        )
    return AccountEmailNode(
        id=pk,
        login=bool(login),
        notify=bool(notify),
        email_sync=bool(email_sync),
        email_address=EmailAddressNode(
            id=address_id, address=address, label=label, contact_id=contact_id
        ),
        notification_preferences=shared,
        account_id=account_id,
        address_normalized=normalized,
    )
