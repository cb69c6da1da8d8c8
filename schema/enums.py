"""GraphQL enums. A model enum is exposed as it is, so its values cannot drift; where a model
stores a plain string, the enum here lists every value the services write (tests/
test_schema_enums.py checks them) and a row's value is converted strictly: a value outside the
enum fails loudly (INTERNAL, logged) rather than reaching a client unannounced."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum, EnumMeta, auto
from typing import Any, TypeVar

import strawberry

from models import AccountType as _AccountType
from models import DeliveryStatus as _DeliveryStatus
from models import HistoryStatus as _HistoryStatus
from models import InboxNotification as _InboxNotification
from models import MailboxVisibility as _MailboxVisibility
from models import NotificationCategory as _NotificationCategory
from models import SecondFactorRequirement as _SecondFactorRequirement
from models import StaffRole as _StaffRole
from models import SyncStatus as _SyncStatus

E = TypeVar("E", bound=EnumMeta)


def expose(cls: E, description: str, values: Mapping[Any, str], name: str | None = None) -> E:
    """`cls` as a GraphQL enum with a description per value, keyed by member (a StrEnum's
    member is also its string). A member missing from `values` gets none, which
    tests/test_schema_descriptions.py names."""
    strawberry.enum(cls, name=name, description=description)
    for value in cls.__strawberry_definition__.values:  # type: ignore[attr-defined]
        value.description = values.get(cls[value.name])  # type: ignore[index]
    return cls


class _Named(Enum):
    """Each member's value is its own name: the string stored and sent."""

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list[Any]) -> str:
        return name


AccountType = expose(
    _AccountType,
    "The kind of client entity; each entity has its own account.",
    {
        "INDIVIDUAL": "One person.",
        "FAMILY": "A household, e.g. spouses filing together.",
        "COMPANY": "A business or other organisation.",
    },
)
StaffRole = expose(
    _StaffRole,
    "A staff member's role in the firm.",
    {
        "OWNER": "Runs the firm: every right, and the only role that manages owners.",
        "ADMIN": "Every right except managing owners.",
        "EMPLOYEE": "Reads accounts; changes them or reads mail only with the rights granted.",
    },
)
InboxNotification = expose(
    _InboxNotification,
    "What a staff member is emailed about new client mail: nothing, each message at once, "
    "or one digest a day.",
    {
        "OFF": "No email (the default); the live subscription still works.",
        "IMMEDIATE": "An email for each new client message.",
        "DAILY_DIGEST": "One email a day listing the new client messages.",
    },
)
SecondFactorRequirement = expose(
    _SecondFactorRequirement,
    "What a sign-in needs beyond the password.",
    {
        "NONE": "The password alone.",
        "EMAIL_CODE": "A one-time code mailed to the sign-in address at each sign-in.",
        "AUTHENTICATOR": "A code from an authenticator app (TOTP); until one is set up, a "
        "mailed code.",
    },
)


@strawberry.enum(description="A way to answer a second-factor challenge.")
class SecondFactorMethod(Enum):
    EMAIL_CODE = strawberry.enum_value("EMAIL_CODE", description="The 6-digit code mailed now.")
    AUTHENTICATOR = strawberry.enum_value(
        "AUTHENTICATOR", description="The 6-digit code the authenticator app shows."
    )
    RECOVERY_CODE = strawberry.enum_value(
        "RECOVERY_CODE", description="One of the recovery codes shown at set-up (once each)."
    )


NotificationCategory = expose(
    _NotificationCategory,
    "The kinds of system notification an address may choose.",
    {
        "DOCUMENT_UPLOADS": "New documents uploaded by the firm.",
        "SIGNATURE_REQUESTS": "Requests to sign, and reminders of pending signatures.",
        "APPROVALS": "Requests to approve, and reminders of pending approvals.",
        "CHATS_AND_TASKS": "Chats and client tasks.",
        "PROPOSALS": "Proposals and engagement letters, and reminders of pending ones.",
        "ORGANIZERS": "Organizers and questionnaires, and reminders of pending ones.",
        "INVOICES_AND_PAYMENTS": "New invoices, reminders of unpaid ones, payment "
        "confirmations and refunds.",
    },
)
DeliveryStatus = expose(
    _DeliveryStatus,
    "Where an outgoing email stands.",
    {
        "QUEUED": "Waiting to be sent, or retrying after a failure.",
        "SENT": "Accepted by the mail server.",
        "FAILED": "Refused for good, or out of attempts.",
        "CANCELLED": "Withdrawn before it was sent (e.g. its invitation was revoked).",
    },
)
MailboxSyncStatus = expose(
    _SyncStatus,
    "Where a mailbox's sync stands.",
    {
        "IDLE": "Not syncing now; the last sync succeeded (or none has run yet).",
        "SYNCING": "A sync pass is running.",
        "FAILED": "The last sync failed; lastError says why. It is retried.",
    },
    name="MailboxSyncStatus",
)
MailboxVisibility = expose(
    _MailboxVisibility,
    "Who reads a mailbox's synced mail.",
    {
        "SHARED": "The whole firm (staff with the inbox right).",
        "PERSONAL": "Connected by a staff member for themselves: its threads are private to "
        "them (others see subject, participants and date only) until they share a thread.",
    },
    name="MailboxVisibility",
)
HistoryImportStatus = expose(
    _HistoryStatus,
    "Where the import of an address's earlier mail stands.",
    {
        "PENDING": "Queued; runs with the mailbox's next sync.",
        "RUNNING": "Importing now.",
        "DONE": "Finished.",
        "FAILED": "The last run failed (lastError says why); tried again when the mailbox "
        "syncs again.",
    },
    name="HistoryImportStatus",
)


@strawberry.enum(description="Whether an address's owner can use the account's portal.")
class PortalStatus(Enum):
    NO_ACCESS = strawberry.enum_value("NO_ACCESS", description="LOGIN is off.")
    PENDING_ACTIVATION = strawberry.enum_value(
        "PENDING_ACTIVATION", description="LOGIN is on; the invitation is not accepted yet."
    )
    ACTIVE = strawberry.enum_value(
        "ACTIVE", description="LOGIN is on and the owner has activated their sign-in."
    )


@strawberry.enum(description="Where an invitation stands (EXPIRED and the rest are derived).")
class InvitationStatus(Enum):
    PENDING = strawberry.enum_value("PENDING", description="Sent, not accepted, still valid.")
    ACCEPTED = strawberry.enum_value("ACCEPTED", description="Accepted: the portal is active.")
    REVOKED = strawberry.enum_value(
        "REVOKED", description="Withdrawn: superseded, address changed, or LOGIN turned off."
    )
    EXPIRED = strawberry.enum_value(
        "EXPIRED", description="Not accepted in time; a new invitation must be sent."
    )


@strawberry.enum(description="What kind of firm email: one-off, mass mailing, or automation.")
class FirmEmailKind(Enum):
    DIRECT = strawberry.enum_value("DIRECT", description="A one-off email to the account.")
    MASS = strawberry.enum_value("MASS", description="Part of a mass mailing.")
    AUTOMATION = strawberry.enum_value("AUTOMATION", description="Sent by a pipeline automation.")


@strawberry.enum(description="Which way a synced message went.")
class MessageDirection(Enum):
    INBOUND = strawberry.enum_value("INBOUND", description="Received from outside the firm.")
    OUTBOUND = strawberry.enum_value(
        "OUTBOUND", description="Sent by the firm (from a connected mailbox)."
    )


@strawberry.enum(
    description="Whether the firm's receiving server found the sender genuine (DMARC, as its "
    "Authentication-Results header said)."
)
class SenderAuthentication(Enum):
    PASS = strawberry.enum_value("PASS", description="The sender's domain vouched for it.")
    FAIL = strawberry.enum_value(
        "FAIL", description="The sender's domain did not: the From address may be forged."
    )
    NONE = strawberry.enum_value("NONE", description="The receiving server reported nothing.")


@strawberry.enum(description="What an outgoing email is.")
class DeliveryKind(Enum):
    INVITATION = strawberry.enum_value(
        "INVITATION", description="A portal invitation (LOGIN turned on, or resent)."
    )
    NOTIFICATION = strawberry.enum_value(
        "NOTIFICATION", description="A system notification (see its category)."
    )
    DIRECT = strawberry.enum_value("DIRECT", description="A one-off firm email.")
    MASS = strawberry.enum_value("MASS", description="A mass mailing.")
    AUTOMATION = strawberry.enum_value(
        "AUTOMATION", description="An email sent by a pipeline automation."
    )
    REPLY = strawberry.enum_value(
        "REPLY", description="A reply from Inbox+, sent through a connected mailbox."
    )
    STAFF_ONBOARDING = strawberry.enum_value(
        "STAFF_ONBOARDING", description="A new staff member's link to set a password."
    )
    SIGN_IN_CODE = strawberry.enum_value(
        "SIGN_IN_CODE", description="A one-time code to finish a sign-in."
    )
    NEW_DEVICE = strawberry.enum_value(
        "NEW_DEVICE", description="A notice of a sign-in from a new device."
    )
    AUTHENTICATOR_CHANGED = strawberry.enum_value(
        "AUTHENTICATOR_CHANGED",
        description="A notice that a person's authenticator app was set up, replaced, "
        "removed or reset.",
    )
    STAFF_INBOX_ALERT = strawberry.enum_value(
        "STAFF_INBOX_ALERT", description="A staff member told of new client mail."
    )
    STAFF_INBOX_DIGEST = strawberry.enum_value(
        "STAFF_INBOX_DIGEST", description="A staff member's daily digest of new client mail."
    )
    WEBHOOK_DISABLED = strawberry.enum_value(
        "WEBHOOK_DISABLED",
        description="An owner or admin told that Portico disabled a failing webhook endpoint.",
    )


class AuditAction(_Named):
    """What changed, in an audit entry. The values are what services pass to audit.record
    (tests/test_schema_enums.py checks every call)."""

    FLAGS_CHANGED = auto()
    NOTIFICATION_PREFERENCES_CHANGED = auto()
    INVITATION_CREATED = auto()
    INVITATION_SENT = auto()
    INVITATION_REVOKED = auto()
    INVITATION_ACCEPTED = auto()
    PORTAL_ACCESS_REMOVED = auto()
    CONTACT_UPDATED = auto()
    CONTACT_DELETED = auto()
    CONTACT_ERASED = auto()
    CONTACT_DATA_EXPORTED = auto()
    ACCOUNT_ARCHIVED = auto()
    ACCOUNT_UNARCHIVED = auto()
    ACCOUNT_DELETED = auto()
    DOCUMENT_DELETED = auto()
    MAILBOX_CONNECTED = auto()
    MAILBOX_UPDATED = auto()
    MAILBOX_DISCONNECTED = auto()
    AUTHENTICATOR_RESET = auto()


expose(
    AuditAction,
    "What changed, in an audit entry.",
    {
        AuditAction.FLAGS_CHANGED: "An address's LOGIN, NOTIFY or EMAIL SYNC toggle changed.",
        AuditAction.NOTIFICATION_PREFERENCES_CHANGED: "The notification categories of an "
        "address changed.",
        AuditAction.INVITATION_CREATED: "An invitation was made without sending it.",
        AuditAction.INVITATION_SENT: "An invitation was sent.",
        AuditAction.INVITATION_REVOKED: "An invitation was withdrawn.",
        AuditAction.INVITATION_ACCEPTED: "A client accepted an invitation.",
        AuditAction.PORTAL_ACCESS_REMOVED: "A portal user's access to the account ended.",
        AuditAction.CONTACT_UPDATED: "A linked contact's name changed.",
        AuditAction.CONTACT_DELETED: "A linked contact was deleted.",
        AuditAction.CONTACT_ERASED: "A contact was erased on request (privacy).",
        AuditAction.CONTACT_DATA_EXPORTED: "A contact's data was exported (privacy).",
        AuditAction.ACCOUNT_ARCHIVED: "The account was archived.",
        AuditAction.ACCOUNT_UNARCHIVED: "The account was unarchived.",
        AuditAction.ACCOUNT_DELETED: "An account was deleted.",
        AuditAction.DOCUMENT_DELETED: "A document was deleted.",
        AuditAction.MAILBOX_CONNECTED: "A mailbox was connected.",
        AuditAction.MAILBOX_UPDATED: "A mailbox's settings changed.",
        AuditAction.MAILBOX_DISCONNECTED: "A mailbox was disconnected.",
        AuditAction.AUTHENTICATOR_RESET: "An owner or admin removed a person's authenticator "
        "app and ended their sessions (resetAuthenticator).",
    },
)
