"""Field permissions: one class per rule of services/shared/permissions.py.

Each decides on the viewer (the request's context) alone, never on the object it guards:
the compiled executor (compiled/) relies on that to check a field once for all the objects
of a level instead of once per object."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission
from strawberry.types import Info

from services.shared import permissions


class ViewerPermission(BasePermission):
    """A permission decided by the context alone (the `source` argument is never read)."""


class IsStaff(ViewerPermission):
    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        info.context.require_staff()
        return True


class ManagesAccounts(ViewerPermission):
    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        permissions.require_manage_accounts(info.context.require_staff())
        return True


class IsOwnerOrAdmin(ViewerPermission):
    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        permissions.require_staff_admin(info.context.require_staff())
        return True


class UsesInbox(ViewerPermission):
    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        permissions.require_inbox(info.context.require_staff())
        return True
