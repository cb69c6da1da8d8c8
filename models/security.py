"""Two-factor sign-in: pending challenges, authenticators (TOTP) with their recovery codes,
and the devices a person has signed in from. Each row belongs to one staff member or one
portal user (exactly one of the two foreign keys is set)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.access import PortalUser
    from models.firms import Firm, StaffMember


def _firm(related: str) -> fields.ForeignKeyRelation[Firm]:
    return fields.ForeignKeyField("portico.Firm", related_name=related, on_delete=fields.CASCADE)


def _staff(related: str) -> fields.ForeignKeyNullableRelation[StaffMember]:
    return fields.ForeignKeyField(
        "portico.StaffMember",
        related_name=related,
        null=True,
        on_delete=fields.CASCADE,
        db_index=True,  # every sign-in asks for the person's rows
    )


def _client(related: str) -> fields.ForeignKeyNullableRelation[PortalUser]:
    return fields.ForeignKeyField(
        "portico.PortalUser",
        related_name=related,
        null=True,
        on_delete=fields.CASCADE,
        db_index=True,  # every sign-in asks for the person's rows
    )


class SecondFactorChallenge(Model):
    """A password accepted, a second factor pending. Only hashes of its id and code stored."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = _firm("second_factor_challenges")
    firm_id: int
    staff_member: fields.ForeignKeyNullableRelation[StaffMember] = _staff(
        "second_factor_challenges"
    )
    staff_member_id: int | None
    portal_user: fields.ForeignKeyNullableRelation[PortalUser] = _client("second_factor_challenges")
    portal_user_id: int | None
    token_hash = fields.CharField(max_length=64, unique=True)
    code_hash = fields.CharField(
        max_length=64, null=True, description="SHA-256 of the challenge id and the mailed code"
    )
    methods = fields.CharField(max_length=64, description="comma-separated SecondFactorMethod")
    tries = fields.IntField(default=0)
    throttle_key = fields.CharField(max_length=64, description="the sign-in throttle row")
    current_account_id = fields.IntField(null=True, description="where a client lands")
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "second_factor_challenge"


class Authenticator(Model):
    """A person's TOTP secret (encrypted), pending until a first code confirms it."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = _firm("authenticators")
    firm_id: int
    staff_member: fields.ForeignKeyNullableRelation[StaffMember] = _staff("authenticators")
    staff_member_id: int | None
    portal_user: fields.ForeignKeyNullableRelation[PortalUser] = _client("authenticators")
    portal_user_id: int | None
    secret_encrypted = fields.TextField()
    confirmed_at = fields.DatetimeField(null=True)
    last_step = fields.BigIntField(default=0, description="the last TOTP step used (no replay)")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "authenticator"


class RecoveryCode(Model):
    """One single-use recovery code of an authenticator (only its SHA-256 stored)."""

    id = fields.IntField(primary_key=True)
    authenticator: fields.ForeignKeyRelation[Authenticator] = fields.ForeignKeyField(
        "portico.Authenticator", related_name="recovery_codes", on_delete=fields.CASCADE
    )
    authenticator_id: int
    code_hash = fields.CharField(max_length=64)
    used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "recovery_code"
        indexes = (("authenticator_id", "code_hash"),)


class KnownDevice(Model):
    """A browser or script a person has signed in from: only the SHA-256 of its token."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = _firm("known_devices")
    firm_id: int
    staff_member: fields.ForeignKeyNullableRelation[StaffMember] = _staff("known_devices")
    staff_member_id: int | None
    portal_user: fields.ForeignKeyNullableRelation[PortalUser] = _client("known_devices")
    portal_user_id: int | None
    token_hash = fields.CharField(max_length=64, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    last_seen_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "known_device"
