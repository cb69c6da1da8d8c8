"""Mutation payloads: `errors` plus the object, which is null whenever errors is not empty."""

from __future__ import annotations

from datetime import datetime

import strawberry

from schema.errors import UserError
from schema.types import (
    Account,
    AccountEmail,
    Contact,
    Document,
    EmailAddress,
    Firm,
    Invitation,
    StaffMember,
    Viewer,
)


@strawberry.type
class SignInPayload:
    errors: list[UserError]
    token: str | None = None
    viewer: Viewer | None = None
    accounts: list[Account] = strawberry.field(
        default_factory=list,
        description="For clients: the accounts they may enter; several mean they must choose.",
    )
    current_account: Account | None = None


@strawberry.type
class StaffMemberPayload:
    errors: list[UserError]
    staff_member: StaffMember | None = None


@strawberry.type
class AccountPayload:
    errors: list[UserError]
    account: Account | None = None


@strawberry.type
class ContactPayload:
    errors: list[UserError]
    contact: Contact | None = None


@strawberry.type
class EmailAddressPayload:
    errors: list[UserError]
    email_address: EmailAddress | None = None


@strawberry.type
class AccountEmailPayload:
    errors: list[UserError]
    account_email: AccountEmail | None = None


@strawberry.type
class ImportContactsPayload:
    errors: list[UserError]
    created: int
    updated: int
    rejected_rows: list[int]


@strawberry.type
class SwitchAccountPayload:
    errors: list[UserError]
    current_account: Account | None = None


@strawberry.type
class InvitationPayload:
    errors: list[UserError]
    invitation: Invitation | None = None


@strawberry.type
class SendPayload:
    errors: list[UserError]
    queued: int = strawberry.field(default=0, description="Messages queued for clients.")


@strawberry.type
class FirmPayload:
    errors: list[UserError]
    firm: Firm | None = None


@strawberry.type
class DocumentPayload:
    errors: list[UserError]
    document: Document | None = None


@strawberry.type
class DataExportPayload:
    errors: list[UserError]
    download_url: str | None = strawberry.field(
        default=None, description="Short-lived: a JSON bundle of the contact's data (and files)."
    )
    expires_at: datetime | None = None


@strawberry.type
class ErasurePayload:
    errors: list[UserError]
    erased: list[str] = strawberry.field(
        default_factory=list, description="What was removed, in words a firm can keep on file."
    )
    kept: list[str] = strawberry.field(
        default_factory=list, description="What stays, and why (e.g. account documents: retention)."
    )
