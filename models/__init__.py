"""Tortoise models, one module per domain; migrations/ holds Tortoise's own migrations."""

from models.access import AuditEntry, Invitation, PortalAccess, PortalUser
from models.crm import (
    Account,
    AccountContact,
    AccountEmail,
    AccountType,
    Contact,
    EmailAddress,
    NotificationCategory,
)
from models.documents import Document
from models.files import FileChunk, StoredFile
from models.firms import (
    Firm,
    InboxNotification,
    PasswordLink,
    SecondFactorRequirement,
    Session,
    SignInThrottle,
    StaffMember,
    StaffRole,
)
from models.mail import (
    Attachment,
    HistoryImport,
    HistoryStatus,
    Mailbox,
    MailboxFolder,
    MailboxSkip,
    MailboxVisibility,
    Message,
    MessageAccount,
    SharedThread,
    SyncStatus,
)
from models.outbox import DeliveryStatus, Mailing, OutboundEmail
from models.security import Authenticator, KnownDevice, RecoveryCode, SecondFactorChallenge
from models.webhooks import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)

# Every primary key is an IntField (32-bit on PostgreSQL): a number beyond it names no row,
# and must not reach a query, which PostgreSQL would refuse.
MAX_PK = 2**31 - 1

__all__ = [
    "MAX_PK",
    "Account",
    "AccountContact",
    "AccountEmail",
    "AccountType",
    "Attachment",
    "AuditEntry",
    "Authenticator",
    "Contact",
    "DeliveryStatus",
    "Document",
    "EmailAddress",
    "FileChunk",
    "Firm",
    "HistoryImport",
    "HistoryStatus",
    "InboxNotification",
    "Invitation",
    "KnownDevice",
    "Mailbox",
    "MailboxFolder",
    "MailboxSkip",
    "MailboxVisibility",
    "Mailing",
    "Message",
    "MessageAccount",
    "NotificationCategory",
    "OutboundEmail",
    "PasswordLink",
    "PortalAccess",
    "PortalUser",
    "RecoveryCode",
    "SecondFactorChallenge",
    "SecondFactorRequirement",
    "Session",
    "SharedThread",
    "SignInThrottle",
    "StaffMember",
    "StaffRole",
    "StoredFile",
    "SyncStatus",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookDeliveryStatus",
    "WebhookEndpoint",
]
