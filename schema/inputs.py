"""Mutation inputs, named as the contract names them.

Defaults sit on nullable fields, as in the contract, so clients may pass null for "default".
"""

from __future__ import annotations

import strawberry

from schema.enums import AccountType, StaffRole


@strawberry.input
class StaffMemberInput:
    email: str
    name: str
    role: StaffRole | None = StaffRole.EMPLOYEE
    can_manage_accounts: bool | None = False
    can_use_inbox: bool | None = False


@strawberry.input
class UpdateStaffMemberInput:
    name: str | None = None
    role: StaffRole | None = None
    can_manage_accounts: bool | None = None
    can_use_inbox: bool | None = None
    active: bool | None = None


@strawberry.input
class EmailAddressInput:
    address: str
    label: str | None = "Email"


@strawberry.input
class CreateAccountInput:
    name: str
    type: AccountType
    auto_save_attachments: bool | None = False


@strawberry.input
class UpdateAccountInput:
    name: str | None = None
    type: AccountType | None = None
    auto_save_attachments: bool | None = None


@strawberry.input
class UpdateContactInput:
    first_name: str | None = None
    last_name: str | None = None


@strawberry.input
class UpdateMailboxInput:
    imap_host: str | None = None
    imap_port: int | None = None
    imap_tls: bool | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_tls: bool | None = None
    username: str | None = None
    password: str | None = None


@strawberry.input
class CreateContactInput:
    first_name: str
    last_name: str
    emails: list[EmailAddressInput] | None = strawberry.field(default_factory=list)
    account_ids: list[strawberry.ID] | None = strawberry.field(default_factory=list)
