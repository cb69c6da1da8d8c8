"""The CRM mutations (staff with the manage-accounts right)."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from resolvers.attempt import attempt
from resolvers.mutations.selection import mutation
from schema import ids
from schema.inputs import (
    CreateAccountInput,
    CreateContactInput,
    EmailAddressInput,
    UpdateAccountInput,
    UpdateContactInput,
)
from schema.payloads import AccountPayload, ContactPayload, EmailAddressPayload
from schema.permissions import IsOwnerOrAdmin, ManagesAccounts
from schema.types import Account, Contact, EmailAddress
from services.crm import archive, records, removal

manages_accounts = [ManagesAccounts]


def _account_payload(account: object, errors: list) -> AccountPayload:
    return AccountPayload(errors=errors, account=Account.from_model(account) if account else None)


def _contact_payload(contact: object, errors: list) -> ContactPayload:
    return ContactPayload(errors=errors, contact=Contact.from_model(contact) if contact else None)


def _email_payload(email: object, errors: list) -> EmailAddressPayload:
    return EmailAddressPayload(
        errors=errors, email_address=EmailAddress.from_model(email) if email else None
    )


@strawberry.type
class CrmMutations:
    @mutation(description="Creates a client account.", permission_classes=manages_accounts)
    async def create_account(
        self,
        info: Info,
        input: Annotated[CreateAccountInput, strawberry.argument(description="The new account.")],
    ) -> AccountPayload:
        return _account_payload(
            *await attempt(
                info.context,
                records.create_account(
                    info.context.scope, input.name, input.type, bool(input.auto_save_attachments)
                ),
            )
        )

    @mutation(
        description="Renames an account, changes its kind or its auto-save option; a null "
        "field keeps its value.",
        permission_classes=manages_accounts,
    )
    async def update_account(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The account's id.")],
        input: Annotated[UpdateAccountInput, strawberry.argument(description="What to change.")],
    ) -> AccountPayload:
        return _account_payload(
            *await attempt(
                info.context,
                records.update_account(
                    info.context.scope,
                    ids.decode(id, "Account"),
                    name=input.name,
                    type=input.type,
                    auto_save_attachments=input.auto_save_attachments,
                ),
            )
        )

    @mutation(
        description="Creates a contact with its addresses, linked to the given accounts.",
        permission_classes=manages_accounts,
    )
    async def create_contact(
        self,
        info: Info,
        input: Annotated[CreateContactInput, strawberry.argument(description="The new contact.")],
    ) -> ContactPayload:
        return _contact_payload(
            *await attempt(
                info.context,
                records.create_contact(
                    info.context.scope,
                    input.first_name,
                    input.last_name,
                    emails=[records.NewAddress(e.address, e.label) for e in input.emails or []],
                    account_ids=[ids.decode(i, "Account") for i in input.account_ids or []],
                ),
            )
        )

    @mutation(
        description="Renames a contact; a null name keeps its value.",
        permission_classes=manages_accounts,
    )
    async def update_contact(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The contact's id.")],
        input: Annotated[UpdateContactInput, strawberry.argument(description="What to change.")],
    ) -> ContactPayload:
        return _contact_payload(
            *await attempt(
                info.context,
                records.update_contact(
                    info.context.scope,
                    ids.decode(id, "Contact"),
                    first_name=input.first_name,
                    last_name=input.last_name,
                    actor=info.context.staff,
                ),
            )
        )

    @mutation(
        description="Deletes a contact and its addresses from every account, as removing each "
        "address would; returns the contact as it was (its addresses and accounts then read "
        "empty).",
        permission_classes=manages_accounts,
    )
    async def delete_contact(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The contact's id.")],
    ) -> ContactPayload:
        return _contact_payload(
            *await attempt(
                info.context,
                records.delete_contact(
                    info.context.scope, info.context.staff, ids.decode(id, "Contact")
                ),
            )
        )

    @mutation(
        description="Links a contact to an account; its addresses appear in the account's emails.",
        permission_classes=manages_accounts,
    )
    async def link_contact(
        self,
        info: Info,
        account_id: Annotated[strawberry.ID, strawberry.argument(description="The account's id.")],
        contact_id: Annotated[strawberry.ID, strawberry.argument(description="The contact's id.")],
    ) -> AccountPayload:
        return _account_payload(
            *await attempt(
                info.context,
                records.link_contact(
                    info.context.scope,
                    ids.decode(account_id, "Account"),
                    ids.decode(contact_id, "Contact"),
                ),
            )
        )

    @mutation(
        description="Unlinks a contact; its addresses leave the account's emails.",
        permission_classes=manages_accounts,
    )
    async def unlink_contact(
        self,
        info: Info,
        account_id: Annotated[strawberry.ID, strawberry.argument(description="The account's id.")],
        contact_id: Annotated[strawberry.ID, strawberry.argument(description="The contact's id.")],
    ) -> AccountPayload:
        return _account_payload(
            *await attempt(
                info.context,
                records.unlink_contact(
                    info.context.scope,
                    ids.decode(account_id, "Account"),
                    ids.decode(contact_id, "Contact"),
                    staff=info.context.staff,
                ),
            )
        )

    @mutation(
        description="Adds an address to a contact; it appears in each linked account's emails "
        "with its toggles off.",
        permission_classes=manages_accounts,
    )
    async def add_email_address(
        self,
        info: Info,
        contact_id: Annotated[strawberry.ID, strawberry.argument(description="The contact's id.")],
        email: Annotated[EmailAddressInput, strawberry.argument(description="The address to add.")],
    ) -> EmailAddressPayload:
        return _email_payload(
            *await attempt(
                info.context,
                records.add_email_address(
                    info.context.scope,
                    ids.decode(contact_id, "Contact"),
                    email.address,
                    email.label,
                ),
            )
        )

    @mutation(
        description="Changes an address (and optionally its label).",
        permission_classes=manages_accounts,
    )
    async def update_email_address(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The address's id.")],
        address: Annotated[str, strawberry.argument(description="The new address.")],
        label: Annotated[
            str | None, strawberry.argument(description="A new label; null keeps it.")
        ] = None,
    ) -> EmailAddressPayload:
        return _email_payload(
            *await attempt(
                info.context,
                records.update_email_address(
                    info.context.scope,
                    ids.decode(id, "EmailAddress"),
                    address,
                    info.context.settings,
                    label=label,
                    staff=info.context.staff,
                ),
            )
        )

    @mutation(
        description="Removes an address; returns it as it was.", permission_classes=manages_accounts
    )
    async def remove_email_address(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The address's id.")],
    ) -> EmailAddressPayload:
        return _email_payload(
            *await attempt(
                info.context,
                records.remove_email_address(
                    info.context.scope, ids.decode(id, "EmailAddress"), staff=info.context.staff
                ),
            )
        )

    @mutation(
        description="Archives an account: out of lists (accounts(includeArchived: true) shows "
        "it), its clients lose portal access at once (kept for unarchiving), pending "
        "invitations are revoked, no mail goes to it and sync links no new mail to it. "
        "Nothing is deleted; archiving an archived account changes nothing.",
        permission_classes=manages_accounts,
    )
    async def archive_account(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The account's id.")],
    ) -> AccountPayload:
        return _account_payload(
            *await attempt(
                info.context,
                archive.archive_account(
                    info.context.scope, info.context.staff, ids.decode(id, "Account")
                ),
            )
        )

    @mutation(
        description="Brings an archived account back: its clients may enter again at once. "
        "Unarchiving an active account changes nothing.",
        permission_classes=manages_accounts,
    )
    async def unarchive_account(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The account's id.")],
    ) -> AccountPayload:
        return _account_payload(
            *await attempt(
                info.context,
                archive.unarchive_account(
                    info.context.scope, info.context.staff, ids.decode(id, "Account")
                ),
            )
        )

    @mutation(
        description="Deletes an account (owners and admins) with its links, toggles, "
        "invitations, portal access, documents and message links, and the synced mail linked "
        "to no other account; contacts stay. Returns the account as it was.",
        permission_classes=[IsOwnerOrAdmin],
    )
    async def delete_account(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The account's id.")],
    ) -> AccountPayload:
        return _account_payload(
            *await attempt(
                info.context,
                removal.delete_account(
                    info.context.scope,
                    info.context.staff,
                    ids.decode(id, "Account"),
                    info.context.settings,
                ),
            )
        )
