"""GraphQL enums; the model enums are exposed as they are, so the values cannot drift."""

from __future__ import annotations

from enum import Enum

import strawberry

from models import AccountType as _AccountType
from models import InboxNotification as _InboxNotification
from models import NotificationCategory as _NotificationCategory
from models import StaffRole as _StaffRole

AccountType = strawberry.enum(_AccountType, description="The kind of client entity.")
StaffRole = strawberry.enum(_StaffRole, description="A staff member's role in the firm.")
InboxNotification = strawberry.enum(
    _InboxNotification,
    description="What a staff member is emailed about new client mail: nothing, each message "
    "at once, or one digest a day.",
)


@strawberry.enum(description="Whether an address's owner can use the account's portal.")
class PortalStatus(Enum):
    NO_ACCESS = "NO_ACCESS"
    PENDING_ACTIVATION = "PENDING_ACTIVATION"
    ACTIVE = "ACTIVE"


@strawberry.enum(description="Where an invitation stands (EXPIRED and the rest are derived).")
class InvitationStatus(Enum):
    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"


NotificationCategory = strawberry.enum(
    _NotificationCategory, description="The kinds of system notification an address may choose."
)


@strawberry.enum(description="What kind of firm email: one-off, mass mailing, or automation.")
class FirmEmailKind(Enum):
    DIRECT = "DIRECT"
    MASS = "MASS"
    AUTOMATION = "AUTOMATION"
