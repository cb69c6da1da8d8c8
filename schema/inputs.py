"""Mutation inputs, named as the contract names them.

Defaults sit on nullable fields, as in the contract, so clients may pass null for "default".
In an update input, a field left out (or null) keeps its value.
"""

from __future__ import annotations

import strawberry

from schema.enums import AccountType, MailboxVisibility, SecondFactorRequirement, StaffRole

KEEP = " Left out or null: unchanged."


@strawberry.input(description="A staff member to add; they get an email to set a password.")
class StaffMemberInput:
    email: str = strawberry.field(description="Their sign-in address, unique in the firm.")
    name: str = strawberry.field(description="Their name, as colleagues see it.")
    role: StaffRole | None = strawberry.field(
        default=StaffRole.EMPLOYEE, description="Their role (default EMPLOYEE)."
    )
    can_manage_accounts: bool | None = strawberry.field(
        default=False,
        description="May change accounts and their toggles (default false; owners and admins "
        "always may).",
    )
    can_use_inbox: bool | None = strawberry.field(
        default=False,
        description="May read synced mail and reply (default false; owners and admins always may).",
    )


@strawberry.input(description="Changes to a staff member.")
class UpdateStaffMemberInput:
    name: str | None = strawberry.field(default=None, description="A new name." + KEEP)
    role: StaffRole | None = strawberry.field(default=None, description="A new role." + KEEP)
    can_manage_accounts: bool | None = strawberry.field(
        default=None, description="The manage-accounts right." + KEEP
    )
    can_use_inbox: bool | None = strawberry.field(
        default=None, description="The inbox right." + KEEP
    )
    active: bool | None = strawberry.field(
        default=None,
        description="False deactivates the member: their sessions end and they cannot sign "
        "in." + KEEP,
    )
    second_factor: SecondFactorRequirement | None = strawberry.field(
        default=None,
        description="The member's own second-factor requirement (the stricter of it and the "
        "firm's holds)." + KEEP,
    )


@strawberry.input(description="An email address of a contact.")
class EmailAddressInput:
    address: str = strawberry.field(description="The address; unique among the firm's contacts.")
    label: str | None = strawberry.field(
        default="Email",
        description='"Email" for the default field (the default), else the custom email '
        "field's name (at most 100 characters).",
    )


@strawberry.input(description="A new client account.")
class CreateAccountInput:
    name: str = strawberry.field(description="The account's name.")
    type: AccountType = strawberry.field(description="The kind of client entity.")
    auto_save_attachments: bool | None = strawberry.field(
        default=False,
        description="Save attachments of synced mail into the account's documents (default false).",
    )


@strawberry.input(description="Changes to an account.")
class UpdateAccountInput:
    name: str | None = strawberry.field(default=None, description="A new name." + KEEP)
    type: AccountType | None = strawberry.field(
        default=None, description="A new kind of entity." + KEEP
    )
    auto_save_attachments: bool | None = strawberry.field(
        default=None,
        description="Save attachments of future synced mail into the account's documents." + KEEP,
    )


@strawberry.input(description="Changes to a contact's name.")
class UpdateContactInput:
    first_name: str | None = strawberry.field(default=None, description="A new first name." + KEEP)
    last_name: str | None = strawberry.field(default=None, description="A new last name." + KEEP)


@strawberry.input(
    description="Changes to a connected mailbox; the logins are checked again before it is "
    "saved. Changing a server or the username needs the password again."
)
class UpdateMailboxInput:
    imap_host: str | None = strawberry.field(
        default=None, description="The IMAP server's host name or IP address." + KEEP
    )
    imap_port: int | None = strawberry.field(
        default=None, description="The IMAP server's TCP port." + KEEP
    )
    imap_tls: bool | None = strawberry.field(
        default=None, description="TLS from the first byte (IMAPS); false: plain IMAP." + KEEP
    )
    smtp_host: str | None = strawberry.field(
        default=None, description="The SMTP server's host name or IP address." + KEEP
    )
    smtp_port: int | None = strawberry.field(
        default=None, description="The SMTP server's TCP port." + KEEP
    )
    smtp_tls: bool | None = strawberry.field(
        default=None,
        description="Implicit TLS on port 465, STARTTLS on any other port; false: plain SMTP."
        + KEEP,
    )
    username: str | None = strawberry.field(
        default=None, description="For IMAP and SMTP alike." + KEEP
    )
    password: str | None = strawberry.field(
        default=None, description="Stored encrypted; never returned." + KEEP
    )
    visibility: MailboxVisibility | None = strawberry.field(
        default=None,
        description="SHARED or PERSONAL, its stored mail with it (only the staff member who "
        "connected it; given alone, no login is checked)." + KEEP,
    )


@strawberry.input(description="A new contact, with its addresses and the accounts it joins.")
class CreateContactInput:
    first_name: str = strawberry.field(description="The contact's first name.")
    last_name: str = strawberry.field(description="The contact's last name.")
    emails: list[EmailAddressInput] | None = strawberry.field(
        default_factory=list, description="The contact's addresses (default none)."
    )
    account_ids: list[strawberry.ID] | None = strawberry.field(
        default_factory=list, description="Ids of the accounts to link it to (default none)."
    )
