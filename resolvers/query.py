"""The Query root."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry import relay
from strawberry.types import Info

from models import Account as AccountModel
from models import Contact as ContactModel
from models import Firm as FirmModel
from models import StaffMember as StaffMemberModel
from schema import ids
from schema.delivery import Delivery
from schema.enums import DeliveryStatus
from schema.mail import Mailbox
from schema.mailings import Mailing
from schema.messages import Message, inbox
from schema.pagination import (
    ACCOUNTS,
    AFTER,
    CONTACTS,
    FIRST,
    STAFF_MEMBERS,
    Connection,
    asks_total,
    paginate,
    paginate_rows,
)
from schema.permissions import IsOwnerOrAdmin, IsStaff, UsesInbox
from schema.types import NODE_TYPES, Account, Contact, Firm, PortalUser, StaffMember, Viewer
from schema.webhooks import WebhookDelivery, WebhookEndpoint
from services.crm import account_pages, records

# Every type `node(id:)` resolves (Delivery and Mailbox live apart: they import schema.types).
from services.mail import mailboxes
from services.portal import client_session
from services.webhooks import endpoints as webhook_endpoints

NODES = {
    **NODE_TYPES,
    "Delivery": Delivery,
    "Mailbox": Mailbox,
    "Mailing": Mailing,
    "Message": Message,
    "WebhookDelivery": WebhookDelivery,
    "WebhookEndpoint": WebhookEndpoint,
}


@strawberry.type(description="What may be read; each field says who may read it.")
class Query:
    @strawberry.field(
        description="Any object by its global id; null when the viewer may not see it."
    )
    async def node(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="A global id.")],
    ) -> relay.Node | None:
        parsed = ids.parse(id)
        node_type = NODES.get(parsed[0]) if parsed else None
        if parsed is None or node_type is None:
            return None
        [found] = await node_type.resolve_nodes(info=info, node_ids=[str(parsed[1])])
        return found

    @strawberry.field(description="Who is signed in; null when nobody is.")
    def viewer(self, info: Info) -> Viewer | None:
        context = info.context
        if context.staff:
            return StaffMember.from_model(context.staff)
        return PortalUser.from_model(context.portal_user) if context.portal_user else None

    @strawberry.field(description="The signed-in viewer's firm.")
    async def firm(self, info: Info) -> Firm | None:
        viewer = info.context.staff or info.context.portal_user
        return Firm.from_model(await FirmModel.get(pk=viewer.firm_id)) if viewer else None

    @strawberry.field(
        description="For a signed-in client: the accounts they may switch between, by name."
    )
    async def portal_accounts(self, info: Info) -> list[Account]:
        rows = await client_session.accounts_in_order(await info.context.client_account_ids())
        return [Account.from_model(row) for row in rows]

    @strawberry.field(
        description="For a signed-in client: the account they are in; null until they choose."
    )
    async def current_account(self, info: Info) -> Account | None:
        current = await info.context.current_account_id()
        return Account.from_model(await AccountModel.get(pk=current)) if current else None

    @strawberry.field(
        description="For a signed-in client: the notice naming the account they are in; null "
        "once dismissed (until the next sign-in) or while no account is chosen."
    )
    async def account_notice(self, info: Info) -> str | None:
        current = await info.context.current_account_id()
        account = await AccountModel.get(pk=current) if current else None
        return client_session.notice(account, info.context.session.notice_dismissed)

    @strawberry.field(
        description="The firm's staff.",
        permission_classes=[IsStaff],
        deprecation_reason="Unbounded: use staffMembersPage.",
    )
    async def staff_members(self, info: Info) -> list[StaffMember]:
        rows = await info.context.scope.query(StaffMemberModel).order_by("name", "id")
        return [StaffMember.from_model(row) for row in rows]

    @strawberry.field(
        description="The firm's staff by name, a page at a time.", permission_classes=[IsStaff]
    )
    async def staff_members_page(
        self,
        info: Info,
        first: Annotated[int | None, strawberry.argument(description=FIRST)] = 20,
        after: Annotated[str | None, strawberry.argument(description=AFTER)] = None,
    ) -> Connection[StaffMember]:
        query = info.context.scope.query(StaffMemberModel)
        max_page = info.context.settings.max_page_size
        return await paginate(
            query,
            first,
            after,
            StaffMember.from_model,
            max_page,
            STAFF_MEMBERS,
            total=asks_total(info),
        )

    @strawberry.field(description="The firm's accounts by name.", permission_classes=[IsStaff])
    async def accounts(
        self,
        info: Info,
        first: Annotated[int | None, strawberry.argument(description=FIRST)] = 20,
        after: Annotated[str | None, strawberry.argument(description=AFTER)] = None,
        search: Annotated[
            str | None,
            strawberry.argument(description="Only accounts whose name contains this text."),
        ] = None,
        include_archived: Annotated[
            bool | None,
            strawberry.argument(description="Archived accounts too (left out by default)."),
        ] = False,
    ) -> Connection[Account]:
        scope, archived = info.context.scope, bool(include_archived)
        max_page = info.context.settings.max_page_size
        if not records.search_term(search):  # the list as it opens: read by hand
            return await paginate_rows(
                lambda limit, position: account_pages.page_rows(scope, archived, limit, position),
                lambda: records.accounts(scope, None, archived).count(),
                first,
                after,
                Account.from_values,
                max_page,
                ACCOUNTS,
                total=asks_total(info),
            )
        return await paginate(
            records.accounts(scope, search, archived),
            first,
            after,
            Account.from_values,
            max_page,
            ACCOUNTS,
            Account.COLUMNS,
            total=asks_total(info),
        )

    @strawberry.field(
        description="One account; null when not found (for clients: unless they may enter it)."
    )
    async def account(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The account's id.")],
    ) -> Account | None:
        pk = ids.decode(id, "Account")
        if info.context.staff is None:
            info.context.require_client()
            [found] = await Account.resolve_client_nodes(info, [str(pk or 0)])
            return found
        row = await info.context.scope.find(AccountModel, pk)
        return Account.from_model(row) if row else None

    @strawberry.field(
        description="The firm's contacts by last name; search matches names and addresses.",
        permission_classes=[IsStaff],
    )
    async def contacts(
        self,
        info: Info,
        first: Annotated[int | None, strawberry.argument(description=FIRST)] = 20,
        after: Annotated[str | None, strawberry.argument(description=AFTER)] = None,
        search: Annotated[
            str | None,
            strawberry.argument(
                description="Only contacts whose name or an address contains this text."
            ),
        ] = None,
    ) -> Connection[Contact]:
        query = records.contacts(info.context.scope, search)
        max_page = info.context.settings.max_page_size
        return await paginate(
            query,
            first,
            after,
            Contact.from_values,
            max_page,
            CONTACTS,
            Contact.COLUMNS,
            total=asks_total(info),
        )

    @strawberry.field(description="One contact; null when not found.", permission_classes=[IsStaff])
    async def contact(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The contact's id.")],
    ) -> Contact | None:
        row = await info.context.scope.find(ContactModel, ids.decode(id, "Contact"))
        return Contact.from_model(row) if row else None

    @strawberry.field(
        description="Inbox+: synced mail of all accounts, newest first; cursors stay stable "
        "while new mail arrives (staff with the inbox right).",
        permission_classes=[UsesInbox],
    )
    async def inbox(
        self,
        info: Info,
        first: Annotated[int | None, strawberry.argument(description=FIRST)] = 20,
        after: Annotated[str | None, strawberry.argument(description=AFTER)] = None,
        delivery_status: Annotated[
            DeliveryStatus | None,
            strawberry.argument(
                description="Only replies written in Inbox+ whose delivery is in this status "
                "(FAILED: the replies that could not be sent); CANCELLED is refused, as a reply "
                "is never withdrawn. Left out: all mail."
            ),
        ] = None,
    ) -> Connection[Message]:
        return await inbox(info, first, after, delivery_status)

    @strawberry.field(
        description="The firm's connected mailboxes by address, with their sync status "
        "(staff with the inbox right).",
        permission_classes=[UsesInbox],
    )
    async def mailboxes(self, info: Info) -> list[Mailbox]:
        rows = await mailboxes.mailboxes(info.context.scope)
        return [Mailbox.from_model(row) for row in rows]

    @strawberry.field(
        description="The firm's webhook endpoints, oldest first (owners and admins).",
        permission_classes=[IsOwnerOrAdmin],
    )
    async def webhook_endpoints(self, info: Info) -> list[WebhookEndpoint]:
        rows = await webhook_endpoints.endpoints(info.context.scope)
        return [WebhookEndpoint.from_model(row) for row in rows]
