"""The entity types (Relay nodes) and how each loads its neighbours through DataLoaders."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Self

import strawberry
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info
from tortoise.models import Model

from models import Account as AccountModel
from models import AccountEmail as AccountEmailModel
from models import AuditEntry as AuditEntryModel
from models import Contact as ContactModel
from models import Document as DocumentModel
from models import EmailAddress as EmailAddressModel
from models import Firm as FirmModel
from models import Invitation as InvitationModel
from models import PortalAccess as PortalAccessModel
from models import PortalUser as PortalUserModel
from models import StaffMember as StaffMemberModel
from schema import ids
from schema.batched import batched_field, loaded_field
from schema.enums import (
    AccountType,
    AuditAction,
    InboxNotification,
    InvitationStatus,
    NotificationCategory,
    PortalStatus,
    SecondFactorRequirement,
    StaffRole,
)
from schema.pagination import (
    AFTER,
    AUDIT_ENTRIES,
    CONTACT_ACCOUNTS,
    DOCUMENTS,
    FIRST,
    INVITATIONS,
    Connection,
    page_of,
    size_of,
)
from schema.permissions import IsStaff, UsesInbox
from services.portal import access, invitations

if TYPE_CHECKING:
    from schema.delivery import Delivery
    from schema.messages import Message

staff = [IsStaff]
inbox_users = [UsesInbox]


class ScopedNode(relay.Node):
    """A node read through the viewer's firm scope: other firms' ids resolve to null."""

    model: ClassVar[type[Model]]

    @classmethod
    def from_model(cls, row: Any) -> Self:
        raise NotImplementedError

    @classmethod
    async def resolve_client_nodes(cls, info: Info, node_ids: Iterable[str]) -> list[Self | None]:
        """What a client (or nobody) may see by id: nothing, unless a type says otherwise."""
        return [None for _ in node_ids]

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        if info.context.staff is None:
            return await cls.resolve_client_nodes(info, node_ids)
        loader = info.context.loaders.by_id(cls.model)
        rows = await loader.load_many([int(pk) for pk in node_ids])
        return [cls.from_model(row) if row is not None else None for row in rows]


@strawberry.type(description="The firm: the tenant everything else belongs to.")
class Firm(ScopedNode):
    model = FirmModel
    id: relay.NodeID[int]
    name: str = strawberry.field(description="The firm's name, as clients see it in mail.")
    slug: str = strawberry.field(description="The firm's short name, given at staff sign-in.")
    copy_address: str | None = strawberry.field(
        description="Receives a copy of every email Portico sends to clients (staff only).",
        permission_classes=staff,
    )
    owners_see_all_mail: bool = strawberry.field(
        description="Owners read the private threads of personal mailboxes too (staff only; "
        "off by default: owners follow the same rule as everyone).",
        permission_classes=staff,
    )
    client_second_factor: SecondFactorRequirement = strawberry.field(
        description="What clients need beyond their password (staff only).",
        permission_classes=staff,
    )
    staff_second_factor: SecondFactorRequirement = strawberry.field(
        description="What staff need beyond their password; a member's own setting may ask "
        "more (staff only).",
        permission_classes=staff,
    )
    second_factor_from: datetime | None = strawberry.field(
        description="The two requirements hold from this moment on; null: at once (staff only).",
        permission_classes=staff,
    )

    @classmethod
    def from_model(cls, row: FirmModel) -> Firm:
        return cls(
            id=row.pk,
            name=row.name,
            slug=row.slug,
            copy_address=row.copy_address,
            owners_see_all_mail=row.owners_see_all_mail,
            client_second_factor=row.client_second_factor,
            staff_second_factor=row.staff_second_factor,
            second_factor_from=row.second_factor_from,
        )

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
    email: str = strawberry.field(description="Their sign-in address.")
    name: str = strawberry.field(description="Their name, as colleagues see it.")
    role: StaffRole = strawberry.field(description="Their role in the firm.")
    can_manage_accounts: bool = strawberry.field(
        description="May add users to accounts and flip toggles (owners and admins always may)."
    )
    can_use_inbox: bool = strawberry.field(
        description="Sees synced mail and may reply (always for owners and admins)."
    )
    active: bool = strawberry.field(description="False once deactivated: they cannot sign in.")
    inbox_notification: InboxNotification = strawberry.field(
        description="What this member is emailed about new mail from clients (OFF by default)."
    )
    second_factor: SecondFactorRequirement = strawberry.field(
        description="This member's own second-factor requirement; the stricter of it and the "
        "firm's staffSecondFactor holds (NONE by default)."
    )

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
            inbox_notification=row.inbox_notification,
            second_factor=row.second_factor,
        )


@strawberry.type(description="A client's portal sign-in (created when an invitation is accepted).")
class PortalUser(ScopedNode):
    model = PortalUserModel
    id: relay.NodeID[int]
    email: str = strawberry.field(description="The address they sign in with.")
    activated_at: datetime | None = strawberry.field(
        description="When they activated their sign-in by accepting an invitation."
    )

    @classmethod
    def from_model(cls, row: PortalUserModel) -> PortalUser:
        return cls(id=row.pk, email=row.email, activated_at=row.activated_at)


Viewer = Annotated[
    StaffMember | PortalUser,
    strawberry.union("Viewer", description="Who is signed in: a staff member or a client."),
]


@strawberry.type(
    description="A client entity the firm serves: an individual, a family or a company."
)
class Account(ScopedNode):
    model = AccountModel
    id: relay.NodeID[int]
    name: str = strawberry.field(description="The account's name.")
    type: AccountType = strawberry.field(description="The kind of client entity.")
    auto_save_attachments: bool = strawberry.field(
        description="Attachments of newly synced mail are saved into the account's documents."
    )
    archived_at: datetime | None = strawberry.field(
        description="When the account was archived: out of lists and the portal, nothing deleted."
    )

    @classmethod
    def from_model(cls, row: AccountModel) -> Account:
        return cls(
            id=row.pk,
            name=row.name,
            type=row.type,
            auto_save_attachments=row.auto_save_attachments,
            archived_at=row.archived_at,
        )

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "id",
        "name",
        "type",
        "auto_save_attachments",
        "archived_at",
    )

    @classmethod
    def from_values(cls, row: dict[str, Any]) -> Account:
        """From a dict of COLUMNS (a page read as rows, not models)."""
        return cls(
            id=row["id"],
            name=row["name"],
            type=row["type"],
            auto_save_attachments=row["auto_save_attachments"],
            archived_at=row["archived_at"],
        )

    @classmethod
    async def resolve_client_nodes(
        cls, info: Info, node_ids: Iterable[str]
    ) -> list[Account | None]:
        """A client sees the accounts they may enter now, and no other."""
        if info.context.portal_user is None:
            return [None for _ in node_ids]
        allowed = set(await info.context.client_account_ids())
        wanted = [int(i) for i in node_ids]
        rows = {row.pk: row for row in await AccountModel.filter(pk__in=allowed & set(wanted))}
        return [cls.from_model(rows[i]) if i in rows else None for i in wanted]

    contacts: list[Contact] = loaded_field(
        "contacts_by_account",
        description="The contacts linked to this account.",
        permission_classes=staff,
    )
    emails: list[AccountEmail] = loaded_field(
        "account_emails_by_account",
        description="Every address of every linked contact, with this account's toggles.",
        permission_classes=staff,
    )

    @strawberry.field(
        description="Portal users who still have access but whose address is on no linked "
        "contact any more. removePortalAccess ends their access.",
        permission_classes=staff,
    )
    async def unlinked_emails(self, info: Info) -> list[PortalAccess]:
        rows = await info.context.loaders.accesses_by_account.load(self.id)
        return [PortalAccess.from_model(row, linked) for row, linked in rows if not linked]

    @strawberry.field(
        description="Invitations to this account's portal, newest first.",
        permission_classes=staff,
        deprecation_reason="Unbounded: use invitationsPage.",
    )
    async def invitations(
        self,
        info: Info,
        status: Annotated[
            InvitationStatus | None,
            strawberry.argument(description="Only the invitations in this status; null: all."),
        ] = None,
    ) -> list[Invitation]:
        rows = await info.context.loaders.invitations_by_account.load(self.id)
        found = [Invitation.from_model(row) for row in rows]
        return [i for i in found if status is None or i.status == status]

    @strawberry.field(
        description="Invitations to this account's portal, newest first, a page at a time.",
        permission_classes=staff,
    )
    async def invitations_page(
        self,
        info: Info,
        status: Annotated[
            InvitationStatus | None,
            strawberry.argument(description="Only the invitations in this status; null: all."),
        ] = None,
        first: Annotated[int | None, strawberry.argument(description=FIRST)] = 20,
        after: Annotated[str | None, strawberry.argument(description=AFTER)] = None,
    ) -> Connection[Invitation]:
        size = size_of(first, info.context.settings.max_page_size)
        variant = status.value if status is not None else None
        key = (self.id, INVITATIONS.position(after), size, variant)
        page = await info.context.loaders.invitations_page.load(key)
        return page_of(page, size, after, Invitation.from_model, INVITATIONS)

    @strawberry.field(description="The account's documents, newest first (staff and its clients).")
    async def documents(
        self,
        info: Info,
        first: Annotated[int | None, strawberry.argument(description=FIRST)] = 20,
        after: Annotated[str | None, strawberry.argument(description=AFTER)] = None,
    ) -> Connection[Document]:
        size = size_of(first, info.context.settings.max_page_size)
        key = (self.id, DOCUMENTS.position(after), size)
        page = await info.context.loaders.documents_page.load(key)
        return page_of(page, size, after, lambda node: node, DOCUMENTS)  # loaded as nodes

    @strawberry.field(
        description="The account's Email tab (staff only).", permission_classes=inbox_users
    )
    async def messages(
        self,
        info: Info,
        first: Annotated[int | None, strawberry.argument(description=FIRST)] = 20,
        after: Annotated[str | None, strawberry.argument(description=AFTER)] = None,
    ) -> Connection[Annotated[Message, strawberry.lazy("schema.messages")]]:
        from schema.messages import account_messages  # schema.messages imports this module

        return await account_messages(info, self.id, first, after)

    @strawberry.field(
        description="The account's outgoing mail and how its delivery stands, newest first.",
        permission_classes=staff,
    )
    async def deliveries(
        self,
        info: Info,
        first: Annotated[int | None, strawberry.argument(description=FIRST)] = 20,
        after: Annotated[str | None, strawberry.argument(description=AFTER)] = None,
    ) -> Connection[Annotated[Delivery, strawberry.lazy("schema.delivery")]]:
        from schema.delivery import account_deliveries  # schema.delivery imports this module

        return await account_deliveries(info, self.id, first, after)

    @strawberry.field(
        description="Every change of access in this account, newest first.",
        permission_classes=staff,
        deprecation_reason="Unbounded: use auditEntriesPage.",
    )
    async def audit_entries(self, info: Info) -> list[AuditEntry]:
        rows = await info.context.loaders.audit_by_account.load(self.id)
        return [AuditEntry.from_model(row) for row in rows]

    @strawberry.field(
        description="Every change of access in this account, newest first, a page at a time.",
        permission_classes=staff,
    )
    async def audit_entries_page(
        self,
        info: Info,
        first: Annotated[int | None, strawberry.argument(description=FIRST)] = 20,
        after: Annotated[str | None, strawberry.argument(description=AFTER)] = None,
    ) -> Connection[AuditEntry]:
        size = size_of(first, info.context.settings.max_page_size)
        key = (self.id, AUDIT_ENTRIES.position(after), size, None)
        page = await info.context.loaders.audit_page.load(key)
        return page_of(page, size, after, AuditEntry.from_model, AUDIT_ENTRIES)


@strawberry.type(description="A person; may be linked to several accounts.")
class Contact(ScopedNode):
    model = ContactModel
    id: relay.NodeID[int]
    first_name: str = strawberry.field(description="The contact's first name.")
    last_name: str = strawberry.field(description="The contact's last name.")

    @classmethod
    def from_model(cls, row: ContactModel) -> Contact:
        return cls(id=row.pk, first_name=row.first_name, last_name=row.last_name)

    COLUMNS: ClassVar[tuple[str, ...]] = ("id", "first_name", "last_name")

    @classmethod
    def from_values(cls, row: dict[str, Any]) -> Contact:
        """From a dict of COLUMNS (a page read as rows, not models)."""
        return cls(id=row["id"], first_name=row["first_name"], last_name=row["last_name"])

    email_addresses: list[EmailAddress] = loaded_field(
        "emails_by_contact", description="The contact's addresses, the default field first."
    )

    @strawberry.field(
        description="The accounts this contact is linked to.",
        deprecation_reason="Unbounded: use accountsPage.",
    )
    async def accounts(self, info: Info) -> list[Account]:
        rows = await info.context.loaders.accounts_by_contact.load(self.id)
        return [Account.from_model(row) for row in rows]

    @strawberry.field(
        description="The accounts this contact is linked to, by name, a page at a time."
    )
    async def accounts_page(
        self,
        info: Info,
        first: Annotated[int | None, strawberry.argument(description=FIRST)] = 20,
        after: Annotated[str | None, strawberry.argument(description=AFTER)] = None,
    ) -> Connection[Account]:
        size = size_of(first, info.context.settings.max_page_size)
        key = (self.id, CONTACT_ACCOUNTS.position(after), size, None)
        page = await info.context.loaders.accounts_page_by_contact.load(key)
        return page_of(page, size, after, Account.from_model, CONTACT_ACCOUNTS)


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

    @strawberry.field(description="The contact the address belongs to.")
    async def contact(self, info: Info) -> Contact:
        row = await info.context.loaders.by_id(ContactModel).load(self.contact_id)
        return Contact.from_model(row)


async def portal_statuses(context: Any, emails: Sequence[AccountEmail]) -> list[PortalStatus]:
    """Each address's portal status: activation is looked up only where LOGIN is on."""
    asked = [(e.account_id, e.address_normalized) for e in emails if e.login]
    activated = dict(zip(asked, await context.loaders.activated.load_many(asked), strict=True))
    return [
        PortalStatus(
            access.portal_status(
                e.login, e.login and activated[(e.account_id, e.address_normalized)]
            )
        )
        for e in emails
    ]


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
    email_address: EmailAddress = strawberry.field(description="The contact's address.")
    notification_preferences: NotificationPreferences = strawberry.field(
        description="Which system notifications the address receives while NOTIFY is on."
    )
    account_id: strawberry.Private[int]
    address_normalized: strawberry.Private[str]

    @classmethod
    def from_model(cls, row: AccountEmailModel) -> AccountEmail:
        return cls(
            id=row.pk,
            login=row.login,
            notify=row.notify,
            email_sync=row.email_sync,
            email_address=EmailAddress.from_model(row.email_address),
            notification_preferences=NotificationPreferences(
                all=row.notify_all,
                enabled=[NotificationCategory(c) for c in row.notify_categories],
            ),
            account_id=row.account_id,
            address_normalized=row.email_address.address_normalized,
        )

    portal_status: PortalStatus = batched_field(
        portal_statuses,
        description="NO_ACCESS, PENDING_ACTIVATION until accepted, or ACTIVE.",
    )

    latest_invitation: Invitation | None = loaded_field(
        "latest_invitation",
        description="The newest invitation for this address in this account.",
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

    @strawberry.field(description="The account these toggles belong to.")
    async def account(self, info: Info) -> Account:
        row = await info.context.loaders.by_id(AccountModel).load(self.account_id)
        return Account.from_model(row)


@strawberry.type(description="Which system notifications an address receives in one account.")
class NotificationPreferences:
    all: bool = strawberry.field(
        description="All system notifications, or only the categories listed in `enabled`."
    )
    enabled: list[NotificationCategory] = strawberry.field(
        description="The categories chosen (used when `all` is false)."
    )


@strawberry.type(description="A single-use link that activates LOGIN for one address.")
class Invitation(ScopedNode):
    model = InvitationModel
    id: relay.NodeID[int]
    email: str = strawberry.field(description="The address it was sent to.")
    status: InvitationStatus = strawberry.field(description="Where the invitation stands now.")
    sent_at: datetime | None = strawberry.field(
        description="When its email was queued; null when it was made without sending."
    )
    expires_at: datetime = strawberry.field(description="After this it can no longer be used.")
    accepted_at: datetime | None = strawberry.field(
        description="When it was accepted; null until then."
    )
    account_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, row: InvitationModel) -> Invitation:
        return cls(
            id=row.pk,
            email=row.email,
            status=InvitationStatus(invitations.status_of(row)),
            sent_at=row.sent_at,
            expires_at=row.expires_at,
            accepted_at=row.accepted_at,
            account_id=row.account_id,
        )

    @strawberry.field(description="The account it invites to.")
    async def account(self, info: Info) -> Account:
        row = await info.context.loaders.by_id(AccountModel).load(self.account_id)
        return Account.from_model(row)


@strawberry.type(description="A portal user's access to one account.")
class PortalAccess(ScopedNode):
    model = PortalAccessModel
    id: relay.NodeID[int]
    portal_user: PortalUser = strawberry.field(description="Who has the access.")
    linked: bool = strawberry.field(
        description="False when the user's address is no longer on any contact linked to "
        "the account."
    )
    account_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, row: PortalAccessModel, linked: bool = True) -> PortalAccess:
        return cls(
            id=row.pk,
            portal_user=PortalUser.from_model(row.portal_user),
            linked=linked,
            account_id=row.account_id,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[PortalAccess | None]:
        if info.context.staff is None:
            return [None for _ in node_ids]
        ids = [int(pk) for pk in node_ids]
        rows = await info.context.scope.query(PortalAccessModel).filter(pk__in=ids)
        by_account = await access.accesses_by_account(
            info.context.scope, {row.account_id for row in rows}
        )
        found = {
            row.pk: cls.from_model(row, linked) for v in by_account.values() for row, linked in v
        }
        return [found.get(i) for i in ids]

    @strawberry.field(description="The account it gives access to.")
    async def account(self, info: Info) -> Account:
        row = await info.context.loaders.by_id(AccountModel).load(self.account_id)
        return Account.from_model(row)


@strawberry.type(description="A file of an account.")
class Document(ScopedNode):
    model = DocumentModel
    id: relay.NodeID[int]
    filename: str = strawberry.field(description="The file's name, made safe (no path).")
    content_type: str = strawberry.field(description="The media type, e.g. application/pdf.")
    size: int = strawberry.field(description="Bytes.")
    sha256: str = strawberry.field(description="The SHA-256 of the content, in hex.")
    created_at: datetime = strawberry.field(description="When it was uploaded or saved.")

    @classmethod
    def from_model(cls, row: DocumentModel) -> Document:
        return cls(
            id=row.pk,
            filename=row.filename,
            content_type=row.content_type,
            size=row.size,
            sha256=row.sha256,
            created_at=row.created_at,
        )

    @strawberry.field(
        description="GET it with the session cookie or Bearer token of a viewer allowed to "
        "see the account."
    )
    def download_url(self, info: Info) -> str:
        base = info.context.settings.resolved_public_url
        return f"{base}/documents/{ids.encode('Document', self.id)}"


@strawberry.type(description="One change of access: who did what, when, before and after.")
class AuditEntry:
    id: strawberry.ID = strawberry.field(
        description="Stable and unique, for client caches; node(id:) does not resolve it."
    )
    action: AuditAction = strawberry.field(description="What changed.")
    email: str | None = strawberry.field(
        description="The address concerned; null when the change concerns none."
    )
    actor: str = strawberry.field(
        description="The staff member's or portal user's email; \"system\" when neither."
    )
    before: JSON | None = strawberry.field(
        description="What changed, as it was (keys depend on the action); null when new."
    )
    after: JSON | None = strawberry.field(
        description="What changed, as it is now; null when removed."
    )
    created_at: datetime = strawberry.field(description="When the change was made.")

    @classmethod
    def from_model(cls, row: AuditEntryModel) -> AuditEntry:
        who = row.staff_member or row.portal_user
        return cls(
            id=strawberry.ID(ids.encode("AuditEntry", row.pk)),
            action=AuditAction(row.action),
            email=row.email,
            actor=who.email if who else "system",
            before=row.before,
            after=row.after,
            created_at=row.created_at,
        )


NODE_TYPES: dict[str, type[relay.Node]] = {
    cls.__name__: cls
    for cls in (
        Firm,
        StaffMember,
        PortalUser,
        Account,
        Contact,
        EmailAddress,
        AccountEmail,
        Invitation,
        PortalAccess,
        Document,
    )
}
