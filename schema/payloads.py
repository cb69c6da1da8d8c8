"""Mutation payloads: `errors` plus the object, which is null whenever errors is not empty."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from schema.enums import SecondFactorMethod
from schema.errors import UserError
from schema.mailings import Mailing
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


def errors_field() -> list[UserError]:
    """The `errors` field every payload has."""
    return strawberry.field(description="Why nothing was done; empty on success.")


def result(what: str) -> Any:
    """The payload's object: null whenever `errors` is not empty."""
    return strawberry.field(default=None, description=f"{what}; null on failure.")


@strawberry.type(description="A second factor a sign-in waits for (verifySecondFactor).")
class SecondFactorChallenge:
    id: strawberry.ID = strawberry.field(
        description="Opaque, single use: answer with it within 10 minutes (5 tries)."
    )
    methods: list[SecondFactorMethod] = strawberry.field(
        description="What this person may answer with."
    )
    expires_at: datetime = strawberry.field(description="When the challenge stops working.")


@strawberry.type(description="The result of a sign-in.")
class SignInPayload:
    errors: list[UserError] = errors_field()
    token: str | None = strawberry.field(
        default=None,
        description="The session token: send it as `Authorization: Bearer <token>` (a cookie "
        "is set as well); null on failure.",
    )
    viewer: Viewer | None = result("Who is now signed in")
    accounts: list[Account] = strawberry.field(
        default_factory=list,
        description="For clients: the accounts they may enter; several mean they must choose.",
    )
    current_account: Account | None = result(
        "For clients: the account they are in now (null while they must choose)"
    )
    second_factor: SecondFactorChallenge | None = strawberry.field(
        default=None,
        description="Set when the sign-in needs a second factor: token, viewer and accounts "
        "stay empty until verifySecondFactor answers it.",
    )
    authenticator_required: bool = strawberry.field(
        default=False,
        description="True: the firm requires an authenticator app and this person has none. "
        "The session may only set one up (startAuthenticatorEnrollment, then "
        "confirmAuthenticatorEnrollment), read viewer and sign out; anything else answers "
        "AUTHENTICATOR_REQUIRED until the app is confirmed, then the session is a full one.",
    )
    device_token: str | None = strawberry.field(
        default=None,
        description="Set when this sign-in came from a device Portico did not know: a client "
        "that keeps no cookies sends it back as `deviceToken` on its next sign-in, so it is "
        "not reported as a new device again (browsers get the same in the portico_device "
        "cookie).",
    )


@strawberry.type(description="An authenticator app's set-up: scan the QR code, then confirm.")
class AuthenticatorEnrollmentPayload:
    errors: list[UserError] = errors_field()
    provisioning_uri: str | None = result("The otpauth://totp/ URI holding the secret")
    qr_code_svg: str | None = result(
        "The URI as a QR code, an inline SVG rendered by Portico (no outside service)"
    )


@strawberry.type(description="Recovery codes, shown this once.")
class RecoveryCodesPayload:
    errors: list[UserError] = errors_field()
    recovery_codes: list[str] = strawberry.field(
        default_factory=list,
        description="Ten single-use codes for when the authenticator is not at hand; "
        "empty on failure and after removal.",
    )


@strawberry.type(description="What resetAuthenticator did.")
class ResetAuthenticatorPayload:
    errors: list[UserError] = errors_field()
    sessions_ended: int = strawberry.field(
        default=0, description="How many of the person's sessions were ended."
    )


@strawberry.type(description="What a staff mutation did.")
class StaffMemberPayload:
    errors: list[UserError] = errors_field()
    staff_member: StaffMember | None = result("The staff member concerned")


@strawberry.type(description="What an account mutation did.")
class AccountPayload:
    errors: list[UserError] = errors_field()
    account: Account | None = result("The account concerned")


@strawberry.type(description="What a contact mutation did.")
class ContactPayload:
    errors: list[UserError] = errors_field()
    contact: Contact | None = result("The contact concerned")


@strawberry.type(description="What an email address mutation did.")
class EmailAddressPayload:
    errors: list[UserError] = errors_field()
    email_address: EmailAddress | None = result("The address concerned")


@strawberry.type(description="What a change of an address's toggles did.")
class AccountEmailPayload:
    errors: list[UserError] = errors_field()
    account_email: AccountEmail | None = result("The address in the account, as it stands now")


@strawberry.type(
    description="What a CSV import did: each valid row is saved, each bad row rejected."
)
class ImportContactsPayload:
    errors: list[UserError] = errors_field()
    created: int = strawberry.field(description="Contacts created.")
    updated: int = strawberry.field(description="Existing contacts updated.")
    rejected_rows: list[int] = strawberry.field(
        description="Line numbers of the rows not imported (the header is line 1; errors say why)."
    )


@strawberry.type(description="The result of a client switching accounts.")
class SwitchAccountPayload:
    errors: list[UserError] = errors_field()
    current_account: Account | None = result("The account the client is in now")


@strawberry.type(description="What an invitation mutation did.")
class InvitationPayload:
    errors: list[UserError] = errors_field()
    invitation: Invitation | None = result("The invitation concerned")


@strawberry.type(description="What a mailing did.")
class SendPayload:
    errors: list[UserError] = errors_field()
    queued: int = strawberry.field(default=0, description="Messages queued for clients.")
    mailing: Mailing | None = strawberry.field(
        default=None,
        description="The mailing, whose counts show its delivery going on (sendFirmEmail "
        "only); null on failure.",
    )


@strawberry.type(description="What a change of firm settings did.")
class FirmPayload:
    errors: list[UserError] = errors_field()
    firm: Firm | None = result("The firm as it stands now")


@strawberry.type(description="What a document mutation did.")
class DocumentPayload:
    errors: list[UserError] = errors_field()
    document: Document | None = result("The document concerned")


@strawberry.type(description="A contact's data, ready to download.")
class DataExportPayload:
    errors: list[UserError] = errors_field()
    download_url: str | None = strawberry.field(
        default=None, description="Short-lived: a JSON bundle of the contact's data (and files)."
    )
    expires_at: datetime | None = strawberry.field(
        default=None, description="When downloadUrl stops working."
    )


@strawberry.type(description="What erasing a contact removed and what it kept.")
class ErasurePayload:
    errors: list[UserError] = errors_field()
    erased: list[str] = strawberry.field(
        default_factory=list, description="What was removed, in words a firm can keep on file."
    )
    kept: list[str] = strawberry.field(
        default_factory=list, description="What stays, and why (e.g. account documents: retention)."
    )
