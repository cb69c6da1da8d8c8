"""The Query root."""

from __future__ import annotations

import strawberry
from strawberry import relay
from strawberry.types import Info

from models import Account as AccountModel
from models import Contact as ContactModel
from models import Firm as FirmModel
from models import StaffMember as StaffMemberModel
from resolvers.permissions import IsStaff
from schema import ids
from schema.pagination import Connection, paginate
from schema.types import NODE_TYPES, Account, Contact, Firm, StaffMember, Viewer
from services import crm


@strawberry.type
class Query:
    @strawberry.field(
        description="Any object by its global id; null when the viewer may not see it."
    )
    async def node(self, info: Info, id: strawberry.ID) -> relay.Node | None:
        parsed = ids.parse(id)
        node_type = NODE_TYPES.get(parsed[0]) if parsed else None
        if parsed is None or node_type is None:
            return None
        [found] = await node_type.resolve_nodes(info=info, node_ids=[str(parsed[1])])
        return found

    @strawberry.field(description="Who is signed in; null when nobody is.")
    def viewer(self, info: Info) -> Viewer | None:
        staff = info.context.staff
        return StaffMember.from_model(staff) if staff else None

    @strawberry.field(description="The signed-in viewer's firm.")
    async def firm(self, info: Info) -> Firm | None:
        staff = info.context.staff
        return Firm.from_model(await FirmModel.get(pk=staff.firm_id)) if staff else None

    @strawberry.field(description="The firm's staff.", permission_classes=[IsStaff])
    async def staff_members(self, info: Info) -> list[StaffMember]:
        rows = await info.context.scope.query(StaffMemberModel).order_by("name", "id")
        return [StaffMember.from_model(row) for row in rows]

    @strawberry.field(description="The firm's accounts by name.", permission_classes=[IsStaff])
    async def accounts(
        self,
        info: Info,
        first: int | None = 20,
        after: str | None = None,
        search: str | None = None,
    ) -> Connection[Account]:
        query = crm.accounts(info.context.scope, search)
        max_page = info.context.settings.max_page_size
        return await paginate(
            query, first if first is not None else 20, after, Account.from_model, max_page
        )

    @strawberry.field(description="One account; null when not found.", permission_classes=[IsStaff])
    async def account(self, info: Info, id: strawberry.ID) -> Account | None:
        row = await info.context.scope.find(AccountModel, ids.decode(id, "Account"))
        return Account.from_model(row) if row else None

    @strawberry.field(
        description="The firm's contacts by last name; search matches names and addresses.",
        permission_classes=[IsStaff],
    )
    async def contacts(
        self,
        info: Info,
        first: int | None = 20,
        after: str | None = None,
        search: str | None = None,
    ) -> Connection[Contact]:
        query = crm.contacts(info.context.scope, search)
        max_page = info.context.settings.max_page_size
        return await paginate(
            query, first if first is not None else 20, after, Contact.from_model, max_page
        )

    @strawberry.field(description="One contact; null when not found.", permission_classes=[IsStaff])
    async def contact(self, info: Info, id: strawberry.ID) -> Contact | None:
        row = await info.context.scope.find(ContactModel, ids.decode(id, "Contact"))
        return Contact.from_model(row) if row else None
