"""Portal access: invitations, the clients' portal users, their access to accounts, and the
audit trail of every change of access."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

from models.crm import Account, AccountEmail
from models.firms import Firm, StaffMember


class PortalUser(Model):
    """A client's sign-in, one per address (compared case-insensitively) per firm."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="portal_users", on_delete=fields.CASCADE
    )
    firm_id: int
    email = fields.CharField(max_length=254)
    email_normalized = fields.CharField(max_length=254)
    password_hash = fields.CharField(max_length=255)
    activated_at = fields.DatetimeField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "portal_user"
        unique_together = (("firm", "email_normalized"),)


class PortalAccess(Model):
    """A portal user may enter an account. The one source of truth for client access."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="portal_accesses", on_delete=fields.CASCADE
    )
    firm_id: int
    account: fields.ForeignKeyRelation[Account] = fields.ForeignKeyField(
        "portico.Account", related_name="portal_accesses", on_delete=fields.CASCADE
    )
    account_id: int
    portal_user: fields.ForeignKeyRelation[PortalUser] = fields.ForeignKeyField(
        "portico.PortalUser", related_name="accesses", on_delete=fields.CASCADE, db_index=True
    )
    portal_user_id: int
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "portal_access"
        unique_together = (("account", "portal_user"),)


class Invitation(Model):
    """A single-use link to activate LOGIN for one address in one account.

    Its status is derived: accepted_at, revoked_at, then expires_at decide it.
    """

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="invitations", on_delete=fields.CASCADE
    )
    firm_id: int
    account: fields.ForeignKeyRelation[Account] = fields.ForeignKeyField(
        "portico.Account", related_name="invitations", on_delete=fields.CASCADE
    )
    account_id: int
    account_email: fields.ForeignKeyNullableRelation[AccountEmail] = fields.ForeignKeyField(
        "portico.AccountEmail",
        related_name="invitations",
        null=True,
        on_delete=fields.SET_NULL,
        db_index=True,
    )
    account_email_id: int | None
    email = fields.CharField(max_length=254, description="the address it was sent to")
    email_normalized = fields.CharField(max_length=254)
    token_hash = fields.CharField(max_length=64, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    sent_at = fields.DatetimeField(null=True)
    expires_at = fields.DatetimeField()
    accepted_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "invitation"
        indexes = (("account_id", "email_normalized"),)


class AuditEntry(Model):
    """Who changed whose access, when, from what to what."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="audit_entries", on_delete=fields.CASCADE
    )
    firm_id: int
    account: fields.ForeignKeyNullableRelation[Account] = fields.ForeignKeyField(
        "portico.Account",
        related_name="audit_entries",
        null=True,
        on_delete=fields.CASCADE,
        db_index=True,
    )
    account_id: int | None
    staff_member: fields.ForeignKeyNullableRelation[StaffMember] = fields.ForeignKeyField(
        "portico.StaffMember", related_name="audit_entries", null=True, on_delete=fields.SET_NULL
    )
    staff_member_id: int | None
    portal_user: fields.ForeignKeyNullableRelation[PortalUser] = fields.ForeignKeyField(
        "portico.PortalUser", related_name="audit_entries", null=True, on_delete=fields.SET_NULL
    )
    portal_user_id: int | None
    action = fields.CharField(max_length=64)
    email = fields.CharField(max_length=254, null=True, description="the address concerned")
    before = fields.JSONField(null=True)
    after = fields.JSONField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "audit_entry"
