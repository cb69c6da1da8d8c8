"""The tenant (Firm), its staff, their sessions and the sign-in throttle."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.access import PortalUser
    from models.crm import Account


class StaffRole(StrEnum):
    OWNER = "OWNER"
    ADMIN = "ADMIN"
    EMPLOYEE = "EMPLOYEE"


class InboxNotification(StrEnum):
    """What a staff member is told of new client mail (besides the live subscription)."""

    OFF = "OFF"
    IMMEDIATE = "IMMEDIATE"
    DAILY_DIGEST = "DAILY_DIGEST"


class SecondFactorRequirement(StrEnum):
    """What a sign-in needs beyond the password (ordered: each asks more than the last)."""

    NONE = "NONE"
    EMAIL_CODE = "EMAIL_CODE"
    AUTHENTICATOR = "AUTHENTICATOR"


class Firm(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=200)
    slug = fields.CharField(max_length=64, unique=True)
    copy_address = fields.CharField(
        max_length=254, null=True, description="receives a copy of every email to clients"
    )
    owners_see_all_mail = fields.BooleanField(
        default=False, description="owners read private threads of personal mailboxes too"
    )
    client_second_factor = fields.CharEnumField(
        SecondFactorRequirement, max_length=16, default=SecondFactorRequirement.NONE
    )
    staff_second_factor = fields.CharEnumField(
        SecondFactorRequirement, max_length=16, default=SecondFactorRequirement.NONE
    )
    second_factor_from = fields.DatetimeField(
        null=True, description="the firm's requirements hold from here (null at once)"
    )
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "firm"


class StaffMember(Model):
    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="staff", on_delete=fields.CASCADE
    )
    firm_id: int
    email = fields.CharField(max_length=254)
    email_normalized = fields.CharField(max_length=254)
    name = fields.CharField(max_length=200)
    role = fields.CharEnumField(StaffRole, max_length=16, default=StaffRole.EMPLOYEE)
    can_manage_accounts = fields.BooleanField(default=False)
    can_use_inbox = fields.BooleanField(default=False)
    active = fields.BooleanField(default=True)
    password_hash = fields.CharField(max_length=255, null=True)
    inbox_notification = fields.CharEnumField(
        InboxNotification, max_length=16, default=InboxNotification.OFF
    )
    inbox_digest_through = fields.DatetimeField(
        null=True, description="the daily digest has covered mail synced up to here"
    )
    second_factor = fields.CharEnumField(
        SecondFactorRequirement,
        max_length=16,
        default=SecondFactorRequirement.NONE,
        description="this member's own requirement (the stricter of it and the firm's holds)",
    )
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "staff_member"
        unique_together = (("firm", "email_normalized"),)

    @property
    def is_admin(self) -> bool:
        return self.role in (StaffRole.OWNER, StaffRole.ADMIN)

    @property
    def manages_accounts(self) -> bool:
        return self.is_admin or self.can_manage_accounts

    @property
    def uses_inbox(self) -> bool:
        return self.is_admin or self.can_use_inbox


class Session(Model):
    """A signed-in staff member or client. Only the SHA-256 of the token is stored."""

    id = fields.IntField(primary_key=True)
    token_hash = fields.CharField(max_length=64, unique=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="sessions", on_delete=fields.CASCADE
    )
    firm_id: int
    staff_member: fields.ForeignKeyNullableRelation[StaffMember] = fields.ForeignKeyField(
        "portico.StaffMember",
        related_name="sessions",
        null=True,
        on_delete=fields.CASCADE,
        db_index=True,
    )
    staff_member_id: int | None
    portal_user: fields.ForeignKeyNullableRelation[PortalUser] = fields.ForeignKeyField(
        "portico.PortalUser",
        related_name="sessions",
        null=True,
        on_delete=fields.CASCADE,
        db_index=True,
    )
    portal_user_id: int | None
    # A client's chosen account (null until chosen when several) and the dismissed notice.
    current_account: fields.ForeignKeyNullableRelation[Account] = fields.ForeignKeyField(
        "portico.Account", related_name="+", null=True, on_delete=fields.SET_NULL
    )
    current_account_id: int | None
    notice_dismissed = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField()
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "session"


class SignInThrottle(Model):
    """Failed sign-ins per (firm, email), known or not, so throttling reveals nothing."""

    key = fields.CharField(max_length=64, primary_key=True)
    failures = fields.IntField(default=0)
    locked_until = fields.DatetimeField(null=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "signin_throttle"


class PasswordLink(Model):
    """A single-use link that lets a new staff member set their first password."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="password_links", on_delete=fields.CASCADE
    )
    firm_id: int
    staff_member: fields.ForeignKeyRelation[StaffMember] = fields.ForeignKeyField(
        "portico.StaffMember", related_name="password_links", on_delete=fields.CASCADE
    )
    staff_member_id: int
    token_hash = fields.CharField(max_length=64, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "password_link"
