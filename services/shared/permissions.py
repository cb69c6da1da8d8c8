"""Who may do what (domain.md, "Staff member"). Raised errors become top-level API errors."""

from __future__ import annotations

from models import StaffMember, StaffRole
from services.shared.errors import Forbidden


def require_manage_accounts(staff: StaffMember) -> None:
    if not staff.manages_accounts:
        raise Forbidden("Changing accounts and contacts needs the manage-accounts right.")


def require_staff_admin(staff: StaffMember) -> None:
    if not staff.is_admin:
        raise Forbidden("Only owners and admins may do this.")


def require_may_touch_role(actor: StaffMember, role: StaffRole) -> None:
    """Admins manage admins and employees; only an owner creates, changes or grants OWNER."""
    if role == StaffRole.OWNER and actor.role != StaffRole.OWNER:
        raise Forbidden("Only an owner may manage owners.")


def require_inbox(staff: StaffMember) -> None:
    """Synced mail and the mailboxes behind it: owners, admins and the inbox right."""
    if not staff.uses_inbox:
        raise Forbidden("The inbox and its mailboxes need the inbox right.")
