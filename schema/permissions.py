"""Field permissions: one class per rule of services/shared/permissions.py."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission
from strawberry.types import Info

from services.shared import permissions


class IsStaff(BasePermission):
    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        info.context.require_staff()
        return True


class ManagesAccounts(BasePermission):
    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        permissions.require_manage_accounts(info.context.require_staff())
        return True


class IsOwnerOrAdmin(BasePermission):
    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        permissions.require_staff_admin(info.context.require_staff())
        return True


class UsesInbox(BasePermission):
    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        permissions.require_inbox(info.context.require_staff())
        return True
