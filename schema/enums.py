"""GraphQL enums; the model enums are exposed as they are, so the values cannot drift."""

from __future__ import annotations

import strawberry

from models import AccountType as _AccountType
from models import StaffRole as _StaffRole

AccountType = strawberry.enum(_AccountType, description="The kind of client entity.")
StaffRole = strawberry.enum(_StaffRole, description="A staff member's role in the firm.")
