"""The access audit trail: every change of access, with who did it and when."""

from __future__ import annotations

from typing import Any

from models import AuditEntry, PortalUser, StaffMember
from services.shared.scope import FirmScope


async def record(
    scope: FirmScope,
    action: str,
    *,
    account_id: int | None,
    email: str | None = None,
    staff: StaffMember | None = None,
    portal_user: PortalUser | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEntry:
    return await AuditEntry.create(
        firm_id=scope.firm_id,
        account_id=account_id,
        email=email,
        staff_member=staff,
        portal_user=portal_user,
        action=action,
        before=before,
        after=after,
    )
