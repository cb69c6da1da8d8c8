"""The entity types (Relay nodes) and how each loads its neighbours through DataLoaders."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, ClassVar, Self

import strawberry
from strawberry import relay
from strawberry.types import Info
from tortoise.models import Model

from models import Account as AccountModel
from models import AccountEmail as AccountEmailModel
from models import Contact as ContactModel
from models import EmailAddress as EmailAddressModel
from models import Firm as FirmModel
from models import StaffMember as StaffMemberModel
from schema.enums import AccountType, StaffRole


class ScopedNode(relay.Node):
    """A node read through the viewer's firm scope: other firms' ids resolve to null."""

    model: ClassVar[type[Model]]

    @classmethod
    def from_model(cls, row: Any) -> Self:
        raise NotImplementedError

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        if info.context.staff is None:
            return [None for _ in node_ids]
        loader = info.context.loaders.by_id(cls.model)
        rows = await loader.load_many([int(pk) for pk in node_ids])
        return [cls.from_model(row) if row is not None else None for row in rows]


@strawberry.type(description="The firm: the tenant everything else belongs to.")
class Firm(ScopedNode):
    model = FirmModel
    id: relay.NodeID[int]
    name: str
    slug: str

    @classmethod
    def from_model(cls, row: FirmModel) -> Firm:
        return cls(id=row.pk, name=row.name, slug=row.slug)

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Firm | None]:
        staff = info.context.staff
        firm = await FirmModel.get_or_none(pk=staff.firm_id) if staff else None
        return [cls.from_model(firm) if firm and str(firm.pk) == i else None for i in node_ids]


@strawberry.type(description="A person of the firm who signs in to work on its clients.")
class StaffMember(ScopedNode):
    model = StaffMemberModel
    id: relay.NodeID[int]
    email: str
    name: str
    role: StaffRole
    can_manage_accounts: bool = strawberry.field(
        description="May add users to accounts and flip toggles (owners and admins always may)."
    )
    can_use_inbox: bool = strawberry.field(
        description="Sees synced mail and may reply (always for owners and admins)."
    )
    active: bool

    @classmethod
    def from_model(cls, row: StaffMemberModel) -> StaffMember:
        return cls(
            id=row.pk,
            email=row.email,
            name=row.name,
            role=row.role,
            can_manage_accounts=row.manages_accounts,
            can_use_inbox=row.uses_inbox,
            active=row.active,
        )


@strawberry.type(description="A client's portal sign-in (created when an invitation is accepted).")
class PortalUser(relay.Node):
    id: relay.NodeID[int]
    email: str
    activated_at: datetime | None

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[PortalUser | None]:
        return [None for _ in node_ids]


Viewer = Annotated[StaffMember | PortalUser, strawberry.union("Viewer")]


@strawberry.type(
    description="A client entity the firm serves: an individual, a family or a company."
)
class Account(ScopedNode):
    model = AccountModel
    id: relay.NodeID[int]
    name: str
    type: AccountType
    auto_save_attachments: bool

    @classmethod
    def from_model(cls, row: AccountModel) -> Account:
        return cls(
            id=row.pk, name=row.name, type=row.type, auto_save_attachments=row.auto_save_attachments
        )

    @strawberry.field(description="The contacts linked to this account.")
    async def contacts(self, info: Info) -> list[Contact]:
        rows = await info.context.loaders.contacts_by_account.load(self.id)
        return [Contact.from_model(row) for row in rows]

    @strawberry.field(
        description="Every address of every linked contact, with this account's toggles."
    )
    async def emails(self, info: Info) -> list[AccountEmail]:
        rows = await info.context.loaders.account_emails_by_account.load(self.id)
        return [AccountEmail.from_model(row) for row in rows]


@strawberry.type(description="A person; may be linked to several accounts.")
class Contact(ScopedNode):
    model = ContactModel
    id: relay.NodeID[int]
    first_name: str
    last_name: str

    @classmethod
    def from_model(cls, row: ContactModel) -> Contact:
        return cls(id=row.pk, first_name=row.first_name, last_name=row.last_name)

    @strawberry.field(description="The contact's addresses, the default field first.")
    async def email_addresses(self, info: Info) -> list[EmailAddress]:
        rows = await info.context.loaders.emails_by_contact.load(self.id)
        return [EmailAddress.from_model(row) for row in rows]

    @strawberry.field(description="The accounts this contact is linked to.")
    async def accounts(self, info: Info) -> list[Account]:
        rows = await info.context.loaders.accounts_by_contact.load(self.id)
        return [Account.from_model(row) for row in rows]


@strawberry.type(description="One email address of a contact.")
class EmailAddress(ScopedNode):
    model = EmailAddressModel
    id: relay.NodeID[int]
    address: str = strawberry.field(description="As typed; compared case-insensitively.")
    label: str = strawberry.field(
        description='"Email" for the default field, else the custom email field\'s name.'
    )
    contact_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, row: EmailAddressModel) -> EmailAddress:
        return cls(id=row.pk, address=row.address, label=row.label, contact_id=row.contact_id)

    @strawberry.field
    async def contact(self, info: Info) -> Contact:
        row = await info.context.loaders.by_id(ContactModel).load(self.contact_id)
        return Contact.from_model(row)


@strawberry.type(
    description="One email address as it stands in one account, with that account's three toggles."
)
class AccountEmail(ScopedNode):
    model = AccountEmailModel
    id: relay.NodeID[int]
    login: bool = strawberry.field(
        description="LOGIN: the address's owner may enter this account's portal."
    )
    notify: bool = strawberry.field(
        description="NOTIFY: the address receives the firm's mail for this account."
    )
    email_sync: bool = strawberry.field(
        description="EMAIL SYNC: mail with this address shows in the shared inbox."
    )
    email_address: EmailAddress
    account_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, row: AccountEmailModel) -> AccountEmail:
        return cls(
            id=row.pk,
            login=row.login,
            notify=row.notify,
            email_sync=row.email_sync,
            email_address=EmailAddress.from_model(row.email_address),
            account_id=row.account_id,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[AccountEmail | None]:
        if info.context.staff is None:
            return [None for _ in node_ids]
        ids = [int(pk) for pk in node_ids]
        rows = (
            await info.context.scope.query(AccountEmailModel)
            .filter(pk__in=ids)
            .select_related("email_address")
        )
        found = {row.pk: row for row in rows}
        return [cls.from_model(found[i]) if i in found else None for i in ids]

    @strawberry.field
    async def account(self, info: Info) -> Account:
        row = await info.context.loaders.by_id(AccountModel).load(self.account_id)
        return Account.from_model(row)


NODE_TYPES: dict[str, type[relay.Node]] = {
    cls.__name__: cls
    for cls in (Firm, StaffMember, PortalUser, Account, Contact, EmailAddress, AccountEmail)
}
