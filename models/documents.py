"""Documents: files of an account, stored once per content (by SHA-256) under the files dir."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

from models.crm import Account
from models.firms import Firm, StaffMember

if TYPE_CHECKING:
    from models.mail import Attachment


class Document(Model):
    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="documents", on_delete=fields.CASCADE
    )
    firm_id: int
    account: fields.ForeignKeyRelation[Account] = fields.ForeignKeyField(
        "portico.Account", related_name="documents", on_delete=fields.CASCADE, db_index=True
    )
    account_id: int
    filename = fields.CharField(max_length=255)
    content_type = fields.CharField(max_length=127)
    size = fields.BigIntField()
    sha256 = fields.CharField(max_length=64, db_index=True)
    uploaded_by: fields.ForeignKeyNullableRelation[StaffMember] = fields.ForeignKeyField(
        "portico.StaffMember", related_name="documents", null=True, on_delete=fields.SET_NULL
    )
    uploaded_by_id: int | None
    attachment: fields.ForeignKeyNullableRelation[Attachment] = fields.ForeignKeyField(
        "portico.Attachment", related_name="documents", null=True, on_delete=fields.SET_NULL
    )
    attachment_id: int | None
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "document"
